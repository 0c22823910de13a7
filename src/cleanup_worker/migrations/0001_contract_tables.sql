-- The contract tables ("Database contract", docs/design.md). IF NOT EXISTS: the worker often
-- joins a system whose api_keys and account_memberships already exist.
CREATE TABLE IF NOT EXISTS api_keys (
    id                uuid PRIMARY KEY,
    account_id        text NOT NULL,
    iam_id            text NOT NULL,
    name              text NOT NULL DEFAULT '',
    key_hash          text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    revocation_reason text,
    revoked_by        text
);

-- R1 looks up the live keys of one member created up to a time.
CREATE INDEX IF NOT EXISTS api_keys_live_by_member
    ON api_keys (account_id, iam_id, created_at)
    WHERE revoked_at IS NULL;

CREATE TABLE IF NOT EXISTS account_memberships (
    account_id   text NOT NULL,
    iam_id       text NOT NULL,
    state        text NOT NULL CHECK (state IN ('active', 'removed')),
    member_since timestamptz,
    changed_at   timestamptz NOT NULL,
    PRIMARY KEY (account_id, iam_id)
);
