"""The composition root: the one place that turns settings into connected objects.

Every program builds what it needs here, from the one `Settings` object: the `run` process
(consumer loop, late-key sweep, notice relay, invariant watch, probes) in `run.py`; the
one-shot programs in `operators.py`: the migration connection (`migrate`), the backfill
(`backfill`), the operator clients (`replay`, `dlq`) and the read-only answers (`explain`,
`report`, `doctor`). Nothing here runs anything for long: lifecycles live in `service/`.
What each program sets up once before it builds anything (logs, retry hooks) is startup.py's.
"""

from cleanup_worker.bootstrap.operators import (
    OperatorClients,
    backfill_job,
    doctor,
    explain,
    migrate_database,
    operator_clients,
    report,
    run_backfill,
)
from cleanup_worker.bootstrap.run import (
    KAFKA_REQUEST_TIMEOUT_S,
    build_consumer,
    build_handler,
    run_process,
    run_worker,
)

__all__ = [
    "KAFKA_REQUEST_TIMEOUT_S",
    "OperatorClients",
    "backfill_job",
    "build_consumer",
    "build_handler",
    "doctor",
    "explain",
    "migrate_database",
    "operator_clients",
    "report",
    "run_backfill",
    "run_process",
    "run_worker",
]
