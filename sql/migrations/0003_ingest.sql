-- depends: 0002_core
-- Ingestion: staging tables (COPY targets, one UNLOGGED partition per load batch), the quarantine of
-- rows that failed validation, and the bookkeeping of a load batch (stage -> validate -> load).
--
-- Staging holds rows exactly as the loader COPYs them: already pseudonymised (patient_key, never a
-- raw patient id) and masked for the batch's as-of date, but not yet validated. Columns are loosely
-- typed (bigint where core has integer) so that out-of-range values reach validation instead of
-- failing the COPY. Each batch gets its own partition (staging.<entity>_b<batch id>), created by the
-- loader and dropped once the batch is loaded into core.

ALTER TABLE ops.load_batch DROP CONSTRAINT IF EXISTS load_batch_status_check;
ALTER TABLE ops.load_batch ADD CONSTRAINT load_batch_status_check
    CHECK (status IN ('running', 'staged', 'validated', 'loaded', 'failed'));
ALTER TABLE ops.load_batch
    ADD COLUMN run_id            text,
    ADD COLUMN full_snapshot     boolean NOT NULL DEFAULT false,
    ADD COLUMN reconcile_from    date,
    ADD COLUMN reconcile_to      date,
    ADD COLUMN extract_watermarks jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN staged_at         timestamptz,
    ADD COLUMN validated_at      timestamptz,
    ADD COLUMN loaded_at         timestamptz,
    ADD COLUMN data_docs         text;
CREATE INDEX load_batch_source_status ON ops.load_batch (source, status, load_batch_id);
COMMENT ON COLUMN ops.load_batch.run_id IS 'Airflow run id (or cli-<timestamp>) that created the batch';
COMMENT ON COLUMN ops.load_batch.extract_watermarks IS 'Watermarks the connector reported; saved to ops.watermark when the batch is loaded';
COMMENT ON COLUMN ops.load_batch.data_docs IS 'Path of the GX Data Docs page of the batch''s validation';

CREATE TABLE staging.appointment (
    load_batch_id        bigint NOT NULL,
    row_no               bigint NOT NULL,
    appointment_id       text,
    patient_key          text,
    resource_id          text,
    practitioner_id      text,
    department_id        text,
    branch_id            text,
    service_id           text,
    start_at             timestamp,
    duration_min         bigint,
    booked_at            timestamp,
    channel              text,
    confirmed            boolean,
    reminder_sent        boolean,
    rescheduled_from_id  text,
    raw_status           jsonb,
    status               text,
    status_changed_at    timestamp,
    source_updated_at    timestamp,
    outcome_masked       boolean NOT NULL DEFAULT false,
    row_problems         text
) PARTITION BY LIST (load_batch_id);
COMMENT ON TABLE staging.appointment IS 'Appointments of a load batch as COPYed (pseudonymised, as-of masked), before validation';
COMMENT ON COLUMN staging.appointment.outcome_masked IS 'The source''s status was an outcome or change not yet known at the as-of date; stored as booked';
COMMENT ON COLUMN staging.appointment.row_problems IS 'What the connector could not parse in this row (the row is quarantined)';

CREATE TABLE staging.patient (
    load_batch_id  bigint NOT NULL,
    row_no         bigint NOT NULL,
    patient_key    text,
    sex            text,
    birth_year     bigint,
    flags          jsonb,
    row_problems   text
) PARTITION BY LIST (load_batch_id);

CREATE TABLE staging.branch (
    load_batch_id  bigint NOT NULL,
    row_no         bigint NOT NULL,
    branch_id      text,
    name           text
) PARTITION BY LIST (load_batch_id);

CREATE TABLE staging.department (
    load_batch_id  bigint NOT NULL,
    row_no         bigint NOT NULL,
    department_id  text,
    name           text,
    branch_id      text
) PARTITION BY LIST (load_batch_id);

CREATE TABLE staging.practitioner (
    load_batch_id    bigint NOT NULL,
    row_no           bigint NOT NULL,
    practitioner_id  text,
    display_name     text,
    specialty        text,
    department_id    text,
    archived         boolean
) PARTITION BY LIST (load_batch_id);

CREATE TABLE staging.service (
    load_batch_id         bigint NOT NULL,
    row_no                bigint NOT NULL,
    service_id            text,
    code                  text,
    name                  text,
    default_duration_min  bigint,
    no_overbook           boolean
) PARTITION BY LIST (load_batch_id);

CREATE TABLE staging.resource (
    load_batch_id    bigint NOT NULL,
    row_no           bigint NOT NULL,
    resource_id      text,
    name             text,
    kind             text,
    practitioner_id  text,
    department_id    text,
    branch_id        text,
    no_overbook      boolean,
    archived         boolean
) PARTITION BY LIST (load_batch_id);

CREATE TABLE staging.slot (
    load_batch_id  bigint NOT NULL,
    row_no         bigint NOT NULL,
    resource_id    text,
    start_at       timestamp,
    duration_min   bigint,
    no_overbook    boolean
) PARTITION BY LIST (load_batch_id);

CREATE TABLE staging.resource_day (
    load_batch_id  bigint NOT NULL,
    row_no         bigint NOT NULL,
    resource_id    text,
    day            date,
    slots          bigint,
    slot_minutes   bigint,
    work_start     time,
    work_end       time,
    on_leave       boolean
) PARTITION BY LIST (load_batch_id);

CREATE TABLE staging.appointment_existing (
    load_batch_id   bigint NOT NULL,
    row_no          bigint NOT NULL,
    appointment_id  text
) PARTITION BY LIST (load_batch_id);
COMMENT ON TABLE staging.appointment_existing IS
    'Hard-delete reconciliation: every appointment id the source has now in the batch''s reconcile window';

CREATE TABLE quarantine.record (
    quarantine_id        bigserial PRIMARY KEY,
    load_batch_id        bigint NOT NULL REFERENCES ops.load_batch (load_batch_id) ON DELETE CASCADE,
    source               text NOT NULL,
    as_of                date NOT NULL,
    run_id               text,
    entity               text NOT NULL,
    record_id            text,
    row_no               bigint NOT NULL,
    failed_expectations  text[] NOT NULL,
    problems             text,
    record               jsonb NOT NULL,
    quarantined_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (load_batch_id, entity, row_no)
);
CREATE INDEX record_source_entity_id ON quarantine.record (source, entity, record_id);
COMMENT ON TABLE quarantine.record IS
    'Rows that failed validation and were not loaded into core: the expectations they failed and the staged '
    '(pseudonymised) record, per load batch';
COMMENT ON COLUMN quarantine.record.failed_expectations IS 'Names of the failed expectations (see docs/ingestion.md)';
COMMENT ON COLUMN quarantine.record.record IS 'The row as staged: pseudonymised, never a raw patient id or name';

CREATE VIEW quarantine.current AS
SELECT r.*
FROM quarantine.record r
JOIN (
    SELECT source, max(load_batch_id) AS load_batch_id
    FROM ops.load_batch WHERE status = 'loaded' GROUP BY source
) latest USING (source, load_batch_id);
COMMENT ON VIEW quarantine.current IS 'Quarantined rows of the latest loaded batch of each source';
