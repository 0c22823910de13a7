"""`cleanup-worker doctor`: every check of the estate the settings point at, read-only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cleanup_worker.adapters.kafka.doctor import kafka_checks
from cleanup_worker.adapters.postgres import connections as postgres
from cleanup_worker.adapters.postgres.doctor import database_checks
from cleanup_worker.adapters.postgres.doctor_key_table import key_table_checks
from cleanup_worker.adapters.postgres.sqlstate import describe
from cleanup_worker.domain.checks import Check, Outcome
from cleanup_worker.errors import CleanupError
from cleanup_worker.service.doctor.settings_view import shown
from cleanup_worker.settings import Settings

# Doctor answers, it does not wait out an outage: a database that is down is a failed row.
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Diagnosis:
    checks: list[Check]
    settings: dict[str, Any]

    @property
    def healthy(self) -> bool:
        return all(check.outcome is not Outcome.FAIL for check in self.checks)


async def _database(settings: Settings) -> list[Check]:
    quick = settings.model_copy(
        update={
            "database_connect_timeout_s": min(
                settings.database_connect_timeout_s, CONNECT_TIMEOUT_S
            )
        }
    )
    try:
        async with postgres.connect(quick) as conn:
            return [
                *await database_checks(conn),
                *await key_table_checks(conn, settings.key_table),
            ]
    except Exception as exc:  # noqa: BLE001 - any failure to connect is this row's answer
        detail = str(exc) if isinstance(exc, CleanupError) else describe(exc)
        return [
            Check.failed(
                "database", "connection", detail, "check CLEANUP_DATABASE_URL and the server"
            )
        ]


async def diagnose(settings: Settings) -> Diagnosis:
    checks = await _database(settings)
    if settings.kafka_bootstrap_servers:
        checks += await kafka_checks(settings)
    else:
        checks.append(
            Check.failed("kafka", "broker", "CLEANUP_KAFKA_BOOTSTRAP_SERVERS is not set", "set it")
        )
    return Diagnosis(checks, shown(settings))
