"""Tumbling windows exactly once: each record folded once, each window's aggregate applied once.

The ledger and the aggregate's table are on moto (real conditions and
transactions); deliveries come from the event source mapping simulator,
which redelivers failed records into the state as the mapping does.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kinesis_eo.deadletter import DeadLetterReason
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    MemoryLedgerStore,
    MemoryWrite,
    create_ledger_table,
)
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import update
from kinesis_eo.testing.effects import create_effects_table, scan_table
from kinesis_eo.testing.fakes import MemoryDeadLetters
from kinesis_eo.testing.lambda_esm import (
    EsmConfig,
    EventSourceMapping,
    FakeContext,
    InvocationOutcome,
    StreamRecord,
    kinesis_event,
    read_stream,
    stream_arn,
)
from lambda_handlers import (
    AsyncKinesisHandler,
    KinesisHandler,
    LambdaConfig,
    TumblingWindow,
    WindowInfo,
    WindowStateTooLargeError,
    exactly_once,
)
from tests.streams import make_stream

QUICK = RetryConfig(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.01)
WINDOW_S = 60
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SHARD = "shardId-000000000000"


@pytest.fixture
def tables(dynamodb: Any) -> Any:
    create_ledger_table(dynamodb, "ledger")
    create_effects_table(dynamodb, "totals")
    return dynamodb


def ledger() -> Ledger:
    return Ledger(DynamoDBLedgerStore("ledger", QUICK), LedgerConfig("totals"))


def amounts(n: int) -> int:
    return n * 10


def records(count: int, per_window: int = 10) -> list[StreamRecord]:
    """``count`` records, ``per_window`` of them in each 60 s window from T0."""
    return [
        StreamRecord(
            SHARD,
            str(n),
            f"key-{n % 3}",
            json.dumps({"n": n, "amount": amounts(n)}).encode(),
            T0 + timedelta(seconds=WINDOW_S * ((n - 1) // per_window) + (n - 1) % per_window),
        )
        for n in range(1, count + 1)
    ]


def expected(count: int, per_window: int = 10) -> dict[str, int]:
    totals: dict[str, int] = {}
    for n in range(1, count + 1):
        start = T0 + timedelta(seconds=WINDOW_S * ((n - 1) // per_window))
        key = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        totals[key] = totals.get(key, 0) + amounts(n)
    return totals


def add_amounts(total: Any, batch: list[Record]) -> Any:
    return {"sum": total.get("sum", 0) + sum(json.loads(r.data)["amount"] for r in batch)}


def write_total(total: Any, window: WindowInfo) -> list[Any]:
    # Not idempotent on its own: ADD makes a second application show.
    return [
        update(
            "totals",
            {"id": window.start},
            "ADD amount_total :t, applied :one",
            values={":t": total["sum"], ":one": 1},
        )
    ]


def totals(dynamodb: Any) -> dict[str, tuple[int, int]]:
    return {
        item["id"]["S"]: (int(item["amount_total"]["N"]), int(item["applied"]["N"]))
        for item in scan_table(dynamodb, "totals")
    }


def window_handler(dynamodb: Any, fold: Any = add_amounts) -> KinesisHandler:
    window = TumblingWindow(fold, write_total)
    return KinesisHandler(ledger=ledger(), dynamodb=dynamodb, window=window)


class Flaky:
    """Wraps a handler: raises after some invocations ran, as a timeout or crash would."""

    def __init__(self, inner: Any, crash_after: set[int], crash_before: set[int]) -> None:
        self.inner, self.calls = inner, 0
        self.crash_after, self.crash_before = crash_after, crash_before

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.calls += 1
        if self.calls in self.crash_before:
            raise TimeoutError("the invocation timed out before it started")
        response = self.inner(event, context)
        if self.calls in self.crash_after:
            raise TimeoutError("the invocation timed out after its work was done")
        return response


def test_a_windows_aggregate_is_applied_once_under_redelivery_and_bisection(tables: Any) -> None:
    failed: dict[int, int] = {7: 0, 23: 0}

    def fold_failing_in_the_first_delivery_of_7_and_23(total: Any, batch: list[Record]) -> Any:
        for record in batch:
            n = json.loads(record.data)["n"]
            # Two calls fail: the whole batch's, then the record's own.
            if n in failed and failed[n] < 2:
                failed[n] += 1
                raise ValueError(f"record {n} cannot be folded yet")
        return add_amounts(total, batch)

    inner = window_handler(tables, fold_failing_in_the_first_delivery_of_7_and_23)
    # Crashes after the work: a batch's fold is returned, then lost (the mapping
    # bisects and replays it into the old state); a final invocation's aggregate
    # is committed, then the mapping retries the final invocation.
    handler = Flaky(inner, crash_after={2, 5, 9, 14}, crash_before={11})
    esm = EventSourceMapping(
        handler,
        records(40),
        config=EsmConfig(batch_size=6, tumbling_window_s=WINDOW_S, bisect_on_function_error=True),
    )

    invocations = esm.run()

    outcomes = {i.outcome for i in invocations}
    assert {InvocationOutcome.PARTIAL_FAILURE, InvocationOutcome.FUNCTION_ERROR} <= outcomes
    finals = [i for i in invocations if i.final_for_window]
    assert any(i.outcome is not InvocationOutcome.SUCCESS for i in finals)
    assert any(len(i.sequence_numbers) < 6 and not i.final_for_window for i in invocations)
    assert max(esm.deliveries.values()) >= 2
    assert totals(tables) == {k: (v, 1) for k, v in expected(40).items()}


def test_a_fold_that_does_not_track_what_it_holds_counts_redelivered_records_twice() -> None:
    """The hazard the handler removes: the mapping keeps the state of a partly failed batch."""

    def naive(event: dict[str, Any], context: Any) -> Any:
        state = dict(event["state"]) or {"sum": 0}
        if event["isFinalInvokeForWindow"]:
            finals.append(state["sum"])
            return {"state": {}}
        numbers = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        state["sum"] += len(numbers)
        failed = [{"itemIdentifier": "3"}] if "3" in numbers and not retried else []
        retried.extend(failed)
        return {"state": state, "batchItemFailures": failed}

    finals: list[int] = []
    retried: list[Any] = []
    esm = EventSourceMapping(
        naive, records(5, per_window=5), config=EsmConfig(tumbling_window_s=WINDOW_S)
    )
    esm.run()

    assert finals == [8]  # 5 records, 3 of them counted twice


def test_a_poison_fold_keeps_what_came_before_it_and_reports_the_rest(tables: Any) -> None:
    def fold(total: Any, batch: list[Record]) -> Any:
        if any(json.loads(r.data)["n"] == 4 for r in batch):
            raise ValueError("never")
        return add_amounts(total, batch)

    event = kinesis_event(records(6, per_window=6), stream_arn("stream"))
    event |= {
        "window": {"start": "2026-01-01T12:00:00Z", "end": "2026-01-01T12:01:00Z"},
        "state": {},
        "shardId": SHARD,
        "isFinalInvokeForWindow": False,
        "isWindowTerminatedEarly": False,
    }
    response = window_handler(tables, fold)(event, FakeContext())

    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [
        str(n) for n in range(1, 7)
    ]
    assert response["state"]["value"] == {"sum": amounts(1) + amounts(2) + amounts(3)}
    # Delivered again into the state it returned, only records past 3 are folded.
    again = window_handler(tables, add_amounts)({**event, "state": response["state"]}, None)
    assert again["batchItemFailures"] == []
    assert again["state"]["value"] == {"sum": sum(amounts(n) for n in range(1, 7))}


def test_a_state_over_one_megabyte_is_refused(tables: Any) -> None:
    def hoard(total: Any, batch: list[Record]) -> Any:
        return {"blob": "x" * 1_100_000}

    event = kinesis_event(records(1), stream_arn("stream"))
    event |= {"window": {"start": "a", "end": "b"}, "state": {}, "isFinalInvokeForWindow": False}
    with pytest.raises(WindowStateTooLargeError, match="over the 1000000 bytes"):
        window_handler(tables, hoard)(event, None)


def test_window_and_plain_events_go_only_to_handlers_made_for_them(tables: Any) -> None:
    plain = kinesis_event(records(1), stream_arn("stream"))
    with pytest.raises(ConfigurationError, match="has no 'window'"):
        window_handler(tables)(plain, None)
    windowed = {**plain, "window": {"start": "a", "end": "b"}, "state": {}}
    record_handler = KinesisHandler(lambda r, c: [], ledger=ledger(), dynamodb=tables)
    with pytest.raises(ConfigurationError, match="TumblingWindowInSeconds"):
        record_handler(windowed, None)


def test_exactly_once_folds_windows_of_a_moto_stream(tables: Any, kinesis: Any) -> None:
    make_stream(kinesis, "orders", 1)
    for n in range(1, 31):
        body = json.dumps({"n": n, "amount": amounts(n)}).encode()
        kinesis.put_record(StreamName="orders", Data=body, PartitionKey=f"k{n}")

    @exactly_once(ledger=ledger(), dynamodb=tables, window_close=write_total)
    def handler(total: Any, batch: list[Record]) -> Any:
        return add_amounts(total, batch)

    flaky = Flaky(handler, crash_after={1, 3}, crash_before=set())
    config = EsmConfig(batch_size=7, tumbling_window_s=900)
    EventSourceMapping(flaky, read_stream(kinesis, "orders"), stream="orders", config=config).run()

    (total, applied), *others = totals(tables).values()
    # moto stamps arrival at put time: the records may straddle one window boundary.
    assert sum(t for t, _ in [(total, applied), *others]) == sum(amounts(n) for n in range(1, 31))
    assert {applied, *(a for _, a in others)} == {1}


def test_a_record_the_fold_never_takes_is_dead_lettered_and_the_window_moves_on(
    tables: Any,
) -> None:
    def fold(total: Any, batch: list[Record]) -> Any:
        if any(json.loads(r.data)["n"] == 4 for r in batch):
            raise ValueError("record 4 has no amount this fold understands")
        return add_amounts(total, batch)

    letters = MemoryDeadLetters()
    handler = KinesisHandler(
        ledger=ledger(),
        dynamodb=tables,
        dead_letters=letters,
        config=LambdaConfig(max_failed_deliveries=2),
        window=TumblingWindow(fold, write_total),
    )
    esm = EventSourceMapping(handler, records(8), config=EsmConfig(tumbling_window_s=WINDOW_S))
    esm.run()

    (letter,) = letters.letters
    assert (letter.record.sequence_number, letter.reason) == (
        "4",
        DeadLetterReason.PROCESSING_FAILED,
    )
    assert json.loads(letter.record.data)["n"] == 4
    assert esm.deliveries[(SHARD, "4")] == 2
    assert totals(tables) == {
        "2026-01-01T12:00:00Z": (sum(amounts(n) for n in range(1, 9)) - 40, 1)
    }


def test_the_async_handler_folds_windows_once_too() -> None:
    store = MemoryLedgerStore()
    applied: list[int] = []

    def close(total: Any, window: WindowInfo) -> list[Any]:
        return [MemoryWrite(lambda: applied.append(total["sum"]))]

    handler = AsyncKinesisHandler(
        ledger=Ledger(store, LedgerConfig("totals")),
        dynamodb=None,
        window=TumblingWindow(add_amounts, close),
    )
    sync = Flaky(lambda e, c: asyncio.run(handler(e, c)), crash_after={2, 4}, crash_before=set())
    config = EsmConfig(batch_size=4, tumbling_window_s=WINDOW_S)
    EventSourceMapping(sync, records(10, per_window=10), config=config).run()

    assert applied == [sum(amounts(n) for n in range(1, 11))]
