-- The inbox ledger: one row per applied event, keyed by its CloudEvents identity.
-- It deduplicates redeliveries and keeps the history R3 needs to stay exact
-- whatever order the events arrive in.
CREATE TABLE IF NOT EXISTS membership_events (
    source          text NOT NULL,
    event_id        text NOT NULL,
    account_id      text NOT NULL,
    iam_id          text NOT NULL,
    change          text NOT NULL CHECK (change IN ('added', 'removed')),
    event_time      timestamptz NOT NULL,
    event_type      text NOT NULL,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);

CREATE INDEX IF NOT EXISTS membership_events_by_member
    ON membership_events (account_id, iam_id);

-- A membership row that existed before the first event for it (R3: it counts as
-- an event of its own). Captured once, the first time an event touches the member.
CREATE TABLE IF NOT EXISTS membership_baselines (
    account_id   text NOT NULL,
    iam_id       text NOT NULL,
    state        text NOT NULL CHECK (state IN ('active', 'removed')),
    member_since timestamptz,
    changed_at   timestamptz NOT NULL,
    captured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, iam_id)
);
