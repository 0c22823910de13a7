-- The outbox's arrays are stored out of line without compression. pglz compressing them took
-- 7 of the 19 ms that writing the outbox rows of 1 600 removals added to R1, inside the
-- revocation's transaction; the rows live for as long as the relay takes to publish them, so
-- the space saved buys nothing (docs/performance.md). Affects rows written from now on.
ALTER TABLE revocation_outbox_batches
    ALTER COLUMN key_ids SET STORAGE EXTERNAL,
    ALTER COLUMN account_ids SET STORAGE EXTERNAL,
    ALTER COLUMN iam_ids SET STORAGE EXTERNAL,
    ALTER COLUMN reasons SET STORAGE EXTERNAL,
    ALTER COLUMN revoked_ats SET STORAGE EXTERNAL,
    ALTER COLUMN revoked_bys SET STORAGE EXTERNAL,
    ALTER COLUMN event_times SET STORAGE EXTERNAL;
