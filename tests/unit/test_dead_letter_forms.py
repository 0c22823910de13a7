"""The forms a dead letter takes when it is too large to forward whole
(adapters/kafka/dead_letter_topic.py)."""

from __future__ import annotations

import pytest

from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.service.apply.failure import Failure

FAILURE = Failure("MalformedEvent", "value: not valid JSON " + "x" * 5000)


def _record(key: bytes | None, value: bytes | None) -> Record:
    headers = (("x-trace", b"1"), ("dlq.error.class", b"Spoofed"))
    return Record("events", 2, 41, 1_700_000_000_000, key, value, headers)


def _size(letter: dlq.Letter) -> int:
    key, value, headers = letter
    return len(key or b"") + len(value or b"") + sum(len(n) + len(v or b"") for n, v in headers)


def test_the_first_form_is_the_record_whole_with_true_provenance() -> None:
    """Key, value and own headers as they were, then the provenance; a spoofed dlq.* header
    of the record is not kept."""
    dropped, (key, value, headers) = dlq.letter_forms(_record(b"k", b"{"), "g", FAILURE)[0]
    assert (dropped, key, value) == ("", b"k", b"{")
    assert headers[0] == ("x-trace", b"1")
    provenance = dict(headers[1:])
    assert set(provenance) <= dlq.PROVENANCE_HEADERS
    assert provenance[dlq.H_ERROR_CLASS] == b"MalformedEvent"
    assert provenance[dlq.H_KEY] == b"k"


def test_every_reduced_form_is_smaller_and_the_last_fits_whatever_the_record() -> None:
    """With a key and a value of 1 MiB each, every reduced form is smaller than the whole
    letter, and the last, the smallest, is provenance alone: about a kilobyte, with both
    sizes."""
    forms = dlq.letter_forms(_record(b"k" * 2**20, b"v" * 2**20), "g", FAILURE)
    sizes = [_size(letter) for _, letter in forms]
    assert max(sizes[1:]) < sizes[0]
    assert min(sizes) == sizes[-1]
    key, value, headers = forms[-1][1]
    assert (key, value, sizes[-1] < 2048) == (None, b"", True)
    assert dict(headers)[dlq.H_KEY_DROPPED] == b"1048576"
    assert dict(headers)[dlq.H_VALUE_DROPPED] == b"1048576"


@pytest.mark.parametrize(("key", "value"), [(None, None), (b"k", None), (None, b""), (b"", None)])
def test_no_form_has_neither_key_nor_value(key: bytes | None, value: bytes | None) -> None:
    """A Kafka client cannot write a record with neither (aiokafka refuses it): a tombstone
    without a key keeps its null value under an empty key, and a value that was dropped is
    empty rather than a tombstone."""
    forms = dlq.letter_forms(_record(key, value), "g", FAILURE)
    for dropped, (k, v, _) in forms:
        assert not (k is None and v is None), dropped
        if "value" in dropped:
            assert v == b""
    assert forms[0][1][1] == value
