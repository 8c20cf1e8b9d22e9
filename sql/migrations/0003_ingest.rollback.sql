DROP VIEW IF EXISTS quarantine.current;
DROP TABLE IF EXISTS quarantine.record;
DROP TABLE IF EXISTS staging.appointment_existing;
DROP TABLE IF EXISTS staging.resource_day;
DROP TABLE IF EXISTS staging.slot;
DROP TABLE IF EXISTS staging.resource;
DROP TABLE IF EXISTS staging.service;
DROP TABLE IF EXISTS staging.practitioner;
DROP TABLE IF EXISTS staging.department;
DROP TABLE IF EXISTS staging.branch;
DROP TABLE IF EXISTS staging.patient;
DROP TABLE IF EXISTS staging.appointment;
DROP INDEX IF EXISTS ops.load_batch_source_status;
ALTER TABLE ops.load_batch
    DROP COLUMN IF EXISTS run_id,
    DROP COLUMN IF EXISTS full_snapshot,
    DROP COLUMN IF EXISTS reconcile_from,
    DROP COLUMN IF EXISTS reconcile_to,
    DROP COLUMN IF EXISTS extract_watermarks,
    DROP COLUMN IF EXISTS staged_at,
    DROP COLUMN IF EXISTS validated_at,
    DROP COLUMN IF EXISTS loaded_at,
    DROP COLUMN IF EXISTS data_docs;
ALTER TABLE ops.load_batch DROP CONSTRAINT IF EXISTS load_batch_status_check;
ALTER TABLE ops.load_batch ADD CONSTRAINT load_batch_status_check
    CHECK (status IN ('running', 'staged', 'loaded', 'failed'));
