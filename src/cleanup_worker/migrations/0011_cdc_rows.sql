-- The change-event input (docs/cdc.md): each source row's key -> the member its row named.
-- A delete of a row whose table is not REPLICA IDENTITY FULL carries only the row key; the
-- member comes from here (remembered from the row's insert, updates and snapshot read). Kept
-- after the delete, so a redelivered delete still resolves (and the ledger deduplicates it).
-- `position` (the source's LSN) orders the writes: a redelivered older change never
-- overwrites what a newer one said.
CREATE TABLE IF NOT EXISTS cdc_rows (
    source      text   NOT NULL,
    row_key     text   NOT NULL,
    account_id  text   NOT NULL,
    iam_id      text   NOT NULL,
    position    bigint NOT NULL,
    PRIMARY KEY (source, row_key)
);

GRANT SELECT, INSERT, UPDATE ON cdc_rows TO cleanup_worker;
