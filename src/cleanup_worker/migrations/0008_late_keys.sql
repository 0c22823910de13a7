-- The late-key sweep (docs/operations.md#late-keys): the R1 re-check and R6.

-- The sweep reads the live keys created in the last few seconds. On a large, busy api_keys
-- build it first with CREATE INDEX CONCURRENTLY (docs/database-role.md); this finds it.
CREATE INDEX IF NOT EXISTS api_keys_live_by_created_at
    ON api_keys (created_at)
    WHERE revoked_at IS NULL;

-- One row: how far the sweep has got, shared by every replica. A replica sweeps while it
-- holds this row (FOR UPDATE SKIP LOCKED), so replicas take turns instead of repeating
-- each other's work.
--
-- A key's created_at is its transaction's start, but the key appears at commit, and a
-- removal's batch may commit after the key yet have missed it. So a key is examined again
-- until every transaction that started before the key became visible has ended. "Has
-- ended" is learned from pg_locks, which any role may read: a probe notes the virtual
-- transaction ids running at `probe_at`; once none of them runs, every transaction that
-- started before `probe_at` has ended (as CREATE INDEX CONCURRENTLY waits).
--   horizon       every transaction that started before it has ended;
--   window_start  keys created before it were examined after every transaction that could
--                 have hidden them (or their removal) had ended: they need no more looks.
CREATE TABLE IF NOT EXISTS late_key_sweep (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    window_start     timestamptz NOT NULL,
    horizon          timestamptz NOT NULL,
    probe_at         timestamptz,
    probe_horizon    timestamptz,
    probe_vxids      text[],
    swept_at         timestamptz,
    -- Since when R6 has had keys due that it may not revoke yet (the group lags); null when not.
    r6_blocked_since timestamptz,
    r6_waiting       integer NOT NULL DEFAULT 0
);

-- Keys older than the worker's arrival are the backfill's (R5), not the sweep's.
INSERT INTO late_key_sweep (window_start, horizon) VALUES (now(), now())
ON CONFLICT DO NOTHING;

-- Keys that R6 may revoke once the consumer group has caught up (created after their
-- owner's latest removal, the member still removed). Rows leave when the key is revoked
-- or is no longer late (the member came back).
CREATE TABLE IF NOT EXISTS late_key_candidates (
    key_id     uuid PRIMARY KEY,
    account_id text NOT NULL,
    iam_id     text NOT NULL,
    created_at timestamptz NOT NULL,
    noted_at   timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, UPDATE ON late_key_sweep TO cleanup_worker;
GRANT SELECT, INSERT, DELETE ON late_key_candidates TO cleanup_worker;
