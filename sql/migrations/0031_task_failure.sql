-- depends: 0030_roles
-- One row per failed try of an Airflow task, written by the DAGs' failure callback
-- (dags/common/callbacks.py): what failed, when, after how long and why, in one line.
-- Operators and Grafana's pipeline dashboard read it; the Airflow task log has the same line.
CREATE TABLE IF NOT EXISTS ops.task_failure (
    failure_id     bigserial PRIMARY KEY,
    dag_id         text        NOT NULL,
    task_id        text        NOT NULL,
    map_index      integer     NOT NULL DEFAULT -1,
    run_id         text        NOT NULL,
    try_number     integer     NOT NULL,
    max_tries      integer,
    will_retry     boolean     NOT NULL,
    as_of          date,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    duration_s     double precision,
    error_type     text,
    error_message  text        NOT NULL,
    summary        text        NOT NULL,
    hostname       text,
    UNIQUE (dag_id, run_id, task_id, map_index, try_number)
);
CREATE INDEX IF NOT EXISTS task_failure_failed_at ON ops.task_failure (failed_at DESC);
COMMENT ON TABLE ops.task_failure IS
    'One row per failed try of an Airflow task: what failed, when and why (written by the DAG failure callback)';
COMMENT ON COLUMN ops.task_failure.will_retry IS 'true: Airflow retries the task; false: the task failed for good';
COMMENT ON COLUMN ops.task_failure.summary IS 'The one-line summary also written to the task log';
