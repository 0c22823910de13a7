-- The outbox, one row per revoking statement ("The outbox", docs/design.md;
-- docs/revocations.md): the notices of the keys one statement revoked, as parallel arrays
-- (at most 500 a row), written in the same transaction as the revocation and deleted by the
-- relay once the broker acknowledged every notice of the row. A row per key cost PostgreSQL a
-- heap tuple and an index entry per key to insert and as many to delete, and 290 bytes of WAL
-- a key beside the revocation's own (docs/performance.md).
CREATE TABLE IF NOT EXISTS revocation_outbox_batches (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- How many notices the row holds, so that the relay's claim and the backlog gauge need
    -- not read (detoast) the arrays of rows they only count.
    notices     integer       NOT NULL,
    key_ids     text[]        NOT NULL,
    account_ids text[]        NOT NULL,
    iam_ids     text[]        NOT NULL,
    reasons     text[]        NOT NULL,
    revoked_ats timestamptz[] NOT NULL,
    revoked_bys text[]        NOT NULL,
    -- When each removal happened (its CloudEvent time), for the notice lag; the revocation
    -- time for revocations no event asked for (the backfill).
    event_times timestamptz[] NOT NULL,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT one_notice_per_element CHECK (
        notices BETWEEN 1 AND 500
        AND cardinality(key_ids) = notices
        AND cardinality(account_ids) = cardinality(key_ids)
        AND cardinality(iam_ids) = cardinality(key_ids)
        AND cardinality(reasons) = cardinality(key_ids)
        AND cardinality(revoked_ats) = cardinality(key_ids)
        AND cardinality(revoked_bys) = cardinality(key_ids)
        AND cardinality(event_times) = cardinality(key_ids)
    )
);

GRANT SELECT, INSERT, DELETE ON revocation_outbox_batches TO cleanup_worker;
GRANT SELECT ON revocation_outbox_batches TO cleanup_operator;

-- revocation_outbox (0009), one row per key, is no longer written by this version. Replicas of
-- the previous version still write it during a rolling upgrade, so it stays: the relay moves
-- its rows into revocation_outbox_batches (outbox.py, `fold_single_rows`), and it can be
-- dropped once every replica runs this version and it is empty (docs/revocations.md).
