"""Records the client library cannot read (docs/events.md): a header name that is not UTF-8,
written by kcat (librdkafka writes any bytes; Kafka's own clients cannot) and byte by byte with
a raw ProduceRequest. aiokafka's reader raises on such a record inside `getmany`; the worker
dead-letters it and applies the records around it, and `replay` and `dlq list` read past it."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

import pytest

from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, binary, event
from testkit.kafka import all_committed, publisher, read_topic
from testkit.processes import cli, free_port, spawn_worker
from testkit.waiting import eventually
from testkit.wire import RawRecord, batch, produce_raw

BAD_NAME = b"\xff\xfename"
# The dead letter's contract (docs/events.md), spelled out rather than imported.
UNREADABLE = "UnreadableRecord"
HEX_PREFIX = "dlq.original.header-hex."


async def kcat_with_bad_header_name(settings: Settings, value: bytes, headers: Any) -> None:
    """`kcat -P -H $'\\xff\\xfename=x'`: arguments as bytes, the name is no str."""
    if shutil.which("kcat") is None:
        pytest.fail("kcat not found: `apt-get install kcat` (.ci/run does it)", pytrace=False)
    options = [b"-H" + name.encode() + b"=" + data for name, data in headers]
    args = [b"kcat", b"-P", b"-b", settings.require_kafka().encode(), b"-p", b"0", b"-t"]
    process = await asyncio.create_subprocess_exec(
        *args, settings.kafka_topics[0].encode(), *options, b"-H" + BAD_NAME + b"=x",
        b"-k", b"acct/kcat", stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate(value + b"\n")
    assert process.returncode == 0, err.decode()


@pytest.mark.timeout(240)
async def test_a_record_the_client_cannot_read_is_dead_lettered_and_its_neighbours_applied(
    settings: Settings, db: Any
) -> None:
    """On one partition, in one fetch: a removal, a kcat record whose header name is not
    UTF-8, a raw batch of [such a record, a removal], a removal. The worker stays up, applies
    the three removals, dead-letters the two unreadable records with their coordinates, value
    and headers, and commits past everything; `replay` and `dlq list` read the same records."""
    users = ("before", "kcat", "raw-bad", "raw-good", "after")
    removals = {user: event("removed", "acct", user, at(5)) for user in users}
    keys = {user: await seed_key(db, "acct", user, at(0)) for user in users}
    async with publisher(settings) as pub:
        await pub.events([removals["before"]], partition=0, mode="b")
        kcat_value, kcat_headers = binary(removals["kcat"])
        await kcat_with_bad_header_name(settings, kcat_value, kcat_headers)
        raw = []
        for user, extra in (("raw-bad", [(BAD_NAME, b"v")]), ("raw-good", [])):
            value, headers = binary(removals[user])
            own = [(name.encode(), data) for name, data in headers]
            raw.append(RawRecord(f"acct/{user}".encode(), value, [*own, *extra]))
        raw_offset = await produce_raw(settings, settings.kafka_topics[0], 0, batch(raw))
        await pub.events([removals["after"]], partition=0, mode="b")
    worker = await spawn_worker(settings, CLEANUP_HTTP_PORT=str(free_port()))
    try:

        async def settled() -> bool:
            assert worker.returncode is None, "the worker exited"
            return await ledger_size(db) == 3 and await all_committed(settings)

        await eventually(settled, timeout=90)
        letters = await read_topic(settings, settings.dlq_topic)
        assert worker.returncode is None
    finally:
        if worker.returncode is None:
            worker.terminate()
        _, stderr = await worker.communicate()
        print(stderr.decode(errors="replace")[-3000:])  # the worker's log, for a failure
    good = ("before", "raw-good", "after")
    applied = {keys[u]: ("member_removed", removals[u].ref) for u in good}
    assert await revoked_keys(db) == applied
    assert len(letters) == 2
    by_offset = {int(dict(letter.headers)[dlq.H_OFFSET]): letter for letter in letters}
    assert sorted(by_offset) == [1, raw_offset]
    hex_name = HEX_PREFIX + BAD_NAME.hex()
    for letter, user in ((by_offset[1], "kcat"), (by_offset[raw_offset], "raw-bad")):
        found = dict(letter.headers)
        assert found[dlq.H_ERROR_CLASS] == UNREADABLE.encode()
        assert found[dlq.H_PARTITION] == b"0"
        assert b"not UTF-8" in found[dlq.H_ERROR_MESSAGE]
        assert letter.value == binary(removals[user])[0]
        assert letter.key == f"acct/{user}".encode()
        assert found[hex_name] == (b"x" if user == "kcat" else b"v")
        assert found["ce_id"] == removals[user].id.encode()

    # The same topic through replay and dlq list: both read past the records, neither stops.
    code, out, err = await cli(settings, "replay", "--from", "earliest", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["malformed"], report["duplicate"]) == (2, 3), report
    code, out, err = await cli(settings, "dlq", "list", "--json")
    assert code == 0, err
    assert [letter["error"]["class"] for letter in json.loads(out)["letters"]] == [UNREADABLE] * 2
