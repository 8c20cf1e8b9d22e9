-- depends: 0002_core
-- Database roles (issue 6). Group roles (NOLOGIN) that login users are made members of:
--   clinicflow_writer   writes every pipeline schema (the pipeline's runtime users; the user that runs
--                       the migrations owns the objects and needs no grant)
--   clinicflow_monitor  reads ops and reporting (Grafana's pipeline dashboard)
-- BI tools' read-only role on reporting is defined by the reporting migrations (0020-0029).
--
-- Roles are cluster-wide: they are created only when missing, and skipped with a WARNING when the
-- migrating user may not create roles (an external PostgreSQL with a restricted user). Then a
-- superuser can create them and re-run the statements of this file; every statement is idempotent.
-- docker-compose's PostgreSQL creates them in deploy/postgres/init-databases.sh before this runs.
-- Default privileges cover tables that later migrations (and per-batch staging partitions) create,
-- as long as the same user runs them.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['clinicflow_writer', 'clinicflow_monitor'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- created concurrently by another database's migration
                WHEN insufficient_privilege THEN
                    RAISE WARNING 'role % does not exist and % may not create roles: ask a superuser to run '
                        'CREATE ROLE % NOLOGIN, then re-run sql/migrations/0030_roles.sql', role_name,
                        current_user, role_name;
            END;
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clinicflow_writer') THEN
        GRANT USAGE, CREATE ON SCHEMA staging, core, quarantine, features, ml, reporting, ops TO clinicflow_writer;
        GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
            ON ALL TABLES IN SCHEMA staging, core, quarantine, features, ml, reporting, ops TO clinicflow_writer;
        GRANT USAGE, SELECT, UPDATE
            ON ALL SEQUENCES IN SCHEMA staging, core, quarantine, features, ml, reporting, ops TO clinicflow_writer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA staging, core, quarantine, features, ml, reporting, ops
            GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO clinicflow_writer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA staging, core, quarantine, features, ml, reporting, ops
            GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO clinicflow_writer;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clinicflow_monitor') THEN
        GRANT USAGE ON SCHEMA ops, reporting TO clinicflow_monitor;
        GRANT SELECT ON ALL TABLES IN SCHEMA ops, reporting TO clinicflow_monitor;
        ALTER DEFAULT PRIVILEGES IN SCHEMA ops, reporting GRANT SELECT ON TABLES TO clinicflow_monitor;
    END IF;
END
$$;
