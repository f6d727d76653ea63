"""The event source mapping simulator's settings: what each changes in what the function gets."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kinesis_eo.on_failure import parse_on_failure
from kinesis_eo.testing.esm_filters import FilterCriteria
from kinesis_eo.testing.lambda_esm import (
    EsmConfig,
    EventSourceMapping,
    InvocationOutcome,
    StreamRecord,
    stream_arn,
)
from lambda_handlers import parse_event

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SHARD = "shardId-000000000000"


def at(seconds: float, n: int, data: bytes | None = None) -> StreamRecord:
    return StreamRecord(
        SHARD, str(n), f"k{n}", data or b"r-%d" % n, T0 + timedelta(seconds=seconds)
    )


def numbers(event: dict[str, Any]) -> list[str]:
    return [e["kinesis"]["sequenceNumber"] for e in event["Records"]]


class Recorder:
    def __init__(self, response: Any = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.response = response

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        if "window" in event:
            return {"state": {"seen": len(event["state"].get("seen", "")) * "x" + "x"}}
        return self.response

    @property
    def batches(self) -> list[list[str]]:
        return [numbers(e) for e in self.events if e["Records"]]


def test_a_batching_window_cuts_batches_where_records_arrive_later_than_it() -> None:
    records = [at(0, 1), at(1, 2), at(2, 3), at(10, 4), at(11, 5), at(30, 6)]
    recorder = Recorder()
    config = EsmConfig(batch_size=100, maximum_batching_window_s=5)
    EventSourceMapping(recorder, records, config=config).run()

    assert recorder.batches == [["1", "2", "3"], ["4", "5"], ["6"]]


def test_records_past_the_maximum_age_go_to_on_failure_without_an_invocation() -> None:
    records = [at(0, 1), at(1, 2), at(200, 3)]
    recorder = Recorder()
    config = EsmConfig(maximum_record_age_s=60)
    now = T0 + timedelta(seconds=230)
    esm = EventSourceMapping(recorder, records, config=config, clock=lambda: now)
    esm.run()

    assert recorder.batches == [["3"]]
    (document,) = esm.on_failure
    assert document["requestContext"]["condition"] == "RecordAgeExceeded"
    assert "functionError" not in document["responseContext"]
    batch = document["KinesisBatchInfo"]
    assert batch["approximateArrivalOfFirstRecord"] == "2026-01-01T12:00:00.000Z"
    assert batch["approximateArrivalOfLastRecord"] == "2026-01-01T12:00:01.000Z"
    info = parse_on_failure(json.dumps(document))
    assert (info.start, info.end, info.batch_size, info.condition) == (
        "1",
        "2",
        2,
        "RecordAgeExceeded",
    )
    assert info.stream_arn == esm.stream_arn


def test_retries_exhausted_send_the_on_failure_record_redrive_reads() -> None:
    def always_reports_the_second(event: dict[str, Any], context: Any) -> Any:
        return {"batchItemFailures": [{"itemIdentifier": "2"}] if "2" in numbers(event) else []}

    config = EsmConfig(batch_size=3, maximum_retry_attempts=2)
    esm = EventSourceMapping(
        always_reports_the_second, [at(n, n) for n in range(1, 4)], config=config
    )
    esm.run()

    (document,) = esm.on_failure
    assert set(document) == {
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    }
    assert document["requestContext"]["functionArn"].startswith("arn:aws:lambda:")
    assert document["requestContext"]["approximateInvokeCount"] == 3
    assert parse_on_failure(json.dumps(document)).condition == "RetryAttemptsExhausted"
    assert document["KinesisBatchInfo"]["startSequenceNumber"] == "2"


def test_at_timestamp_starts_at_the_first_record_that_arrived_at_or_after_it() -> None:
    recorder = Recorder()
    config = EsmConfig(
        starting_position="AT_TIMESTAMP", starting_position_timestamp=T0 + timedelta(seconds=2)
    )
    EventSourceMapping(recorder, [at(n, n) for n in range(5)], config=config).run()

    assert recorder.batches == [["2", "3", "4"]]


def test_latest_delivers_only_records_that_arrive_after_the_mapping_is_made() -> None:
    recorder = Recorder()
    config = EsmConfig(starting_position="LATEST")
    made = T0 + timedelta(seconds=3)
    EventSourceMapping(
        recorder, [at(n, n) for n in range(6)], config=config, clock=lambda: made
    ).run()

    assert recorder.batches == [["3", "4", "5"]]


def orders() -> list[StreamRecord]:
    docs = [
        {"id": "a1", "kind": "order", "amount": 5},
        {"id": "a2", "kind": "refund", "amount": 50},
        {"id": "b3", "kind": "order", "amount": 500, "vip": True},
        {"id": "b4", "kind": "order"},
    ]
    records = [at(n, n, json.dumps(doc).encode()) for n, doc in enumerate(docs, start=1)]
    return [*records, at(5, 5, b"not json")]


@pytest.mark.parametrize(
    ("pattern", "delivered"),
    [
        ({"data": {"kind": ["order"]}}, ["1", "3", "4"]),
        ({"data": {"id": [{"prefix": "b"}]}}, ["3", "4"]),
        ({"data": {"amount": [{"numeric": [">", 10, "<=", 500]}]}}, ["2", "3"]),
        ({"data": {"vip": [{"exists": True}]}}, ["3"]),
        ({"data": {"amount": [{"exists": False}]}}, ["4"]),
        ({"data": {"kind": [{"anything-but": ["order"]}]}}, ["2"]),
        ({"data": {"kind": ["refund"], "amount": [50]}}, ["2"]),
    ],
)
def test_filter_criteria_deliver_matching_records_and_pass_over_the_rest(
    pattern: dict[str, Any], delivered: list[str]
) -> None:
    recorder = Recorder()
    config = EsmConfig(filters=(json.dumps(pattern),))
    esm = EventSourceMapping(recorder, orders(), config=config)
    esm.run()

    assert recorder.batches == [delivered]
    assert esm.done
    assert sorted(r.sequence_number for r in esm.filtered) == sorted(
        {"1", "2", "3", "4", "5"} - set(delivered)
    )


def test_a_kinesis_filter_names_data_only() -> None:
    with pytest.raises(ValueError, match="'data' only"):
        FilterCriteria([{"partitionKey": ["k1"]}])


def test_tumbling_windows_cut_batches_pass_state_and_end_with_a_final_invocation() -> None:
    records = [at(5, 1), at(20, 2), at(59, 3), at(60, 4), at(100, 5)]
    recorder = Recorder()
    esm = EventSourceMapping(recorder, records, config=EsmConfig(tumbling_window_s=60))
    esm.run()

    shape = [
        (numbers(e), e["window"]["start"], e["state"], e["isFinalInvokeForWindow"])
        for e in recorder.events
    ]
    assert shape == [
        (["1", "2", "3"], "2026-01-01T12:00:00Z", {}, False),
        ([], "2026-01-01T12:00:00Z", {"seen": "x"}, True),
        (["4", "5"], "2026-01-01T12:01:00Z", {}, False),
        ([], "2026-01-01T12:01:00Z", {"seen": "x"}, True),
    ]
    assert all(e["shardId"] == SHARD and e["eventSourceARN"] == esm.arn for e in recorder.events)
    assert recorder.events[0]["window"]["end"] == "2026-01-01T12:01:00Z"


def test_a_window_response_without_state_fails_the_batch() -> None:
    invocations = EventSourceMapping(
        lambda event, context: {"batchItemFailures": []},
        [at(1, 1)],
        config=EsmConfig(tumbling_window_s=60, maximum_retry_attempts=0),
    ).run()

    assert invocations[0].outcome is InvocationOutcome.INVALID_RESPONSE


def test_a_failed_invocation_replays_its_records_into_the_state_before_it() -> None:
    calls: list[tuple[list[str], Any]] = []

    def crash_once(event: dict[str, Any], context: Any) -> Any:
        calls.append((numbers(event), event["state"]))
        if len(calls) == 2:
            raise TimeoutError("lost")
        return {"state": {"upto": numbers(event)[-1] if event["Records"] else None}}

    config = EsmConfig(batch_size=2, tumbling_window_s=60, bisect_on_function_error=False)
    EventSourceMapping(crash_once, [at(n, n) for n in range(1, 5)], config=config).run()

    assert calls[1:3] == [(["3", "4"], {"upto": "2"}), (["3", "4"], {"upto": "2"})]


def test_a_consumer_arn_is_the_events_source_and_names_the_stream() -> None:
    consumer = f"{stream_arn('orders')}/consumer/lambda:1700000000"
    recorder = Recorder()
    EventSourceMapping(recorder, [at(1, 1)], stream="orders", consumer_arn=consumer).run()

    (event,) = recorder.events
    assert event["Records"][0]["eventSourceARN"] == consumer
    (delivery,) = parse_event(event)
    assert delivery.stream == "orders"
    assert base64.b64decode(event["Records"][0]["kinesis"]["data"]) == b"r-1"
    with pytest.raises(ValueError, match="not a consumer of"):
        EventSourceMapping(recorder, [], stream="payments", consumer_arn=consumer)


def test_a_state_over_one_megabyte_ends_the_window_early_and_it_goes_on_afresh() -> None:
    events: list[dict[str, Any]] = []

    def hoarder(event: dict[str, Any], context: Any) -> Any:
        events.append(event)
        big = "x" * 1_100_000 if "1" in numbers(event) else "small"
        return {"state": {"blob": big}}

    config = EsmConfig(batch_size=1, tumbling_window_s=60)
    EventSourceMapping(hoarder, [at(1, 1), at(2, 2)], config=config).run()

    shape = [
        (
            numbers(e),
            e["isFinalInvokeForWindow"],
            e["isWindowTerminatedEarly"],
            len(str(e["state"])),
        )
        for e in events
    ]
    assert [s[:3] for s in shape] == [
        (["1"], False, False),
        ([], True, True),
        (["2"], False, False),
        ([], True, False),
    ]
    assert shape[2][3] == 2  # the rest of the window starts from an empty state
