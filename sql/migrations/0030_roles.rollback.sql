-- Revokes what 0030_roles granted in this database. The roles themselves are cluster-wide and may be
-- used by other databases: they are dropped only when nothing in the cluster depends on them.
DO $$
DECLARE
    role_name text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clinicflow_writer') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA staging, core, quarantine, features, ml, reporting, ops
            REVOKE ALL ON TABLES FROM clinicflow_writer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA staging, core, quarantine, features, ml, reporting, ops
            REVOKE ALL ON SEQUENCES FROM clinicflow_writer;
        REVOKE ALL ON ALL TABLES IN SCHEMA staging, core, quarantine, features, ml, reporting, ops
            FROM clinicflow_writer;
        REVOKE ALL ON ALL SEQUENCES IN SCHEMA staging, core, quarantine, features, ml, reporting, ops
            FROM clinicflow_writer;
        REVOKE ALL ON SCHEMA staging, core, quarantine, features, ml, reporting, ops FROM clinicflow_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clinicflow_monitor') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA ops, reporting REVOKE ALL ON TABLES FROM clinicflow_monitor;
        REVOKE ALL ON ALL TABLES IN SCHEMA ops, reporting FROM clinicflow_monitor;
        REVOKE ALL ON SCHEMA ops, reporting FROM clinicflow_monitor;
    END IF;
    FOREACH role_name IN ARRAY ARRAY['clinicflow_writer', 'clinicflow_monitor'] LOOP
        BEGIN
            EXECUTE format('DROP ROLE IF EXISTS %I', role_name);
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            NULL;  -- still granted in another database of the cluster, or not ours to drop
        END;
    END LOOP;
END
$$;
