"""The envelope carries event ids; the producer stores every event, retries keep its id."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kinesis_eo.envelope import HEADER_BYTES, MAGIC, MAX_ID_BYTES, unwrap, wrap
from kinesis_eo.errors import (
    InvalidRecordError,
    KinesisEOError,
    RecordTooLargeError,
    ResourceNotFoundError,
)
from kinesis_eo.producer import (
    AsyncProducer,
    Event,
    Producer,
    ProducerConfig,
    PutRecordsFailedError,
    plan_batches,
    prepare_records,
)
from kinesis_eo.retry import RetryConfig
from kinesis_eo.testing import lambda_esm
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.faults import (
    FaultInjector,
    FaultKind,
    NextCalls,
    Probability,
    injected_entries,
)

MIB = 1_048_576
KPL_MAGIC = b"\xf3\x89\x9a\xc2"
STREAM = "producer"
# No waiting in tests: back-off is exercised, its length is not.
FAST = ProducerConfig(
    entry_retry=RetryConfig(max_attempts=10, initial_backoff_s=0.0, max_backoff_s=0.0),
    call_retry=RetryConfig(max_attempts=8, initial_backoff_s=0.0, max_backoff_s=0.001),
)

event_ids = st.text(min_size=1, max_size=MAX_ID_BYTES).filter(
    lambda s: len(s.encode("utf-8")) <= MAX_ID_BYTES
)


# --- envelope -------------------------------------------------------------------------------


@given(event_id=event_ids, payload=st.binary())
def test_envelope_round_trip(event_id: str, payload: bytes) -> None:
    assert unwrap(wrap(event_id, payload)) == (event_id, payload)


@given(data=st.binary())
def test_unwrap_never_fails_and_only_claims_whole_envelopes(data: bytes) -> None:
    event_id, payload = unwrap(data)
    if event_id is None:
        assert payload == data
    else:
        assert wrap(event_id, payload) == data


@given(event_id=event_ids, payload=st.binary(max_size=20))
def test_a_truncated_envelope_is_not_an_envelope(event_id: str, payload: bytes) -> None:
    whole = wrap(event_id, payload)
    header_and_id = HEADER_BYTES + len(event_id.encode("utf-8"))
    for cut in range(header_and_id):
        assert unwrap(whole[:cut]) == (None, whole[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'{"json": true}',
        KPL_MAGIC + b"\x01\x02",
        MAGIC + b"\x02\x01a",  # a version this code does not know
        MAGIC + b"\x01\x00payload",  # an empty id
        MAGIC + b"\x01\x02\xff\xfe",  # an id that is not UTF-8
    ],
)
def test_other_bytes_pass_through(data: bytes) -> None:
    assert unwrap(data) == (None, data)


def test_envelope_layout() -> None:
    assert MAGIC != KPL_MAGIC
    assert wrap("ab", b"xyz") == b"\x00KEO\x01\x02abxyz"
    assert unwrap(memoryview(wrap("é", b"1"))) == ("é", b"1")


@pytest.mark.parametrize("bad", ["", "x" * 256, "é" * 128, "\ud800"])
def test_wrap_refuses_ids_the_envelope_cannot_hold(bad: str) -> None:
    with pytest.raises(InvalidRecordError, match="event id"):
        wrap(bad, b"")


# --- planning -------------------------------------------------------------------------------


@settings(max_examples=300)
@given(data=st.data())
def test_plan_batches_respects_both_limits_and_order(data: st.DataObject) -> None:
    max_records = data.draw(st.integers(1, 500))
    max_record = data.draw(st.integers(1, 5 * MIB))
    max_bytes = data.draw(st.integers(max_record, 5 * MIB))
    config = ProducerConfig(
        max_record_bytes=max_record, max_batch_records=max_records, max_batch_bytes=max_bytes
    )
    sizes = data.draw(st.lists(st.integers(1, max_record), max_size=1500))

    batches = plan_batches(sizes, config)

    assert [i for batch in batches for i in batch] == list(range(len(sizes)))
    for n, batch in enumerate(batches):
        assert 1 <= len(batch) <= max_records
        assert sum(sizes[i] for i in batch) <= max_bytes
        if n + 1 < len(batches):
            # Greedy: a batch is closed only when the next record does not fit in it.
            nxt = batches[n + 1][0]
            full = len(batch) == max_records
            assert full or sum(sizes[i] for i in batch) + sizes[nxt] > max_bytes


def test_plan_batches_with_the_kinesis_limits() -> None:
    config = ProducerConfig()
    assert [len(b) for b in plan_batches([10] * 1200, config)] == [500, 500, 200]
    assert [len(b) for b in plan_batches([MIB] * 11, config)] == [5, 5, 1]
    assert plan_batches([], config) == []


# --- producer on in-process moto --------------------------------------------------------------


def make_stream(client: Any, name: str = STREAM, shards: int = 4) -> None:
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )


def read_stream(client: Any, name: str = STREAM) -> list[tuple[str, str, bytes]]:
    """(shard id, sequence number, data) of every record, shard after shard."""
    return [(r.shard_id, r.sequence_number, r.data) for r in lambda_esm.read_stream(client, name)]


def copies_by_id(client: Any, name: str = STREAM) -> dict[str | None, list[bytes]]:
    """Payloads in the stream, grouped by the event id of their envelope."""
    copies: dict[str | None, list[bytes]] = defaultdict(list)
    for _shard, _sequence, data in read_stream(client, name):
        event_id, payload = unwrap(data)
        copies[event_id].append(payload)
    return copies


def numbered(count: int) -> list[Event]:
    return [Event(data=b"payload-%d" % i, partition_key=f"key-{i % 37}") for i in range(count)]


class SentEntries:
    """Records every PutRecords entry the client serialises, as the stream would receive it."""

    def __init__(self, client: Any) -> None:
        self.calls: list[list[tuple[str, bytes]]] = []
        client.meta.events.register("before-call.kinesis.PutRecords", self._on_call)

    def _on_call(self, params: dict[str, Any], **_: Any) -> None:
        import base64
        import json

        body = json.loads(params["body"])
        entries = [base64.b64decode(r["Data"]) for r in body["Records"]]
        self.calls.append([(str(unwrap(e)[0]), e) for e in entries])


@pytest.fixture
def stream(kinesis: Any) -> Any:
    make_stream(kinesis)
    return kinesis


def test_1200_events_are_stored_once_each_with_their_ids(stream: Any) -> None:
    events = numbered(1200)
    result = Producer(stream, STREAM, FAST).put(events)

    assert result.calls == 3
    assert result.retried_entries == 0
    assert len(result.event_ids) == len(set(result.event_ids)) == 1200
    records = read_stream(stream)
    assert len(records) == 1200
    for shard_id, sequence, data in records:
        event_id, payload = unwrap(data)
        assert event_id is not None
        where = result.stored[event_id]
        assert (where.shard_id, where.sequence_number) == (shard_id, sequence)
        assert payload == events[result.event_ids.index(event_id)].data


def test_given_ids_are_kept_and_an_arn_is_accepted(stream: Any) -> None:
    arn = stream.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["StreamARN"]
    events = [Event(b"a", "k", event_id="order-1"), Event(b"b", "k", event_id="order-2")]

    result = Producer(stream, arn, FAST).put(events)

    assert result.event_ids == ("order-1", "order-2")
    assert copies_by_id(stream) == {"order-1": [b"a"], "order-2": [b"b"]}


def test_partial_failures_of_both_kinds_lose_nothing_and_keep_ids(stream: Any) -> None:
    faults = FaultInjector(seed=11).attach(stream)
    faults.drop_entries(entries=0.2, schedule=Probability(0.5))
    faults.fail_stored_entries(entries=0.1, code="InternalFailure")
    sent = SentEntries(stream)
    events = numbered(1200)

    result = Producer(stream, STREAM, FAST).put(events)

    flips = Counter(
        unwrap(e["Data"])[0]
        for e in injected_entries(faults.log, FaultKind.ENTRY_STORED_REPORTED_FAILED)
    )
    assert faults.injected[FaultKind.ENTRY_NOT_STORED] > 0
    assert faults.injected[FaultKind.ENTRY_STORED_REPORTED_FAILED] > 0
    copies = copies_by_id(stream)
    assert None not in copies, "a record without its event id reached the stream"
    assert set(copies) == set(result.event_ids) == set(result.stored)
    for event_id, event in zip(result.event_ids, events, strict=True):
        # Stored once, plus once more for every time it was stored but reported failed.
        assert copies[event_id] == [event.data] * (1 + flips[event_id])
    assert result.retried_entries == sum(faults.injected.values())

    # Every send of an event carried the same bytes, and the retries kept the input order.
    bytes_sent: dict[str, set[bytes]] = defaultdict(set)
    position = {event_id: n for n, event_id in enumerate(result.event_ids)}
    for call in sent.calls:
        for event_id, data in call:
            bytes_sent[event_id].add(data)
        order = [position[event_id] for event_id, _ in call]
        assert order == sorted(order)
    assert all(len(variants) == 1 for variants in bytes_sent.values())


def test_whole_call_throttling_and_refused_connections_are_survived(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.throttle("PutRecords", schedule=NextCalls(3))
    faults.disconnect("PutRecords", schedule=NextCalls(2))
    faults.fail("PutRecords", "ThrottlingException", schedule=NextCalls(1))

    result = Producer(stream, STREAM, FAST).put(numbered(700))

    assert result.calls == 2
    assert faults.calls["PutRecords"] == 2 + 6
    copies = copies_by_id(stream)
    assert len(copies) == 700
    assert all(len(payloads) == 1 for payloads in copies.values())


def test_a_lost_response_is_retried_and_the_copies_share_the_id(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.disconnect("PutRecords", schedule=NextCalls(1), after_send=True)

    result = Producer(stream, STREAM, FAST).put(numbered(10))

    copies = copies_by_id(stream)
    assert set(copies) == set(result.event_ids)
    assert all(len(payloads) == 2 for payloads in copies.values())


def test_an_oversize_record_is_refused_before_any_call(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    too_big = Event(b"x" * (MIB + 1 - HEADER_BYTES - len("big") - len("k")), "k", event_id="big")
    events = [*numbered(700), too_big]

    with pytest.raises(RecordTooLargeError) as caught:
        Producer(stream, STREAM, FAST).put(events)

    message = str(caught.value)
    assert "'big' (#700)" in message
    assert f"{MIB + 1} bytes" in message
    assert f"limit of {MIB} bytes" in message
    assert faults.calls["PutRecords"] == 0
    assert read_stream(stream) == []


def test_records_at_the_limits_are_accepted_by_the_service(stream: Any) -> None:
    # Exactly 1 MiB each with envelope and key; five fill a 5 MiB request exactly.
    key = "k" * 10
    data = b"x" * (MIB - HEADER_BYTES - len("id00") - len(key))
    events = [Event(data, key, event_id=f"id{n:02d}") for n in range(6)]

    result = Producer(stream, STREAM, FAST).put(events)

    assert result.calls == 2
    assert sorted(copies_by_id(stream)) == [f"id{n:02d}" for n in range(6)]


def test_entries_that_keep_failing_give_a_clear_error(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.drop_entries(entries=[0])
    config = ProducerConfig(
        max_batch_records=3,
        entry_retry=RetryConfig(max_attempts=3, initial_backoff_s=0.0, max_backoff_s=0.0),
    )
    events = [Event(b"%d" % i, "k", event_id=f"e{i}") for i in range(5)]

    with pytest.raises(PutRecordsFailedError) as caught:
        Producer(stream, STREAM, config).put(events)

    error = caught.value
    assert error.retryable
    assert isinstance(error, KinesisEOError)
    assert error.failures == {
        "e0": "ProvisionedThroughputExceededException",
        "e3": None,
        "e4": None,
    }
    assert "e0 (ProvisionedThroughputExceededException)" in str(error)
    assert "e3 (not sent)" in str(error)
    assert set(error.result.stored) == {"e1", "e2"}
    assert (error.result.calls, error.result.retried_entries) == (3, 2)
    assert sorted(copies_by_id(stream)) == ["e1", "e2"]


def test_a_call_that_keeps_failing_gives_the_same_error(stream: Any) -> None:
    FaultInjector().attach(stream).throttle("PutRecords")
    config = ProducerConfig(call_retry=RetryConfig(max_attempts=2, initial_backoff_s=0.0))

    with pytest.raises(PutRecordsFailedError) as caught:
        Producer(stream, STREAM, config).put([Event(b"a", "k", event_id="a")])

    assert caught.value.failures == {"a": "ProvisionedThroughputExceededException"}


def test_a_missing_stream_is_not_retried_as_a_failure(kinesis: Any) -> None:
    with pytest.raises(ResourceNotFoundError):
        Producer(kinesis, "nowhere", FAST).put(numbered(1))


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (Event(b"x", ""), "partition key"),
        (Event(b"x", "k" * 257), "partition key"),
        (Event("text", "k"), "data must be bytes"),  # type: ignore[arg-type]
        (Event(b"x", "k", explicit_hash_key="12a"), "explicit hash key"),
        (Event(b"x", "k", explicit_hash_key=str(2**128)), "explicit hash key"),
        (Event(b"x", "k", event_id=""), "event id"),
    ],
)
def test_invalid_events_are_refused_before_any_call(stream: Any, event: Event, match: str) -> None:
    faults = FaultInjector().attach(stream)
    with pytest.raises(InvalidRecordError, match=match):
        Producer(stream, STREAM, FAST).put([*numbered(3), event])
    assert faults.calls["PutRecords"] == 0


def test_unicode_keys_and_hash_keys_are_accepted(stream: Any) -> None:
    events = [Event(b"a", "é" * 256), Event(b"b", "k", explicit_hash_key=str(2**127))]
    Producer(stream, STREAM, FAST).put(events)
    assert sorted(p for ps in copies_by_id(stream).values() for p in ps) == [b"a", b"b"]
    # The top hash key is valid, though moto 5.2 has no shard for it (its ranges end exclusive).
    top = prepare_records([Event(b"c", "k", explicit_hash_key=str(2**128 - 1))], FAST)
    assert top[0].entry["ExplicitHashKey"] == str(2**128 - 1)


def test_the_same_id_twice_in_one_put_is_refused(stream: Any) -> None:
    with pytest.raises(InvalidRecordError, match="same id"):
        Producer(stream, STREAM, FAST).put([Event(b"a", "k", "x"), Event(b"b", "k", "x")])


def test_nothing_to_send_makes_no_call(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    result = Producer(stream, STREAM, FAST).put([])
    assert (result.event_ids, result.calls) == ((), 0)
    assert faults.calls["PutRecords"] == 0


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_records"):
        ProducerConfig(max_batch_records=0)
    with pytest.raises(ValueError, match="larger than max_batch_bytes"):
        ProducerConfig(max_record_bytes=2 * MIB, max_batch_bytes=MIB)


# --- async producer on the moto HTTP server ---------------------------------------------------


@pytest.mark.asyncio
async def test_async_producer_under_faults(
    moto_server_reset: MotoServer, async_client: Any
) -> None:
    sync = moto_server_reset.client("kinesis")
    make_stream(sync)
    events = numbered(800)
    async with async_client("kinesis", **moto_server_reset.client_kwargs()) as client:
        faults = FaultInjector(seed=5).attach(client)
        faults.throttle("PutRecords", schedule=NextCalls(2))
        faults.drop_entries(entries=0.2, schedule=Probability(0.5))
        faults.fail_stored_entries(entries=0.1)

        result = await AsyncProducer(client, STREAM, FAST).put(events)

    flips = Counter(
        unwrap(e["Data"])[0]
        for e in injected_entries(faults.log, FaultKind.ENTRY_STORED_REPORTED_FAILED)
    )
    assert faults.injected[FaultKind.ERROR_RESPONSE] == 2
    assert faults.injected[FaultKind.ENTRY_NOT_STORED] > 0
    assert flips
    copies = copies_by_id(sync)
    assert set(copies) == set(result.event_ids)
    for event_id, event in zip(result.event_ids, events, strict=True):
        assert copies[event_id] == [event.data] * (1 + flips[event_id])
