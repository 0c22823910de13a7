-- An existing key table of another shape ("Key table mapping", docs/design.md;
-- docs/key-table.md): its ids may be bigint, text or uuid, so our tables hold a key's id as
-- text (as a notice's key_id does). A uuid converts to the same text it always printed as.
ALTER TABLE late_key_candidates ALTER COLUMN key_id TYPE text USING key_id::text;
ALTER TABLE revocation_outbox ALTER COLUMN key_id TYPE text USING key_id::text;
ALTER TABLE backfill_runs ALTER COLUMN checkpoint_key_id TYPE text USING checkpoint_key_id::text;

-- When, why and by whom a key was revoked, for a key table without columns for them: written
-- by the revoking statement itself (a CTE of its RETURNING), so in the same transaction; read
-- by `explain`, `report` and the outbox. Our own api_keys has the columns: nothing is written
-- here for it.
CREATE TABLE IF NOT EXISTS key_revocations (
    key_id     text PRIMARY KEY,
    reason     text NOT NULL,
    revoked_by text NOT NULL,
    revoked_at timestamptz NOT NULL
);
-- `report` reads one period of revocations.
CREATE INDEX IF NOT EXISTS key_revocations_by_revoked_at ON key_revocations (revoked_at);

GRANT SELECT, INSERT ON key_revocations TO cleanup_worker;
GRANT SELECT ON key_revocations TO cleanup_operator;
