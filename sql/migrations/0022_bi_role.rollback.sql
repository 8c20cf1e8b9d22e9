-- Revokes what 0022_bi_role granted in this database. The role is cluster-wide and may be used by
-- other databases: it is dropped only when nothing in the cluster depends on it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clinicflow_bi') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA reporting REVOKE ALL ON TABLES FROM clinicflow_bi;
        REVOKE ALL ON ALL TABLES IN SCHEMA reporting FROM clinicflow_bi;
        REVOKE ALL ON SCHEMA reporting FROM clinicflow_bi;
        BEGIN
            DROP ROLE clinicflow_bi;
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            NULL;  -- still granted in another database of the cluster, or not ours to drop
        END;
    END IF;
END
$$;
