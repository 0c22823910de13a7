"""Every Prometheus metric the product exposes, in one place. Names start with `cleanup_`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter(
    "cleanup_events",
    "Membership events seen, by CloudEvent type and outcome "
    "(applied, duplicate, ignored, dead_lettered).",
    ["type", "outcome"],
    registry=REGISTRY,
)
KEYS_REVOKED = Counter(
    "cleanup_keys_revoked", "API keys revoked, by reason.", ["reason"], registry=REGISTRY
)
MEMBERSHIPS_CHANGED = Counter(
    "cleanup_memberships_changed", "account_memberships rows written.", registry=REGISTRY
)
BATCH_DURATION = Histogram(
    "cleanup_batch_duration_seconds",
    "Time to apply one batch, from fetch to offset commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "cleanup_batch_records",
    "Records in one batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=REGISTRY,
)
REVOCATION_LAG = Histogram(
    "cleanup_revocation_lag_seconds",
    "From a removal's CloudEvent time to the commit of the transaction that applied it.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "cleanup_consumer_lag",
    "Records between the committed offset and the high-water mark, per partition.",
    ["topic", "partition"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "cleanup_retries",
    "Retries scheduled after a failed attempt, by operation and error class "
    "(fed by the retry library's hook: cleanup_worker.retries).",
    ["operation", "error"],
    registry=REGISTRY,
)
PROBES = Counter(
    "cleanup_outage_probes",
    "Probes of a service found unreachable, by service and result (ok ends the outage); "
    "at most one per CLEANUP_OUTAGE_PROBE_INTERVAL_S per service and process.",
    ["service", "result"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "cleanup_dead_letters",
    "Records published to the dead-letter topic, by error class.",
    ["error"],
    registry=REGISTRY,
)
FUTURE_EVENTS = Counter(
    "cleanup_future_events",
    "Events dead-lettered because their time is further ahead of the worker's clock than "
    "CLEANUP_MAX_FUTURE_SKEW_S (a producer's clock is wrong), by CloudEvent type.",
    ["type"],
    registry=REGISTRY,
)
ISOLATED_FAILURES = Counter(
    "cleanup_isolated_failures",
    "Events that failed on their own after their batch failed (then dead-lettered).",
    registry=REGISTRY,
)
READY = Gauge(
    "cleanup_ready", "1 when partitions are assigned and the database answers.", registry=REGISTRY
)
BACKFILL_SCANNED = Counter(
    "cleanup_backfill_keys_scanned", "Keys the backfill examined.", registry=REGISTRY
)
BACKFILL_REVOKED = Counter(
    "cleanup_backfill_keys_revoked", "Keys the backfill revoked.", registry=REGISTRY
)
NOTICES_PUBLISHED = Counter(
    "cleanup_notices_published",
    "Revocation notices the broker acknowledged (at least once per revoked key).",
    registry=REGISTRY,
)
NOTICE_LAG = Histogram(
    "cleanup_notice_lag_seconds",
    "From the removal's CloudEvent time (the revocation time when no event asked for it) "
    "to the broker's acknowledgement of the key's revocation notice.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "cleanup_outbox_backlog",
    "Revocation notices waiting in the outbox (all replicas' rows).",
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "cleanup_outbox_oldest_age_seconds",
    "Age of the oldest notice waiting in the outbox (0 when empty).",
    registry=REGISTRY,
)
RELAY_UP = Gauge(
    "cleanup_relay_up",
    "1 while the notice relay's last attempt succeeded, 0 while it retries.",
    registry=REGISTRY,
)
LATE_KEYS_REVOKED = Counter(
    "cleanup_late_keys_revoked",
    "Keys the late-key sweep revoked, by rule: r1_recheck (reason member_removed) or "
    "r6_late_key (reason orphaned). Also counted in cleanup_keys_revoked.",
    ["rule"],
    registry=REGISTRY,
)
SWEEP_DURATION = Histogram(
    "cleanup_late_key_sweep_duration_seconds",
    "Time of one late-key sweep (R1 re-check and R6), including R6's question to the brokers.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
SWEEP_BEHIND = Gauge(
    "cleanup_late_key_sweep_behind_seconds",
    "Age of the sweep's window start: keys created before it have had their last look.",
    registry=REGISTRY,
)
LATE_KEYS_WAITING = Gauge(
    "cleanup_late_keys_waiting",
    "Late keys (R6) past their settle delay that wait because the consumer group lags.",
    registry=REGISTRY,
)
LATE_KEYS_BLOCKED = Gauge(
    "cleanup_late_keys_blocked_seconds",
    "How long R6 has been waiting for the consumer group to catch up (0: not waiting).",
    registry=REGISTRY,
)
LATE_KEY_SETTLE = Gauge(
    "cleanup_late_key_settle_seconds",
    "CLEANUP_LATE_KEY_SETTLE_S as configured (the alert compares the wait with it).",
    registry=REGISTRY,
)
LIVE_KEYS_OF_REMOVED_MEMBERS = Gauge(
    "cleanup_live_keys_of_removed_members",
    "Live keys whose owner's membership is removed, at the last assessment (must be 0; R6's "
    "keys within their settle delay count here for that long). 0 on replicas that do not watch.",
    registry=REGISTRY,
)
INVARIANT_ASSESSED = Gauge(
    "cleanup_invariant_assessed_timestamp_seconds",
    "When this replica last assessed the invariant (0: it does not watch).",
    registry=REGISTRY,
)
INVARIANT_DURATION = Gauge(
    "cleanup_invariant_assessment_seconds",
    "How long the last assessment of the invariant took (one read of every live key).",
    registry=REGISTRY,
)
