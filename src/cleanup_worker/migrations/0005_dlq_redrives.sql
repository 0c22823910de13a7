-- Dead letters that `cleanup-worker dlq redrive --execute` has applied, so that a second
-- redrive repeats nothing. The dead-letter topic itself is never modified; this table is
-- the only record of what left it. Keyed by where the dead letter sits; the fingerprint
-- (sha256 of its key, value and headers) tells a record apart from another one at the same
-- place after the topic was deleted and created again.
CREATE TABLE IF NOT EXISTS dlq_redrives (
    dlq_topic          text NOT NULL,
    dlq_partition      integer NOT NULL,
    dlq_offset         bigint NOT NULL,
    fingerprint        text NOT NULL,
    original_topic     text,
    original_partition integer,
    original_offset    bigint,
    event_source       text,
    event_id           text,
    outcome            text NOT NULL CHECK (outcome IN ('applied', 'duplicate')),
    redriven_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);

GRANT SELECT, INSERT, UPDATE ON dlq_redrives TO cleanup_worker;
