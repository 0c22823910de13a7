-- One row per member, locked FOR UPDATE by every batch that touches the member, so that two
-- replicas never derive the same member's row (R3) from histories that miss each other's
-- events. Row locks live in the rows themselves, not in PostgreSQL's shared lock table: a
-- batch of thousands of members across many replicas cannot exhaust it (advisory locks,
-- one per member, did at a dozen concurrent batches of 2000 with the default settings).
CREATE TABLE IF NOT EXISTS member_locks (
    account_id text NOT NULL,
    iam_id     text NOT NULL,
    PRIMARY KEY (account_id, iam_id)
);

-- FOR UPDATE needs UPDATE.
GRANT SELECT, INSERT, UPDATE ON member_locks TO cleanup_worker;
