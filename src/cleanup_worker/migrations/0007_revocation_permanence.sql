-- R4 kept by the database itself (docs/database-role.md, "Revocations are permanent"): no
-- UPDATE may clear revoked_at, or change revoked_at, revocation_reason or revoked_by, of a
-- key that is already revoked, whoever runs it. Column privileges cannot say this: the
-- worker's UPDATE on the revocation columns allows any value, and other services and
-- superusers are not bound by the worker's role at all.
--
-- SQLSTATE CW001: class CW is not used by PostgreSQL, so the worker classifies it as neither
-- transient (retry) nor per-event (dead-letter), but as a fault that stops it.
CREATE OR REPLACE FUNCTION api_keys_revocation_is_permanent() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed text[] := ARRAY[]::text[];
BEGIN
    IF NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        changed := changed || 'revoked_at'::text;
    END IF;
    IF NEW.revocation_reason IS DISTINCT FROM OLD.revocation_reason THEN
        changed := changed || 'revocation_reason'::text;
    END IF;
    IF NEW.revoked_by IS DISTINCT FROM OLD.revoked_by THEN
        changed := changed || 'revoked_by'::text;
    END IF;
    RAISE EXCEPTION 'api key % is revoked, and a revocation is permanent (R4)', OLD.id
        USING ERRCODE = 'CW001',
              DETAIL = format('The update would change %s.', array_to_string(changed, ', ')),
              HINT = 'Issue a new key instead. Only the table owner or a superuser can bypass '
                     'this, with ALTER TABLE api_keys DISABLE TRIGGER '
                     'api_keys_revocation_is_permanent.';
END
$$;

-- AFTER, not BEFORE: it sees the row as finally written, after every BEFORE trigger another
-- service may have on api_keys. The WHEN condition keeps it cheap: a revocation of a live
-- key, or an update of a revoked key's other columns, queues no trigger event at all.
DROP TRIGGER IF EXISTS api_keys_revocation_is_permanent ON api_keys;
CREATE TRIGGER api_keys_revocation_is_permanent
    AFTER UPDATE ON api_keys
    FOR EACH ROW
    WHEN (
        OLD.revoked_at IS NOT NULL
        AND (
            NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
            OR NEW.revocation_reason IS DISTINCT FROM OLD.revocation_reason
            OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by
        )
    )
    EXECUTE FUNCTION api_keys_revocation_is_permanent();

-- ALWAYS: it fires under session_replication_role = replica too, which a superuser could
-- otherwise set to skip ordinary triggers.
ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_revocation_is_permanent;
