-- The revocation outbox ("The outbox", docs/design.md; docs/revocations.md): one row per key
-- revoked, written in the same transaction as the revocation when CLEANUP_REVOCATIONS_TOPIC is
-- set, and deleted by the relay once the broker acknowledged the notice. A revocation that rolls back
-- leaves no row; a committed one is announced at least once.
CREATE TABLE IF NOT EXISTS revocation_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id      uuid        NOT NULL,
    account_id  text        NOT NULL,
    iam_id      text        NOT NULL,
    reason      text        NOT NULL,
    revoked_at  timestamptz NOT NULL,
    revoked_by  text        NOT NULL,
    -- When the removal happened (its CloudEvent time), for the notice lag; the revocation
    -- time for revocations no event asked for (the backfill).
    event_time  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The worker writes rows with its revocations and the relay claims, publishes, deletes them.
GRANT SELECT, INSERT, DELETE ON revocation_outbox TO cleanup_worker;
