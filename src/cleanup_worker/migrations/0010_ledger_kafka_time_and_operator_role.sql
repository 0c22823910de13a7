-- What `explain` and `report` need (docs/operations.md, "Explain", "Report").

-- When the record reached Kafka: its timestamp (the broker's append time on a topic with
-- message.timestamp.type=LogAppendTime, the producer's create time otherwise). The report
-- splits a revocation's delay into the producer's part (event time -> Kafka) and the
-- worker's (Kafka -> applied). Null for rows written before this migration.
ALTER TABLE membership_events ADD COLUMN IF NOT EXISTS kafka_timestamp timestamptz;

-- The report reads one period of removals, and one period of revocations; without these it
-- reads the whole ledger and every key. On a large, busy api_keys build the second one first
-- with CREATE INDEX CONCURRENTLY (docs/database-role.md); IF NOT EXISTS then finds it.
CREATE INDEX IF NOT EXISTS membership_events_by_applied_at ON membership_events (applied_at);
CREATE INDEX IF NOT EXISTS api_keys_by_revoked_at ON api_keys (revoked_at)
    WHERE revoked_at IS NOT NULL;
-- `explain` lists every key of a member, revoked ones too (api_keys_live_by_member has only
-- the live ones).
CREATE INDEX IF NOT EXISTS api_keys_by_member ON api_keys (account_id, iam_id);

-- A read-only role for operators and auditors (`explain`, `report`, `doctor`'s database
-- checks): it reads every table of ours and every column of api_keys but the key hash.
-- NOLOGIN, as cleanup_worker: operators grant it to a login of their own.
DO $$
BEGIN
    CREATE ROLE cleanup_operator NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO cleanup_operator;
GRANT SELECT (id, account_id, iam_id, name, created_at, revoked_at, revocation_reason, revoked_by)
    ON api_keys TO cleanup_operator;
GRANT SELECT ON account_memberships, membership_events, membership_baselines, backfill_runs,
    late_key_sweep, late_key_candidates, revocation_outbox, schema_migrations
    TO cleanup_operator;
