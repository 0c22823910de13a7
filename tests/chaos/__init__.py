"""A randomized chaos run (issue 14, item 4), checked against the oracle.

    make chaos SEED=1234 DURATION=60          # SEED empty: a fresh one, printed first
    .venv/bin/python -m tests.chaos --seed 1234 --duration 60

Three replicas of `cleanup-worker run` (real processes, notices on) share a six-partition topic
and reach both services through Toxiproxy, while three populations of members change:

- the burst (`history.py`): a random history dated in the past, shuffled, with duplicates,
  malformed records and both content modes, over keys seeded before it;
- the legacy accounts (`history.py`): membership rows and keys from before the worker, some
  keys orphaned, cleaned up by a concurrent `backfill --execute` (resumed when it fails);
- the live members (`live.py`): real-time changes with keys created beside them, as a key
  service does: one in a transaction still open when the removal is applied (the R1
  re-check), and one after the removal (R6).

A random schedule (`faults.py`) injects one fault at a time: latency, a link down, a stalled
link, resets, a bandwidth limit (on either link), a replica SIGKILLed and restarted, replicas
added and removed (rebalances), a broker restart and a PostgreSQL restart. At the end
(`verdict.py`) every record must be consumed and committed; the revoked keys and the
membership rows must be exactly the oracle's; every malformed record must be in the
dead-letter topic; every revoked key must be announced, and no other. It prints the faults and
the exposure (removal -> revoked, -> announced) percentiles, and exits 1 on any difference.
The same seed gives the same populations and schedule (the timing, and so the interleaving,
still varies).
"""
