-- depends: 0002_core
-- Point-in-time features (issue 4).
--
-- features.appointment_features holds one row per (feature-set version, appointment, as-of date): the
-- features of an appointment as the run of that as-of date computed them, from what was known at the
-- start of the as-of day plus the appointment's own booking record. The nightly run writes a row for
-- every booked appointment of its scoring horizon; rows whose as_of is the appointment's own day are
-- the training examples (the freshest forecast a nightly run makes), and are back-filled for
-- appointments no nightly run saw (history before go-live, same-day bookings).
-- No outcome is stored here: labels are read from core at training time.

CREATE TABLE features.feature_set (
    version      text PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    description  text,
    columns      jsonb NOT NULL
);
COMMENT ON TABLE features.feature_set IS 'Feature-set versions: the feature columns, their family, type and meaning';

CREATE TABLE features.calendar_day (
    country              text    NOT NULL,
    day                  date    NOT NULL,
    is_day_off           boolean NOT NULL,
    is_public_holiday    boolean NOT NULL,
    is_shortened_day     boolean NOT NULL,
    is_working_weekend   boolean NOT NULL,
    holiday_name         text,
    days_to_holiday      integer,
    days_from_holiday    integer,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (country, day)
);
COMMENT ON TABLE features.calendar_day IS
    'Production calendar per country: non-working days, public holidays, shortened pre-holiday days, '
    'working weekend days (transfers), distance to the nearest public holiday (features/calendar.py)';

CREATE TABLE features.appointment_features (
    feature_set_version      text      NOT NULL,
    source                   text      NOT NULL,
    appointment_id           text      NOT NULL,
    as_of                    date      NOT NULL,
    start_at                 timestamp NOT NULL,
    computed_at              timestamptz NOT NULL DEFAULT now(),
    -- booking
    lead_days                integer,
    lead_hours               double precision,
    same_day_booking         boolean,
    booked_weekday           smallint,
    booked_hour              smallint,
    channel                  text,
    is_reschedule            boolean,
    reschedule_depth         smallint,
    confirmed                boolean,
    -- appointment
    appt_weekday             smallint,
    appt_hour                double precision,
    slot_index               integer,
    slot_position            double precision,
    day_slots                integer,
    duration_min             integer,
    service_id               text,
    department_id            text,
    practitioner_id          text,
    branch_id                text,
    resource_id              text,
    -- calendar
    is_day_off               boolean,
    is_public_holiday        boolean,
    is_shortened_day         boolean,
    is_working_weekend       boolean,
    days_to_holiday          integer,
    days_from_holiday        integer,
    month                    smallint,
    season                   text,
    -- patient
    age                      smallint,
    sex                      text,
    prior_appointments       integer,
    prior_attended           integer,
    prior_noshows            integer,
    prior_cancellations      integer,
    prior_reschedules        integer,
    prior_noshow_rate        double precision,
    days_since_last_visit    integer,
    days_since_last_noshow   integer,
    same_day_appointments    integer,
    patient_flags            jsonb,
    -- context
    practitioner_noshow_rate double precision,
    department_noshow_rate   double precision,
    branch_noshow_rate       double precision,
    service_noshow_rate      double precision,
    practitioner_volume      integer,
    resource_day_booked      integer,
    resource_day_fill        double precision,
    branch_day_booked        integer,
    reminder_sent            boolean,
    external                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (feature_set_version, source, appointment_id, as_of)
);
CREATE INDEX appointment_features_as_of ON features.appointment_features (feature_set_version, as_of);
CREATE INDEX appointment_features_training ON features.appointment_features (feature_set_version, start_at)
    WHERE as_of = start_at::date;
COMMENT ON TABLE features.appointment_features IS
    'Features of an appointment as of a date (point in time): from what was known at the start of as_of '
    'plus the appointment''s own booking record. Rows with as_of = start day are the training examples.';
COMMENT ON COLUMN features.appointment_features.as_of IS 'As-of date of the run that computed the row';
COMMENT ON COLUMN features.appointment_features.patient_flags IS 'Patient flags from core.patient (0/1 values)';
COMMENT ON COLUMN features.appointment_features.external IS 'Values of external providers (weather, transport), if configured';
