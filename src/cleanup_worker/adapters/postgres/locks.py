"""Every PostgreSQL advisory-lock key the product takes, in one place (bigint keys).

Keys are ASCII words read as integers, so that `pg_locks` shows something recognisable and no
two of ours can collide. Other applications on the same database could in theory pick the same
number; these are unlikely choices.
"""

from __future__ import annotations

# `migrate`: session lock, so that pods starting together apply the migrations one at a time.
MIGRATION_LOCK_KEY = 0x636C65616E7570  # "cleanup"
# `backfill`: session lock held for the whole run; a second backfill exits with EXIT_REFUSED.
BACKFILL_LOCK_KEY = 0x6261636B66696C6C  # "backfill"
# `dlq redrive --execute`: session lock, one redrive at a time per database.
REDRIVE_LOCK_KEY = 0x636C65616E7571  # "cleanuq"
# The invariant watch (service/run/invariant.py): a session lock its replica holds while it
# is the one that assesses, so that replicas do not repeat each other's pass over every key.
INVARIANT_LOCK_KEY = 0x696E76617269616E  # "invarian"
