-- ClinicFlow warehouse: one schema per stage of the pipeline.
--   staging     rows as extracted, per load batch (COPY target), before validation
--   core        canonical, validated model of appointments and the organisation
--   quarantine  rows that failed validation, with the expectations they failed
--   features    point-in-time feature tables, per as-of date
--   ml          model runs, scores and evaluation artefacts kept in the warehouse
--   reporting   tables and views that BI tools read
--   ops         pipeline bookkeeping: watermarks, runs, timings
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS quarantine;
CREATE SCHEMA IF NOT EXISTS features;
CREATE SCHEMA IF NOT EXISTS ml;
CREATE SCHEMA IF NOT EXISTS reporting;
CREATE SCHEMA IF NOT EXISTS ops;

COMMENT ON SCHEMA staging IS 'Rows as extracted from a source, per load batch, before validation';
COMMENT ON SCHEMA core IS 'Canonical validated appointments, patients (pseudonymous) and organisation';
COMMENT ON SCHEMA quarantine IS 'Rows that failed validation, with the failed expectations and the raw record';
COMMENT ON SCHEMA features IS 'Point-in-time correct features per as-of date';
COMMENT ON SCHEMA ml IS 'Model scores and evaluations kept in the warehouse';
COMMENT ON SCHEMA reporting IS 'Tables and views for BI tools (Superset, Metabase, DataLens)';
COMMENT ON SCHEMA ops IS 'Pipeline bookkeeping: runs, timings, watermarks';

CREATE TABLE ops.task_run (
    task_run_id  bigserial PRIMARY KEY,
    stage        text        NOT NULL,
    as_of        date,
    run_key      text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    duration_s   double precision,
    rows         bigint,
    message      text,
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX task_run_stage_as_of ON ops.task_run (stage, as_of);
COMMENT ON TABLE ops.task_run IS 'One row per execution of a pipeline stage: status, timing, rows, message';
