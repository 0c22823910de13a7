"""Real producers of membership events: each writes records into a topic the way its users do.

A `Case` is one producer in one of its modes; it sends one addition and one removal of its own
member, so that every case can be checked on its own after a single worker run. The tools come
from `make producers` (the Python SDKs, the Java SDK's jars), apt (`kcat`) and scripts/kafka
(the console producer); a missing one fails the test with how to get it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from testkit.services import ROOT

SOURCE = "/accounts"
IAM_ID = "IBMid-550001"
REMOVED_AT = "2026-11-26T14:03:07.512Z"
ADDED_AT = "2026-11-26T15:20:00.250+01:00"  # an offset other than Z, after the removal
JSON = "application/json"
CE_JSON = "application/cloudevents+json"
BINARY_HEADERS = frozenset({"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"})
TOOLS = ROOT / ".dev" / "producers"


@dataclass(frozen=True)
class Case:
    """One producer in one mode, and how its records look on the wire (docs/events.md)."""

    name: str
    producer: str  # python-sdk1 | python-sdk2 | java-sdk | kcat | console-producer
    mode: str  # binary | structured
    binding: str  # the Python SDKs: legacy (cloudevents.kafka) | core
    datacontenttype: str | None  # the event's attribute, as its producer is given it
    headers: frozenset[str]  # every header name the record carries
    content_type: str | None  # the record's content-type header, None: absent
    transaction: str = ""  # "" | committed | aborted: each record in a transaction of its own

    @property
    def account_id(self) -> str:
        return f"acct-{self.name}"

    @property
    def key(self) -> str:
        return f"{self.account_id}/{IAM_ID}"

    def event_id(self, change: str) -> str:
        return f"{self.name}.{change}"

    def events(self) -> list[dict[str, Any]]:
        """The addition, then the earlier removal: what every producer is given to send.

        Sent newest first, so the member is never `removed` while the worker runs (R6 must
        not see the new key as a late one), and the removal still applies (order independence).
        """
        return [
            {
                "key": self.key,
                "id": self.event_id(change),
                "source": SOURCE,
                "type": f"account.member.{change}",
                "time": time,
                "datacontenttype": self.datacontenttype,
                "data": {"account_id": self.account_id, "iam_id": IAM_ID, "actor": "IBMid-100"},
            }
            for change, time in (("added", ADDED_AT), ("removed", REMOVED_AT))
        ]


def _case(
    name: str,
    producer: str,
    mode: str,
    binding: str,
    datacontenttype: str | None,
    content_type: str | None,
    extra: frozenset[str] = frozenset(),
    transaction: str = "",
) -> Case:
    headers = set(BINARY_HEADERS if mode == "binary" else ()) | set(extra)
    if content_type is not None:
        headers.add("content-type")
    return Case(
        name, producer, mode, binding, datacontenttype, frozenset(headers), content_type,
        transaction,
    )  # fmt: skip


PK = frozenset({"ce_partitionkey"})  # the partitionkey extension as a binary-mode attribute
PY1, PY2, JAVA, CONSOLE = "python-sdk1", "python-sdk2", "java-sdk", "console-producer"
AIOKAFKA_TXN = "aiokafka-txn"  # the SDK 2.x makes the messages, aiokafka sends in transactions
BIN, STR = "binary", "structured"
CASES = [
    # name, producer, mode, SDK binding, the event's datacontenttype, content-type header, ...
    _case("py1-binary", PY1, BIN, "legacy", JSON, JSON),
    # 1.x writes structured events with content-type application/json ("Event contract",
    # docs/design.md).
    _case("py1-structured", PY1, STR, "legacy", JSON, JSON),
    _case("py1-structured-nodct", PY1, STR, "legacy", None, None),
    # No py1-binary-nodct: 1.x's to_binary raises KeyError without a datacontenttype.
    _case("py2-binary", PY2, BIN, "core", JSON, JSON, PK),
    _case("py2-binary-nodct", PY2, BIN, "core", None, None, PK),
    _case("py2-structured", PY2, STR, "core", JSON, CE_JSON),
    _case("py2-structured-nodct", PY2, STR, "core", None, CE_JSON),
    # 2.x keeps the 1.x binding as cloudevents.v1.kafka (its bytes differ a little).
    _case("py2v1-binary", PY2, BIN, "legacy", JSON, JSON),
    _case("py2v1-structured", PY2, STR, "legacy", JSON, JSON),
    _case("py2v1-structured-nodct", PY2, STR, "legacy", None, None),
    _case("java-binary", JAVA, BIN, "", JSON, JSON, PK),
    _case("java-binary-nodct", JAVA, BIN, "", None, None, PK),
    _case("java-structured", JAVA, STR, "", JSON, CE_JSON),
    _case("java-structured-nodct", JAVA, STR, "", None, CE_JSON),
    # Transactional producers (docs/events.md, Transactions): committed applied, aborted never.
    _case("java-binary-txn", JAVA, BIN, "", JSON, JSON, PK, transaction="committed"),
    _case("java-structured-txn", JAVA, STR, "", JSON, CE_JSON, transaction="committed"),
    _case("java-binary-aborted", JAVA, BIN, "", JSON, JSON, PK, transaction="aborted"),
    _case("aiokafka-txn-binary", AIOKAFKA_TXN, BIN, "core", JSON, JSON, PK, "committed"),
    _case(
        "aiokafka-txn-structured", AIOKAFKA_TXN, STR, "core", JSON, CE_JSON, transaction="committed"
    ),
    _case("aiokafka-txn-aborted", AIOKAFKA_TXN, BIN, "core", JSON, JSON, PK, "aborted"),
    _case("kcat-binary", "kcat", BIN, "", JSON, JSON),
    _case("kcat-structured", "kcat", STR, "", JSON, CE_JSON),
    _case("kcat-structured-noheaders", "kcat", STR, "", None, None),
    _case("console-binary", CONSOLE, BIN, "", JSON, JSON),
    _case("console-structured", CONSOLE, STR, "", JSON, CE_JSON),
    _case("console-structured-noheaders", CONSOLE, STR, "", None, None),
]


def ensure_tools() -> None:
    """Fails, saying how to get them, when the producers' tools are missing or stale."""
    sources = {
        "python-sdk1": "python-sdk1.txt",
        "python-sdk2": "python-sdk2.txt",
        "java": "pom.xml",
    }
    for directory, source in sources.items():
        marker = TOOLS / directory / ".installed"
        pinned = ROOT / "tests" / "producers" / source
        if not marker.exists() or marker.stat().st_mtime < pinned.stat().st_mtime:
            pytest.fail(
                f"{marker} missing or older than {pinned}: run `make producers`", pytrace=False
            )
    if shutil.which("kcat") is None:
        pytest.fail("kcat not found: `apt-get install kcat` (.ci/run does it)", pytrace=False)


