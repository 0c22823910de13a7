"""All configuration, read once from `CLEANUP_*` environment variables (and an optional `.env`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cleanup_worker.domain.change_events import CdcMapping
from cleanup_worker.domain.events import EventTypes
from cleanup_worker.domain.key_table import KeyTableMapping, settings_problem
from cleanup_worker.errors import ConfigurationError

ENV_PREFIX = "CLEANUP_"

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    # Operators write `a,b` in a Deployment, not JSON; accept both.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """One object, built at start-up and passed down; nothing else reads the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    database_url: SecretStr = Field(description="PostgreSQL DSN (postgresql://user:pw@host/db)")
    database_pool_size: int = Field(default=5, ge=2, le=100)
    database_connect_timeout_s: float = Field(default=60.0, gt=0)
    database_statement_timeout_ms: int = Field(default=30_000, ge=100)

    kafka_bootstrap_servers: str | None = None
    kafka_topics: CommaList = Field(default_factory=lambda: ["account-membership"], min_length=1)
    kafka_group_id: str = Field(default="api-key-cleanup", min_length=1)
    dlq_topic: str = Field(default="account-membership.dlq", min_length=1)
    kafka_client_id: str = "cleanup-worker"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = None
    kafka_ssl_certfile: FilePath | None = None
    kafka_ssl_keyfile: FilePath | None = None
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted client key (kafka_ssl_keyfile)"
    )
    # On unless a broker's certificate cannot name it; off is logged at every start.
    kafka_ssl_check_hostname: bool = True
    # aiokafka's pause between reconnects, metadata refreshes and coordinator lookups while the
    # broker is unreachable (its default, 100 ms, is some 30 connection attempts a second).
    kafka_retry_backoff_ms: int = Field(default=500, ge=10, le=10_000)

    event_types_added: CommaList = Field(
        default_factory=lambda: ["account.member.added"], min_length=1
    )
    event_types_removed: CommaList = Field(
        default_factory=lambda: ["account.member.removed"], min_length=1
    )
    max_event_bytes: int = Field(default=65_536, ge=256, le=10_485_760)
    max_future_skew_s: float = Field(default=300.0, ge=0)

    # The change-event input (docs/cdc.md): Debezium change events of a membership table.
    cdc_topics: CommaList = Field(default_factory=list)
    cdc_account_column: str = Field(default="account_id", min_length=1)
    cdc_user_column: str = Field(default="iam_id", min_length=1)
    cdc_state_column: str | None = Field(default=None, min_length=1)
    cdc_removed_states: CommaList = Field(default_factory=list)
    cdc_time_column: str | None = Field(default=None, min_length=1)

    # The key table (docs/key-table.md): defaults describe our own api_keys. An optional
    # column's setting set empty means the table has no such column.
    keys_table: str | None = Field(default=None, min_length=1)
    keys_id_column: str = Field(default="id", min_length=1)
    keys_account_column: str = Field(default="account_id", min_length=1)
    keys_user_column: str = Field(default="iam_id", min_length=1)
    keys_created_column: str = Field(default="created_at", min_length=1)
    keys_revoked_at_column: str | None = "revoked_at"
    keys_state_column: str | None = None
    keys_live_states: CommaList = Field(default_factory=list)
    keys_revoked_state: str | None = None
    keys_reason_column: str | None = "revocation_reason"
    keys_revoked_by_column: str | None = "revoked_by"
    # How far the key service's clock may be off the database's when it fills the created
    # column itself: the R1 re-check and R6 look this much wider ("Key table mapping").
    keys_clock_skew_s: float = Field(default=5.0, ge=0, le=3600)

    revocations_topic: str | None = Field(default=None, min_length=1)
    revocation_event_type: str = Field(default="api_key.revoked", min_length=1)
    revocation_event_source: str = Field(default="/cleanup-worker", min_length=1)
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)

    batch_max_records: int = Field(default=2000, ge=1, le=100_000)
    batch_wait_ms: int = Field(default=100, ge=0, le=60_000)
    batch_gather_ms: int = Field(default=5, ge=0, le=1_000)
    # Unset: one fewer than the pool (`in_flight`). Four batches side by side kept the database
    # busy where three left it idle between a batch's round trips (docs/performance.md).
    batches_in_flight: int | None = Field(default=None, ge=1, le=16)
    shutdown_grace_s: float = Field(default=25.0, gt=0)
    rebalance_drain_s: float = Field(default=10.0, gt=0)
    liveness_timeout_s: float = Field(default=60.0, gt=0)
    retry_max_wait_s: float = Field(default=10.0, gt=0)
    # After an outage, work resumes within one interval of the service's return (retries.py);
    # 0: no probe, retries back off up to retry_max_wait_s as for any transient error.
    outage_probe_interval_s: float = Field(default=0.5, ge=0, le=60)

    # R6 late keys (docs/design.md): revoke late keys, or leave them to the backfill. The R1
    # re-check is always on.
    late_keys: Literal["revoke", "off"] = "revoke"
    late_key_settle_s: float = Field(default=30.0, ge=0, le=86_400)
    late_key_sweep_interval_s: float = Field(default=0.5, gt=0, le=60)

    # The invariant watch (service/run/invariant.py): how often one replica assesses the live
    # keys of removed members (0: never), and the share of time the assessment may take.
    invariant_interval_s: float = Field(default=600.0, ge=0, le=86_400)
    invariant_max_busy_fraction: float = Field(default=0.02, gt=0, le=1)

    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    http_port: int = Field(default=8080, ge=0, le=65_535)

    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    _split = field_validator(
        "kafka_topics",
        "event_types_added",
        "event_types_removed",
        "cdc_topics",
        "cdc_removed_states",
        "keys_live_states",
        mode="before",
    )(_split_commas)

    @field_validator(
        "keys_revoked_at_column",
        "keys_state_column",
        "keys_revoked_state",
        "keys_reason_column",
        "keys_revoked_by_column",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # `CLEANUP_KEYS_REASON_COLUMN=` says the table has no such column.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        # Never echo the value back: it usually carries a password.
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.batches_in_flight is not None and self.batches_in_flight >= self.database_pool_size:
            # One connection stays free, so /readyz can still ask the database.
            raise ValueError("batches_in_flight must be smaller than database_pool_size")
        if set(self.event_types_added) & set(self.event_types_removed):
            raise ValueError("event_types_added and event_types_removed overlap")
        if self.dlq_topic in self.kafka_topics:
            raise ValueError("dlq_topic must not be one of kafka_topics")
        if self.revocations_topic in (*self.kafka_topics, self.dlq_topic):
            raise ValueError("revocations_topic must differ from kafka_topics and dlq_topic")
        self._check_cdc()
        problem = settings_problem(self.key_table)
        if problem is not None:
            raise ConfigurationError(problem)
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_mechanism and self.kafka_sasl_username):
            raise ValueError(
                "kafka_sasl_mechanism and kafka_sasl_username are required with SASL_*"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("kafka_ssl_keyfile needs kafka_ssl_certfile")
        if self.kafka_ssl_key_password and not self.kafka_ssl_certfile:
            raise ValueError("kafka_ssl_key_password needs kafka_ssl_certfile")
        return self

    def _check_cdc(self) -> None:
        if set(self.cdc_topics) & {*self.kafka_topics, self.dlq_topic, self.revocations_topic}:
            raise ValueError(
                "cdc_topics must differ from kafka_topics, dlq_topic and revocations_topic"
            )
        if self.cdc_state_column and not self.cdc_removed_states:
            raise ValueError("cdc_removed_states: required with cdc_state_column")
        if self.cdc_removed_states and not self.cdc_state_column:
            raise ValueError("cdc_state_column: required with cdc_removed_states")
        if self.cdc_account_column == self.cdc_user_column:
            raise ValueError("cdc_account_column and cdc_user_column name the same column")

    @property
    def in_flight(self) -> int:
        """Batches applied at once: the setting, or one fewer than the pool (at most 16)."""
        if self.batches_in_flight is not None:
            return self.batches_in_flight
        return min(self.database_pool_size - 1, 16)

    @property
    def consumed_topics(self) -> list[str]:
        """Every topic the worker consumes: CloudEvents topics, then change-event topics."""
        return [*self.kafka_topics, *self.cdc_topics]

    @property
    def cdc_mapping(self) -> CdcMapping:
        return CdcMapping(
            account_column=self.cdc_account_column,
            user_column=self.cdc_user_column,
            state_column=self.cdc_state_column,
            removed_states=frozenset(self.cdc_removed_states),
            time_column=self.cdc_time_column,
        )

    @property
    def key_table(self) -> KeyTableMapping:
        """Where the keys live and how a revocation is marked (default: our api_keys)."""
        return KeyTableMapping(
            table=self.keys_table,
            id_column=self.keys_id_column,
            account_column=self.keys_account_column,
            user_column=self.keys_user_column,
            created_column=self.keys_created_column,
            revoked_at_column=self.keys_revoked_at_column,
            state_column=self.keys_state_column,
            live_states=tuple(self.keys_live_states),
            revoked_state=self.keys_revoked_state,
            reason_column=self.keys_reason_column,
            revoked_by_column=self.keys_revoked_by_column,
            clock_skew_s=self.keys_clock_skew_s,
        )

    @property
    def event_types(self) -> EventTypes:
        return EventTypes(
            added=frozenset(self.event_types_added), removed=frozenset(self.event_types_removed)
        )

    @property
    def announce_revocations(self) -> bool:
        """Whether revocations are announced ("Revocation notices", docs/design.md):
        CLEANUP_REVOCATIONS_TOPIC is set."""
        return self.revocations_topic is not None

    def require_kafka(self) -> str:
        """The bootstrap servers, for commands that talk to Kafka."""
        if not self.kafka_bootstrap_servers:
            raise ConfigurationError(
                f"{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS: required for this command"
            )
        return self.kafka_bootstrap_servers


def load_settings(env_file: Path | None = None) -> Settings:
    """Builds the settings, turning validation errors into one line that names the variable."""
    try:
        if env_file is None:
            return Settings()
        return Settings(_env_file=env_file)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{name}: {first['msg']}{more}"
