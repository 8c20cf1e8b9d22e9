-- depends: 0010_features
-- Training runs and champion decisions kept in the warehouse (issue 4), next to MLflow: BI tools and
-- the nightly DAG read them (retraining frequency, the current champion, why a challenger was refused).

CREATE TABLE ml.training_run (
    training_run_id   bigserial PRIMARY KEY,
    as_of             date        NOT NULL,
    run_key           text        NOT NULL,
    config_hash       text        NOT NULL,
    snapshot_id       text,
    feature_set_version text,
    status            text        NOT NULL CHECK (status IN ('running', 'success', 'failed', 'skipped')),
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    mlflow_run_id     text,
    model_name        text,
    model_version     text,
    algorithm         text,
    promoted          boolean,
    decision          text,
    metrics           jsonb NOT NULL DEFAULT '{}'::jsonb,
    details           jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX training_run_as_of ON ml.training_run (as_of, status);
COMMENT ON TABLE ml.training_run IS
    'One row per training: the data snapshot, the chosen algorithm, the registered version and the champion '
    'decision with its reason';
COMMENT ON COLUMN ml.training_run.decision IS 'Why the challenger was or was not promoted to champion';
