-- depends: 0021_reporting_views
-- The read-only role of BI tools (issue 5): clinicflow_bi (NOLOGIN) may read the reporting schema and
-- nothing else. Give a BI tool a login user that is a member of it:
--     CREATE ROLE metabase LOGIN PASSWORD '…' IN ROLE clinicflow_bi;
-- (or `clinicflow reporting bi-user NAME`). The reporting views read core with their owner's rights, so
-- the role needs no access to core, staging, features or ml; it has none, and it may not write.
-- Like 0030_roles: the cluster-wide role is created only when missing, and skipped with a WARNING when
-- the migrating user may not create roles (then a superuser creates it and re-runs this file).
-- Default privileges cover reporting tables and views created later by the same (migrating) user.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clinicflow_bi') THEN
        BEGIN
            CREATE ROLE clinicflow_bi NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created concurrently by another database's migration
            WHEN insufficient_privilege THEN
                RAISE WARNING 'role clinicflow_bi does not exist and % may not create roles: ask a superuser to '
                    'run CREATE ROLE clinicflow_bi NOLOGIN, then re-run sql/migrations/0022_bi_role.sql', current_user;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clinicflow_bi') THEN
        GRANT USAGE ON SCHEMA reporting TO clinicflow_bi;
        GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO clinicflow_bi;
        ALTER DEFAULT PRIVILEGES IN SCHEMA reporting GRANT SELECT ON TABLES TO clinicflow_bi;
    END IF;
END
$$;
