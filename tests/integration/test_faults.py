"""Network faults between the worker and the real services, through Toxiproxy (docs/design.md, "Real
services in tests").

Each test puts one fault on one link while a stream of removals flows, and checks: nothing
lost and nothing wrong (every key of every removal revoked by its event, once), no committed
offset ahead of the ledger, readiness false while the worker cannot make progress, liveness
true while it can still recover, and readiness back (with the work done) once the fault is gone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from cleanup_worker.bootstrap import backfill_job
from cleanup_worker.domain.events import MembershipEvent
from cleanup_worker.service.backfill.options import BackfillRequest
from cleanup_worker.service.run.process import RunProcess
from cleanup_worker.settings import Settings
from testkit.database import (
    assert_no_offset_ahead_of_ledger,
    ledger_size,
    revoked_keys,
    seed_key,
    seed_keys_for,
)
from testkit.events import at, removals
from testkit.kafka import all_committed, committed_offsets, publish, publisher, read_topic
from testkit.metrics import sample_total
from testkit.processes import http_get, running_worker
from testkit.services import ROOT, Services
from testkit.toxiproxy import (
    HOW_TO_PROXIED,
    Link,
    Toxiproxy,
    ToxiproxyError,
    database_address,
    kafka_proxy_addresses,
    through,
    toxiproxy_process,
)
from testkit.waiting import eventually, until_grown

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Links:
    api: Toxiproxy
    database: Link
    broker: Link


async def _links(api: Toxiproxy, services: Services) -> Links:
    listen, proxied = kafka_proxy_addresses(services.kafka_bootstrap_servers)
    database = await api.proxy("postgres", "127.0.0.1:0", database_address(services.database_url))
    broker = await api.proxy("kafka", listen, proxied)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.listen, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 15)
        cluster = await admin.describe_cluster()
    except Exception:  # noqa: BLE001 - whatever failed, the cause to fix is the same
        raise ToxiproxyError(HOW_TO_PROXIED) from None
    finally:
        await admin.close()
    advertised = {f"{b['host']}:{b['port']}" for b in cluster["brokers"]}
    if advertised != {broker.listen}:
        raise ToxiproxyError(f"{HOW_TO_PROXIED} (it advertises {advertised})")
    return Links(api, database, broker)


@pytest.fixture(scope="module")
def toxiproxy_links(services: Services) -> Iterator[Links]:
    """toxiproxy-server with a proxy in front of PostgreSQL and one in front of the broker."""
    try:
        with toxiproxy_process(ROOT / ".dev" / "toxiproxy-tests.log") as api:
            yield asyncio.run(_links(api, services))
    except ToxiproxyError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def links(toxiproxy_links: Links) -> AsyncIterator[Links]:
    """The proxies, with no fault left over from another test (and none left after)."""
    await toxiproxy_links.api.reset()
    yield toxiproxy_links
    await toxiproxy_links.api.reset()


@pytest.fixture
def proxied(settings: Settings, links: Links) -> Settings:
    """The worker's settings: both services through the proxies. A stalled statement gives
    up after 5 s + 5 s (the command timeout), not after the default 30 s + 5 s. Liveness
    fails after 3 s without a poll, so that "live" during a fault means the loop kept turning
    (or knowingly waited), not that the fault was shorter than the default 60 s."""
    return settings.model_copy(
        update={
            "database_url": SecretStr(
                through(settings.database_url.get_secret_value(), links.database.listen)
            ),
            "kafka_bootstrap_servers": links.broker.listen,
            "database_statement_timeout_ms": 5000,
            "liveness_timeout_s": 3.0,
        }
    )


def _removals(count: int) -> list[MembershipEvent]:
    return removals(count, prefix=f"user-{uuid.uuid4().hex[:6]}-")


async def _status(process: RunProcess, path: str) -> int:
    assert process.http is not None
    assert process.http.port is not None
    status, _ = await http_get(process.http.port, path)
    return status


async def _assert_ready(process: RunProcess) -> None:
    """Ready now; otherwise the failure shows which part of /readyz said no."""
    assert process.http is not None
    assert process.http.port is not None
    status, body = await http_get(process.http.port, "/readyz")
    assert status == 200, body


async def _all_done(settings: Settings, db: Any, events: list[MembershipEvent]) -> None:
    """Every removal applied once, every key revoked by its own event, every offset
    committed, and none ahead of the ledger."""

    async def finished() -> bool:
        live = await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        return live == 0 and await ledger_size(db) == len(events)

    await eventually(finished, timeout=90)

    await eventually(lambda: all_committed(settings), timeout=60)
    await assert_no_offset_ahead_of_ledger(db, await committed_offsets(settings))
    wrong = await db.fetchval(
        "SELECT count(*) FROM api_keys k JOIN membership_events e "
        "ON e.iam_id = k.iam_id AND k.revoked_by <> 'event:' || e.source || '#' || e.event_id"
    )
    assert wrong == 0, "a key was revoked by another event than its owner's removal"


async def _ready_again(process: RunProcess) -> None:
    async def ready() -> bool:
        return await _status(process, "/readyz") == 200

    await eventually(ready, timeout=60)


async def _not_ready_but_live(process: RunProcess) -> None:
    """Readiness turns false while the fault lasts; liveness stays true meanwhile."""

    async def not_ready() -> bool:
        return await _status(process, "/readyz") == 503

    await eventually(not_ready, timeout=30, interval=0.2)
    assert await _status(process, "/livez") == 200


@pytest.mark.parametrize("link", ["database", "broker"])
async def test_latency_with_jitter(
    link: str, links: Links, settings: Settings, proxied: Settings, db: Any
) -> None:
    """100 ms ± 50 ms each way on one link: slower, nothing lost, ready throughout."""
    events = _removals(300)
    await seed_keys_for(db, events)
    target = links.database if link == "database" else links.broker
    async with running_worker(proxied) as process:
        await _ready_again(process)
        await target.add("latency", stream="downstream", latency=100, jitter=50)
        await target.add("latency", stream="upstream", latency=100, jitter=50)
        await publish(settings, events, per_s=200)
        await _all_done(settings, db, events)
        await _assert_ready(process)


async def _fault_mid_stream(
    fault: Callable[[], AbstractAsyncContextManager[None]],
    hold_s: float,
    settings: Settings,
    proxied: Settings,
    db: Any,
) -> None:
    """400 removals flow; once some are applied the fault is put on and held `hold_s` past the
    moment readiness dropped (liveness and the committed offsets checked then), and lifted;
    then everything is applied and the worker is ready again."""
    events = _removals(400)
    await seed_keys_for(db, events)
    async with running_worker(proxied) as process:
        await _ready_again(process)
        publishing = asyncio.create_task(publish(settings, events, per_s=100))
        await eventually(lambda: _some_applied(db), timeout=30)
        async with fault():
            await _not_ready_but_live(process)
            await asyncio.sleep(hold_s)  # the fault's length, not a wait for something
            await assert_no_offset_ahead_of_ledger(db, await committed_offsets(settings))
            assert await _status(process, "/livez") == 200
        await publishing
        await _all_done(settings, db, events)
        await _ready_again(process)


@pytest.mark.parametrize("link", ["database", "broker"])
async def test_link_down_and_up(
    link: str, links: Links, settings: Settings, proxied: Settings, db: Any
) -> None:
    """The link goes away for 5 s mid-stream (connections closed, new ones refused): not
    ready meanwhile but live, and everything applied once it is back."""
    target = links.database if link == "database" else links.broker
    await _fault_mid_stream(target.down, 3, settings, proxied, db)


async def _some_applied(db: Any) -> bool:
    return await ledger_size(db) > 0


# The database's stall outlasts the worker's command timeout (5 s + 5 s here): the stalled
# batch gives up its connection and is retried. The broker's stays within aiokafka's request
# timeout (40 s, too long for a test): the stalled requests are answered once data flows.
@pytest.mark.parametrize(("link", "stall_s"), [("database", 14), ("broker", 6)])
async def test_black_hole_mid_stream(
    link: str, stall_s: float, links: Links, settings: Settings, proxied: Settings, db: Any
) -> None:
    """Nothing gets through the link for a while (Toxiproxy's `timeout` toxic with 0: the
    connections stay open, the bytes are held) while batches and commits are in flight: not
    ready meanwhile but live, and everything applied once the link carries data again."""
    target = links.database if link == "database" else links.broker
    await _fault_mid_stream(target.stalled, stall_s - 2, settings, proxied, db)


@pytest.mark.timeout(240)
async def test_broker_stall_longer_than_the_request_timeout(
    links: Links, settings: Settings, proxied: Settings, db: Any
) -> None:
    """The broker link holds every byte for 45 s, past aiokafka's 40 s request timeout: the
    stalled fetches, heartbeats and commits time out and are sent again on new connections,
    the worker stays live and unready meanwhile, and everything is applied afterwards."""
    events = _removals(300)
    await seed_keys_for(db, events)
    async with running_worker(proxied) as process:
        await _ready_again(process)
        publishing = asyncio.create_task(publish(settings, events, per_s=100))
        await eventually(lambda: _some_applied(db), timeout=30)
        async with links.broker.stalled():
            await _not_ready_but_live(process)
            for _ in range(9):  # 45 s, looking every 5 s
                await asyncio.sleep(5)
                assert await _status(process, "/livez") == 200
                assert await _status(process, "/readyz") == 503
            await assert_no_offset_ahead_of_ledger(db, await committed_offsets(settings))
        await publishing
        await _all_done(settings, db, events)
        await _ready_again(process)


@pytest.mark.parametrize("fault", ["down", "reset"])
async def test_backfill_goes_on_after_losing_its_connection(
    fault: str, links: Links, proxied: Settings, db: Any
) -> None:
    """The backfill's connection is lost mid-run (the link down, or reset): it
    reconnects and continues the same run from its last batch, and ends `completed` with
    every orphan revoked once, by that run."""
    run = uuid.uuid4().hex[:6]
    orphans = [await seed_key(db, f"acct-{run}", f"gone-{i}", at(0)) for i in range(40)]
    # A member who stays (a table with no active member is refused as never loaded)
    await db.execute(
        "INSERT INTO account_memberships VALUES ($1, 'staying', 'active', NULL, $2)",
        f"acct-{run}",
        at(0),
    )
    staying = await seed_key(db, f"acct-{run}", "staying", at(0))
    request = BackfillRequest(
        execute=True, batch_size=4, max_rate=20, max_fraction=1.0, accounts=(f"acct-{run}",)
    )
    retried = sample_total("cleanup_retries_total", operation="database.backfill")
    backfill = asyncio.create_task(backfill_job(proxied, request).run())
    await eventually(lambda: _revoked_at_least(db, 8), timeout=30, interval=0.05)
    # The fault lasts until the backfill has lost its connection and is retrying.
    fault_on = (
        links.database.down()
        if fault == "down"
        else links.database.toxic("reset_peer", stream="upstream", timeout=0)
    )
    async with fault_on:
        await until_grown(lambda: _retries("database.backfill"), 1, timeout=30)
    summary = await asyncio.wait_for(backfill, 90)

    assert summary.status == "completed"
    assert summary.revoked_now == len(orphans)
    revoked = await revoked_keys(db)
    assert {revoked.get(key) for key in orphans} == {("orphaned", f"backfill:{summary.run_id}")}
    assert staying not in revoked
    assert sample_total("cleanup_retries_total", operation="database.backfill") > retried
    status = await db.fetchval("SELECT status FROM backfill_runs WHERE run_id = $1", summary.run_id)
    assert status == "completed"


def _retries(operation: str) -> float:
    return sample_total("cleanup_retries_total", operation=operation)


async def _revoked_at_least(db: Any, count: int) -> bool:
    revoked: int = await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL")
    return revoked >= count


async def test_bandwidth_limit_on_the_broker_link(
    links: Links, settings: Settings, proxied: Settings, db: Any
) -> None:
    """Fetches squeezed through 16 KB/s: everything applied, in more and smaller batches."""
    events = _removals(300)
    await seed_keys_for(db, events)
    async with running_worker(proxied) as process:
        await _ready_again(process)
        await links.broker.add("bandwidth", stream="downstream", rate=16)
        await publish(settings, events, per_s=1000)
        await _all_done(settings, db, events)
        await _assert_ready(process)


async def test_black_hole_on_the_broker_during_dead_letter_publishing(
    links: Links, settings: Settings, proxied: Settings, db: Any
) -> None:
    """Malformed records arrive while the broker link drops every byte: once it is back,
    each one is in the dead-letter topic and the valid removals around them are applied."""
    events = _removals(100)
    await seed_keys_for(db, events)
    async with running_worker(proxied) as process, publisher(settings) as pub:
        await _ready_again(process)
        await pub.events(events[:50])
        await eventually(lambda: _applied_at_least(db, 50), timeout=30)
        async with links.broker.stalled():
            for i in range(5):
                await pub.raw(b"not json %d" % i, key=b"bad-%d" % i, partition=i % 3)
            await pub.events(events[50:])
            await _not_ready_but_live(process)
            await asyncio.sleep(3)
        await eventually(lambda: _applied_at_least(db, 100), timeout=90)
        letters = await read_topic(settings, settings.dlq_topic)
        assert {r.value for r in letters} >= {b"not json %d" % i for i in range(5)}

        await eventually(lambda: all_committed(settings), timeout=60)


async def _applied_at_least(db: Any, count: int) -> bool:
    return await ledger_size(db) >= count


async def test_reset_after_commit_before_its_answer_applies_once(
    links: Links, settings: Settings, proxied: Settings, db: Any
) -> None:
    """The connection is reset after PostgreSQL committed a batch but before the worker heard
    so (the "did it commit?" case): the retried batch finds its events in the ledger, and every
    key stays revoked once, by its own event, at the first commit's time."""
    events = _removals(50)
    await seed_keys_for(db, events)
    async with publisher(settings) as pub:
        await pub.events(events, partition=0)
    # Answers from the database take 0.5 s: the commit is visible to us well before the worker
    # hears of it.
    await links.database.add("latency", stream="downstream", latency=500)
    retried = sample_total("cleanup_retries_total", operation="database.batch")
    duplicates = sample_total("cleanup_events_total", outcome="duplicate")
    async with running_worker(proxied) as process:
        await eventually(lambda: _applied_at_least(db, len(events)), timeout=60, interval=0.02)
        # Dropped with the connections: adding a toxic instead would make Toxiproxy's latency
        # toxic hand over the answer it holds at once, and nothing follows a commit on the
        # connection any more (no reset query on release) for a toxic to catch.
        await links.database.set_enabled(False)
        first = await db.fetch("SELECT id, revoked_at, revoked_by FROM api_keys ORDER BY id")

        # The loss has reached the worker: its batch failed and is being retried (counted
        # from before the connections went, since the failure can follow at once).
        async def batch_retried() -> bool:
            return _retries("database.batch") > retried

        await eventually(batch_retried, timeout=30)
        await links.api.reset()
        await _all_done(settings, db, events)
        await _ready_again(process)
    again = await db.fetch("SELECT id, revoked_at, revoked_by FROM api_keys ORDER BY id")
    assert again == first
    assert await ledger_size(db) == len(events)
    # The batch was tried again, and found every event already applied.
    assert sample_total("cleanup_retries_total", operation="database.batch") > retried
    assert sample_total("cleanup_events_total", outcome="duplicate") - duplicates == len(events)
