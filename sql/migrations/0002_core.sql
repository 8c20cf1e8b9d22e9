-- depends: 0001_schemas
-- Canonical model of appointments and the organisation, shared by every source (Medialog, FHIR, CSV).
-- Every entity is keyed by (source, <entity>_id): ids are the source's own ids as text, so two
-- sources never collide. Times of appointments are the clinic's local wall-clock time
-- (timestamp without time zone, in CLINICFLOW_TIMEZONE), as the MIS keeps them.
-- Nothing here identifies a patient: patient_key is a keyed HMAC of the source's patient id.

CREATE TABLE core.branch (
    source        text NOT NULL,
    branch_id     text NOT NULL,
    name          text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, branch_id)
);
COMMENT ON TABLE core.branch IS 'Clinic branch (Medialog FM_ORG with ORG_TYPE=I; Vitória neighbourhood)';

CREATE TABLE core.department (
    source         text NOT NULL,
    department_id  text NOT NULL,
    name           text,
    branch_id      text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, department_id)
);
COMMENT ON TABLE core.department IS 'Department (Medialog FM_DEP)';

CREATE TABLE core.practitioner (
    source           text NOT NULL,
    practitioner_id  text NOT NULL,
    display_name     text,
    specialty        text,
    department_id    text,
    archived         boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, practitioner_id)
);
COMMENT ON TABLE core.practitioner IS 'Doctor or other practitioner (Medialog MEDECINS with TYPE=0; FHIR Practitioner)';

CREATE TABLE core.service (
    source                text NOT NULL,
    service_id            text NOT NULL,
    code                  text,
    name                  text,
    default_duration_min  integer,
    no_overbook           boolean NOT NULL DEFAULT false,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, service_id)
);
COMMENT ON TABLE core.service IS 'Visit type or service (Medialog PL_EXAM; FHIR serviceType)';

CREATE TABLE core.resource (
    source           text NOT NULL,
    resource_id      text NOT NULL,
    name             text,
    kind             text NOT NULL DEFAULT 'practitioner' CHECK (kind IN ('practitioner', 'room', 'device', 'other')),
    practitioner_id  text,
    department_id    text,
    branch_id        text,
    no_overbook      boolean NOT NULL DEFAULT false,
    archived         boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, resource_id)
);
COMMENT ON TABLE core.resource IS 'Bookable schedule: a doctor, room or device at a branch (Medialog PL_SUBJ; FHIR Schedule)';

CREATE TABLE core.patient (
    source        text NOT NULL,
    patient_key   text NOT NULL,
    sex           text CHECK (sex IN ('F', 'M')),
    birth_year    integer CHECK (birth_year BETWEEN 1880 AND 2100),
    flags         jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, patient_key)
);
COMMENT ON TABLE core.patient IS 'Patient, pseudonymous: HMAC key, sex, birth year, flags; nothing that identifies a person';

CREATE TABLE core.appointment (
    source               text NOT NULL,
    appointment_id       text NOT NULL,
    patient_key          text,
    resource_id          text,
    practitioner_id      text,
    department_id        text,
    branch_id            text,
    service_id           text,
    start_at             timestamp NOT NULL,
    duration_min         integer,
    booked_at            timestamp,
    channel              text,
    confirmed            boolean,
    reminder_sent        boolean,
    rescheduled_from_id  text,
    raw_status           jsonb NOT NULL DEFAULT '{}'::jsonb,
    status               text NOT NULL CHECK (status IN (
                             'booked', 'arrived', 'fulfilled', 'noshow', 'cancelled_by_patient',
                             'cancelled_by_clinic', 'cancelled_unknown', 'rescheduled', 'deleted')),
    status_changed_at    timestamp,
    source_updated_at    timestamp,
    as_of                date NOT NULL,
    load_batch_id        bigint NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, appointment_id)
);
CREATE INDEX appointment_start ON core.appointment (start_at);
CREATE INDEX appointment_patient_start ON core.appointment (source, patient_key, start_at);
CREATE INDEX appointment_resource_start ON core.appointment (source, resource_id, start_at);
COMMENT ON TABLE core.appointment IS
    'One booked appointment in canonical form. status is as known at the as_of date of the load: '
    'outcomes of appointments on or after as_of are stored as booked (unknown)';
COMMENT ON COLUMN core.appointment.start_at IS 'Start, clinic local time';
COMMENT ON COLUMN core.appointment.booked_at IS 'When the booking was made, clinic local time';
COMMENT ON COLUMN core.appointment.raw_status IS 'The source''s own status fields, as extracted';
COMMENT ON COLUMN core.appointment.as_of IS 'As-of date of the run that wrote this row';

CREATE TABLE core.slot (
    source        text NOT NULL,
    resource_id   text NOT NULL,
    start_at      timestamp NOT NULL,
    duration_min  integer NOT NULL CHECK (duration_min BETWEEN 1 AND 480),
    no_overbook   boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, resource_id, start_at)
);
COMMENT ON TABLE core.slot IS 'Slot grid: one bookable slot of a resource (from templates, pre-generated slots or FHIR Slot)';

CREATE TABLE core.resource_day (
    source        text NOT NULL,
    resource_id   text NOT NULL,
    day           date NOT NULL,
    slots         integer NOT NULL CHECK (slots >= 0),
    slot_minutes  integer,
    work_start    time,
    work_end      time,
    on_leave      boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, resource_id, day)
);
COMMENT ON TABLE core.resource_day IS 'Capacity of a resource on a day: number of slots, hours, leave';

CREATE TABLE ops.watermark (
    source      text NOT NULL,
    stream      text NOT NULL,
    value       timestamp NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream)
);
COMMENT ON TABLE ops.watermark IS 'Incremental extraction: the highest source modification time loaded, per source and stream';

CREATE TABLE ops.load_batch (
    load_batch_id      bigserial PRIMARY KEY,
    source             text NOT NULL,
    as_of              date NOT NULL,
    status             text NOT NULL CHECK (status IN ('running', 'staged', 'loaded', 'failed')),
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    rows_extracted     bigint,
    rows_quarantined   bigint,
    rows_upserted      bigint,
    rows_deleted       bigint,
    message            text,
    details            jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX load_batch_source_as_of ON ops.load_batch (source, as_of);
COMMENT ON TABLE ops.load_batch IS 'One extraction-and-load of a source for an as-of date: counts, status, validation summary';
