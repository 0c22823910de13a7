-- One row per `cleanup-worker backfill` run (docs/backfill.md): what it was asked to do,
-- how far it got, and what it did. The checkpoint and the counters of a batch are written
-- in the same transaction as that batch's revocations, so after a crash they agree with
-- api_keys exactly and `--resume` continues where the committed work ends.
CREATE TABLE IF NOT EXISTS backfill_runs (
    run_id                              uuid PRIMARY KEY,
    mode                                text NOT NULL CHECK (mode IN ('dry_run', 'execute')),
    status                              text NOT NULL CHECK (status IN (
                                            'running', 'interrupted', 'stopped', 'refused',
                                            'failed', 'completed')),
    options                             jsonb NOT NULL,
    started_at                          timestamptz NOT NULL DEFAULT now(),
    updated_at                          timestamptz NOT NULL DEFAULT now(),
    finished_at                         timestamptz,
    -- The greatest api_keys.id whose batch is committed; null before the first batch.
    checkpoint_key_id                   uuid,
    batches                             integer NOT NULL DEFAULT 0,
    keys_scanned                        bigint NOT NULL DEFAULT 0,
    keys_planned                        bigint NOT NULL DEFAULT 0,
    keys_examined                       bigint NOT NULL DEFAULT 0,
    revoked_no_membership               bigint NOT NULL DEFAULT 0,
    revoked_membership_removed          bigint NOT NULL DEFAULT 0,
    revoked_created_before_member_since bigint NOT NULL DEFAULT 0,
    detail                              text
);

CREATE INDEX IF NOT EXISTS backfill_runs_by_start ON backfill_runs (mode, started_at DESC);

GRANT SELECT, INSERT, UPDATE ON backfill_runs TO cleanup_worker;
