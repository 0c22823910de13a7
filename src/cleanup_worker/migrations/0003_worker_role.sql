-- The least-privilege role the worker runs as (docs/database-role.md). NOLOGIN:
-- operators grant it to a login user of their own, so no password lives here.
-- Roles are cluster-wide while the migration lock is per database, so two
-- databases migrating at once may race here; either outcome is fine.
DO $$
BEGIN
    CREATE ROLE cleanup_worker NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO cleanup_worker;

-- Keys: read, and revoke. Never create, delete, or touch anything but the revocation columns.
REVOKE ALL ON api_keys FROM cleanup_worker;
GRANT SELECT ON api_keys TO cleanup_worker;
GRANT UPDATE (revoked_at, revocation_reason, revoked_by) ON api_keys TO cleanup_worker;

-- Its own tables, and the membership state it maintains.
GRANT SELECT, INSERT, UPDATE, DELETE ON account_memberships TO cleanup_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON membership_events TO cleanup_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON membership_baselines TO cleanup_worker;
GRANT SELECT ON schema_migrations TO cleanup_worker;