async def _run(args: list[str], stdin: str, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    out, err = await process.communicate(stdin.encode())
    assert process.returncode == 0, f"{args[0]} failed ({process.returncode}): {err.decode()}"
    return out.decode()


def _lines(cases: Iterable[Case]) -> str:
    return "".join(
        json.dumps({**spec, "binding": case.binding, "mode": case.mode}) + "\n"
        for case in cases
        for spec in case.events()
    )


async def python_sdk(producer: AIOKafkaProducer, topic: str, sdk: str, cases: list[Case]) -> None:
    """The SDK makes each message (it has no Kafka client); aiokafka sends it as made, and
    when the case says so, in a transaction of its own (`producer` has a transactional_id)."""
    env = {**os.environ, "PYTHONPATH": str(TOOLS / sdk)}
    script = str(ROOT / "tests" / "producers" / "python_sdk.py")
    out = await _run([sys.executable, script], _lines(cases), env)
    transactions = [case.transaction for case in cases for _ in case.events()]
    for line, transaction in zip(out.splitlines(), transactions, strict=True):
        message = json.loads(line)
        headers = [(name, base64.b64decode(value)) for name, value in message["headers"]]
        if transaction:
            await producer.begin_transaction()
        await producer.send_and_wait(
            topic,
            value=base64.b64decode(message["value"]),
            key=message["key"].encode(),
            headers=headers,
        )
        if transaction == "committed":
            await producer.commit_transaction()
        elif transaction == "aborted":
            await producer.abort_transaction()


async def java_sdk(bootstrap: str, topic: str, cases: list[Case]) -> None:
    """One JVM sends every Java case: a KafkaProducer with the SDK's CloudEventSerializer."""
    java = (await _run([str(ROOT / "scripts" / "kafka"), "--java"], "")).strip()
    lines = "".join(
        json.dumps({**spec, "encoding": case.mode.upper(), "transaction": case.transaction}) + "\n"
        for case in cases
        for spec in case.events()
    )
    classpath = str(TOOLS / "java" / "*")
    source = str(ROOT / "tests" / "producers" / "CloudEventsProducer.java")
    # Start fast: a short-lived JVM gains nothing from the optimising compiler.
    options = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    await _run([java, *options, "-cp", classpath, source, bootstrap, topic], lines)


def _structured_value(spec: dict[str, Any]) -> str:
    body = {"specversion": "1.0", **{k: v for k, v in spec.items() if k != "key"}}
    if body["datacontenttype"] is None:
        del body["datacontenttype"]
    return json.dumps(body)


def _binary_headers(spec: dict[str, Any]) -> list[tuple[str, str]]:
    headers = [("ce_specversion", "1.0")]
    headers += [(f"ce_{name}", spec[name]) for name in ("id", "source", "type", "time")]
    if spec["datacontenttype"] is not None:
        headers.append(("content-type", spec["datacontenttype"]))
    return headers


def _tool_record(case: Case, spec: dict[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """The headers and value a person types into kcat or the console producer."""
    if case.mode == "binary":
        return _binary_headers(spec), json.dumps(spec["data"])
    headers = [("content-type", case.content_type)] if case.content_type else []
    return headers, _structured_value(spec)


async def kcat(bootstrap: str, topic: str, cases: list[Case]) -> None:
    """One kcat -P per record: its -H headers hold for every record of a run."""
    for case in cases:
        for spec in case.events():
            headers, value = _tool_record(case, spec)
            options = [f"-H{name}={text}" for name, text in headers]
            args = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-k", spec["key"], *options]
            await _run(args, value + "\n")


async def console_producer(bootstrap: str, topic: str, cases: list[Case]) -> None:
    """Kafka's console producer: `headers TAB key TAB value` lines with parse.headers=true."""
    with_headers, plain = [], []
    for case in cases:
        for spec in case.events():
            headers, value = _tool_record(case, spec)
            if headers:
                names = ",".join(f"{name}={text}" for name, text in headers)
                with_headers.append(f"{names}\t{spec['key']}\t{value}\n")
            else:
                plain.append(f"{spec['key']}\t{value}\n")
    tool = [str(ROOT / "scripts" / "kafka"), "console-producer"]
    target = ["--bootstrap-server", bootstrap, "--topic", topic]
    keyed = ["--reader-property", "parse.key=true"]
    # parse.headers refuses a line with an empty header part: plain lines need a run of their own.
    if with_headers:
        parse = [
            "--reader-property",
            "parse.headers=true",
            "--reader-property",
            "headers.key.separator==",
        ]
        await _run([*tool, *target, *keyed, *parse], "".join(with_headers))
    if plain:
        await _run([*tool, *target, *keyed], "".join(plain))
