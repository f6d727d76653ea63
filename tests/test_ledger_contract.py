"""One contract for every ledger store: the in-memory store and DynamoDB (on moto) must agree.

Each test runs twice, once per store, through the public Ledger API.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from kinesis_eo.flow import run_sync
from kinesis_eo.ledger import (
    ClaimLostError,
    ClaimOutcome,
    DynamoDBLedgerStore,
    Entry,
    ExpiredClaimPolicy,
    FencedError,
    Ledger,
    LedgerConfig,
    LedgerMode,
    LedgerStore,
    MemoryLedgerStore,
    MemoryWrite,
    PayloadMismatchError,
    create_ledger_table,
)
from kinesis_eo.ledger.model import Absent, Increment, LedgerConflict
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.testing.effects import create_effects_table, scan_table

RETRY = RetryConfig(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.01)


@dataclass
class Backend:
    """A ledger store and how to run its flows; ``client`` is None for the in-memory store."""

    store: LedgerStore
    client: Any
    sink: dict[str, Any]

    def run(self, flow: Any) -> Any:
        return run_sync(flow, self.client, RETRY)

    def sink_write(self, key: str, value: Any) -> Any:
        """A sink write in the store's own form, putting ``value`` under ``key`` in the sink."""
        if self.client is None:
            return MemoryWrite(lambda: self.sink.__setitem__(key, value), item=key)
        return {
            "Put": {"TableName": "sink", "Item": {"id": {"S": key}, "value": {"S": str(value)}}}
        }

    def counter_write(self, key: str) -> Any:
        """An increment of the sink item ``key`` (not idempotent: applied twice shows 2)."""
        if self.client is None:
            return MemoryWrite(
                lambda: self.sink.__setitem__(key, self.sink.get(key, 0) + 1), item=key
            )
        return {
            "Update": {
                "TableName": "sink",
                "Key": {"id": {"S": key}},
                "UpdateExpression": "ADD hits :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }

    def counter(self, key: str) -> int:
        if self.client is None:
            return int(self.sink.get(key, 0))
        item = self.client.get_item(TableName="sink", Key={"id": {"S": key}}).get("Item", {})
        return int(item.get("hits", {"N": "0"})["N"])

    def failing_sink_write(self, key: str) -> Any:
        """A sink write whose own condition fails (the sink item must not exist, and it does)."""
        if self.client is None:
            self.sink[key] = "present"
            return MemoryWrite(lambda: None, check=lambda: key not in self.sink)
        self.client.put_item(TableName="sink", Item={"id": {"S": key}, "value": {"S": "present"}})
        return {
            "Put": {
                "TableName": "sink",
                "Item": {"id": {"S": key}, "value": {"S": "again"}},
                "ConditionExpression": "attribute_not_exists(id)",
            }
        }

    def guard(self, holds: bool) -> Any:
        """A fencing check that holds or fails."""
        if self.client is None:
            return MemoryWrite(lambda: None, check=lambda: holds)
        return {
            "ConditionCheck": {
                "TableName": "sink",
                "Key": {"id": {"S": "lease"}},
                "ConditionExpression": "attribute_exists(id)"
                if holds
                else "attribute_not_exists(id)",
            }
        }

    def invalid_write(self, key: str) -> Any:
        """A sink write the store refuses whole, as DynamoDB refuses a malformed update."""
        if self.client is None:
            return MemoryWrite(lambda: None, item=key, invalid="a malformed update")
        return {
            "Update": {
                "TableName": "sink",
                "Key": {"id": {"S": key}},
                "UpdateExpression": "SET SET hits = :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }

    def sink_keys(self) -> set[str]:
        if self.client is None:
            return set(self.sink)
        return {i["id"]["S"] for i in scan_table(self.client, "sink")} - {"lease"}


@pytest.fixture(params=["memory", "dynamodb"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend(MemoryLedgerStore(), None, {})
        return
    dynamodb = request.getfixturevalue("dynamodb")
    create_ledger_table(dynamodb, "ledger")
    create_effects_table(dynamodb, "sink")
    dynamodb.put_item(TableName="sink", Item={"id": {"S": "lease"}})
    yield Backend(DynamoDBLedgerStore("ledger", RETRY), dynamodb, {})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def ledger(backend: Backend, mode: LedgerMode, clock: FakeClock | None = None, **kw: Any) -> Ledger:
    config = LedgerConfig(consumer_group="g", mode=mode, **kw)
    return Ledger(backend.store, config, clock or FakeClock())


def record(
    seq: int, data: bytes | None = None, event_id: str | None = None, shard: str = "s-0"
) -> Record:
    return Record(
        stream="orders",
        shard_id=shard,
        sequence_number=str(seq),
        partition_key="pk",
        data=data if data is not None else f"payload-{seq}".encode(),
        event_id=event_id,
    )


def entries(backend: Backend, records: list[Record]) -> list[Entry]:
    return [
        Entry(r, [backend.sink_write(f"{r.shard_id}/{r.sequence_number}", r.data)]) for r in records
    ]


# --- watermark mode ----------------------------------------------------------------------------


def test_watermark_commit_then_replay_marks_every_record_a_duplicate(backend: Backend) -> None:
    batch = [record(i) for i in range(1, 11)]

    first = backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, batch)))
    replay = backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, batch)))

    assert first.committed == batch
    assert first.writes == 1
    assert replay.committed == []
    assert replay.duplicates == batch
    assert len(backend.sink_keys()) == 10


def test_watermark_screen_sorts_a_batch_against_the_stored_watermark(backend: Backend) -> None:
    backend.run(
        ledger(backend, LedgerMode.WATERMARK).commit(
            entries(backend, [record(i) for i in range(1, 6)])
        )
    )

    screened = backend.run(
        ledger(backend, LedgerMode.WATERMARK).screen([record(i) for i in range(3, 9)])
    )

    assert [r.sequence_number for r in screened.duplicates] == ["3", "4", "5"]
    assert [r.sequence_number for r in screened.new] == ["6", "7", "8"]


def test_watermark_compares_positions_numerically_not_as_text(backend: Backend) -> None:
    # "10" sorts before "9" as text; the ledger stores fixed-width keys.
    backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, [record(9)])))

    result = backend.run(
        ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, [record(10)]))
    )

    assert [r.sequence_number for r in result.committed] == ["10"]


def test_watermark_partial_replay_commits_only_what_is_past_the_mark(backend: Backend) -> None:
    backend.run(
        ledger(backend, LedgerMode.WATERMARK).commit(
            entries(backend, [record(i) for i in range(1, 6)])
        )
    )

    # A second consumer that never saw the mark replays 3..8.
    result = backend.run(
        ledger(backend, LedgerMode.WATERMARK).commit(
            entries(backend, [record(i) for i in range(3, 9)])
        )
    )

    assert [r.sequence_number for r in result.duplicates] == ["3", "4", "5"]
    assert [r.sequence_number for r in result.committed] == ["6", "7", "8"]
    assert len(backend.sink_keys()) == 8


def test_watermark_batches_larger_than_a_transaction_commit_in_chained_chunks(
    backend: Backend,
) -> None:
    batch = [record(i) for i in range(1, 251)]

    result = backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, batch)))

    # 98 records + 1 mark per transaction, one slot kept for the fencing check.
    assert result.writes == 3
    assert result.committed == batch
    assert len(backend.sink_keys()) == 250


def test_watermark_crash_between_chunks_resumes_with_the_next_chunk(backend: Backend) -> None:
    batch = [record(i) for i in range(1, 201)]
    backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, batch[:98])))

    result = backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, batch)))

    assert result.duplicates == batch[:98]
    assert result.committed == batch[98:]
    assert len(backend.sink_keys()) == 200


def test_after_a_watermark_conflict_queued_chunks_under_the_stored_mark_are_not_sent(
    backend: Backend,
) -> None:
    batch = [record(i) for i in range(1, 301)]
    backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, batch[:250])))
    sent: list[int] = []
    apply = backend.store.apply

    def counting(ops: Any, extra: Any = ()) -> Any:
        sent.append(len(extra))
        return (yield from apply(ops, extra))

    backend.store.apply = counting  # type: ignore[method-assign]

    # A second owner that never saw the mark commits 1..300 in chunks of 98.
    result = backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, batch)))

    assert result.duplicates == batch[:250]
    assert result.committed == batch[250:]
    # The first chunk's condition fails and tells the mark (250); the second chunk
    # (99..196) is dropped unsent, the third goes without its covered head.
    assert sent == [98, 44, 6]
    assert len(backend.sink_keys()) == 300


def test_a_refused_sink_write_holds_back_the_rest_so_the_watermark_does_not_pass_it(
    backend: Backend,
) -> None:
    batch = [record(i) for i in range(1, 6)]
    work = entries(backend, batch)
    work[2] = Entry(batch[2], [backend.failing_sink_write("refused")])

    result = backend.run(ledger(backend, LedgerMode.WATERMARK).commit(work))

    assert result.committed == batch[:2]
    assert [r for r, _ in result.rejected] == [batch[2]]
    assert [e.record for e in result.held_back] == batch[3:]
    # The rejected record, once dead-lettered, is marked and the rest follow.
    again = backend.run(
        ledger(backend, LedgerMode.WATERMARK).commit([Entry(batch[2]), *result.held_back])
    )
    assert again.committed == batch[2:]


def test_a_refused_write_last_in_its_transaction_still_holds_back_the_next_transactions(
    backend: Backend,
) -> None:
    # Transactions of 3 records: the refused record ends the second one. The third
    # and fourth once went on past it, and the watermark passed a record never applied.
    batch = [record(i) for i in range(1, 13)]
    work = entries(backend, batch)
    work[5] = Entry(batch[5], [backend.failing_sink_write("refused")])
    small = ledger(backend, LedgerMode.WATERMARK, max_transaction_items=5)

    result = backend.run(small.commit(work))

    assert result.committed == batch[:5]
    assert [r for r, _ in result.rejected] == [batch[5]]
    assert [e.record for e in result.held_back] == batch[6:]
    again = backend.run(small.commit([Entry(batch[5]), *result.held_back]))
    assert again.committed == batch[5:]
    assert again.duplicates == []


def test_a_failed_fencing_check_refuses_the_whole_commit(backend: Backend) -> None:
    with pytest.raises(FencedError):
        backend.run(
            ledger(backend, LedgerMode.WATERMARK).commit(
                entries(backend, [record(1), record(2)]), guards=[backend.guard(holds=False)]
            )
        )
    assert backend.sink_keys() == set()

    ok = backend.run(
        ledger(backend, LedgerMode.WATERMARK).commit(
            entries(backend, [record(1), record(2)]), guards=[backend.guard(holds=True)]
        )
    )
    assert len(ok.committed) == 2


def test_watermark_commit_refuses_records_of_two_shards(backend: Backend) -> None:
    with pytest.raises(ValueError, match="one shard"):
        backend.run(
            ledger(backend, LedgerMode.WATERMARK).commit(
                [Entry(record(1, shard="a")), Entry(record(2, shard="b"))]
            )
        )


# --- per-record mode ---------------------------------------------------------------------------


def test_inbound_duplicates_under_different_sequence_numbers_commit_once(backend: Backend) -> None:
    original = record(1, b"order 7", event_id="e-7")
    resent = record(5, b"order 7", event_id="e-7")
    other = record(6, b"order 8", event_id="e-8")

    result = backend.run(
        ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, [original, resent, other]))
    )
    later = backend.run(ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, [resent])))

    assert result.committed == [original, other]
    assert result.duplicates == [resent]
    assert later.duplicates == [resent]
    assert backend.sink_keys() == {"s-0/1", "s-0/6"}


def test_per_record_screen_finds_committed_keys_without_writing(backend: Backend) -> None:
    backend.run(
        ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, [record(1, event_id="a")]))
    )

    screened = backend.run(
        ledger(backend, LedgerMode.PER_RECORD).screen(
            [record(7, event_id="a", data=b"payload-1"), record(8, event_id="b")]
        )
    )

    assert [r.event_id for r in screened.duplicates] == ["a"]
    assert [r.event_id for r in screened.new] == ["b"]


def test_same_key_with_a_different_payload_is_reported_never_applied(backend: Backend) -> None:
    backend.run(
        ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, [record(1, b"one", "k")]))
    )

    clash = record(2, b"two", "k")
    result = backend.run(ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, [clash])))
    screened = backend.run(ledger(backend, LedgerMode.PER_RECORD).screen([clash]))

    assert result.committed == []
    assert [m.record for m in result.mismatched] == [clash]
    assert "two events share an id" in str(result.mismatched[0])
    assert [m.record for m in screened.mismatched] == [clash]
    assert backend.sink_keys() == {"s-0/1"}


def test_per_record_out_of_order_commits_are_all_kept(backend: Backend) -> None:
    # Lambda with ParallelizationFactor > 1 can finish later records first.
    backend.run(ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, [record(9)])))

    result = backend.run(
        ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, [record(3)]))
    )

    assert [r.sequence_number for r in result.committed] == ["3"]


def test_per_record_batches_split_into_transactions_and_skip_known_records(
    backend: Backend,
) -> None:
    batch = [record(i, event_id=f"e{i}") for i in range(1, 121)]
    backend.run(ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, batch[50:60])))

    result = backend.run(ledger(backend, LedgerMode.PER_RECORD).commit(entries(backend, batch)))

    assert result.duplicates == batch[50:60]
    assert sorted(result.committed, key=lambda r: int(r.sequence_number)) == batch[:50] + batch[60:]
    assert len(backend.sink_keys()) == 120


def test_a_record_with_too_many_writes_for_one_transaction_is_refused_as_invalid_not_lost(
    backend: Backend,
) -> None:
    big = record(1, event_id="big")
    writes = [backend.sink_write(f"big/{i}", i) for i in range(99)]

    result = backend.run(ledger(backend, LedgerMode.PER_RECORD).commit([Entry(big, writes)]))

    assert result.committed == []
    assert [r for r, _ in result.invalid] == [big]


# --- claim, act, complete ----------------------------------------------------------------------


def test_claim_complete_then_another_claim_sees_it_done(backend: Backend) -> None:
    led = ledger(backend, LedgerMode.PER_RECORD)
    r = record(1, event_id="mail-1")

    assert (
        backend.run(led.claim(r, "w1", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN))
        is ClaimOutcome.ACQUIRED
    )
    backend.run(led.complete(r, "w1"))

    assert (
        backend.run(led.claim(r, "w2", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN))
        is ClaimOutcome.DONE
    )


def test_a_live_claim_is_held_against_other_owners(backend: Backend) -> None:
    led = ledger(backend, LedgerMode.PER_RECORD)
    r = record(1, event_id="mail-2")
    backend.run(led.claim(r, "w1", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN))

    assert (
        backend.run(led.claim(r, "w2", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN))
        is ClaimOutcome.HELD
    )
    with pytest.raises(ClaimLostError):
        backend.run(led.complete(r, "w2"))


def test_an_expired_claim_is_run_again_under_the_run_again_policy(backend: Backend) -> None:
    clock = FakeClock()
    led = ledger(backend, LedgerMode.PER_RECORD, clock)
    r = record(1, event_id="mail-3")
    backend.run(led.claim(r, "w1", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN))
    clock.now += 31

    assert (
        backend.run(led.claim(r, "w2", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN))
        is ClaimOutcome.ACQUIRED
    )
    with pytest.raises(ClaimLostError):
        backend.run(led.complete(r, "w1"))  # the zombie cannot complete
    backend.run(led.complete(r, "w2"))


def test_an_expired_claim_is_quarantined_under_the_quarantine_policy(backend: Backend) -> None:
    clock = FakeClock()
    led = ledger(backend, LedgerMode.PER_RECORD, clock)
    r = record(1, event_id="charge-1")
    backend.run(led.claim(r, "w1", timedelta(seconds=30), ExpiredClaimPolicy.QUARANTINE))
    clock.now += 31

    outcome = backend.run(led.claim(r, "w2", timedelta(seconds=30), ExpiredClaimPolicy.QUARANTINE))

    assert outcome is ClaimOutcome.QUARANTINED
    assert (
        backend.run(led.claim(r, "w3", timedelta(seconds=30), ExpiredClaimPolicy.QUARANTINE))
        is ClaimOutcome.DONE
    )


def test_a_heartbeat_keeps_a_long_effect_claimed(backend: Backend) -> None:
    clock = FakeClock()
    led = ledger(backend, LedgerMode.PER_RECORD, clock)
    r = record(1, event_id="long-1")
    backend.run(led.claim(r, "w1", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN))
    clock.now += 25
    backend.run(led.heartbeat(r, "w1", timedelta(seconds=30)))
    clock.now += 25

    assert (
        backend.run(led.claim(r, "w2", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN))
        is ClaimOutcome.HELD
    )
    backend.run(led.complete(r, "w1"))


def test_release_lets_the_record_be_claimed_again_at_once(backend: Backend) -> None:
    led = ledger(backend, LedgerMode.PER_RECORD)
    r = record(1, event_id="retry-1")
    backend.run(led.claim(r, "w1", timedelta(seconds=30), ExpiredClaimPolicy.QUARANTINE))
    backend.run(led.release(r, "w1"))

    assert (
        backend.run(led.claim(r, "w2", timedelta(seconds=30), ExpiredClaimPolicy.QUARANTINE))
        is ClaimOutcome.ACQUIRED
    )


def test_claiming_a_key_with_another_payload_is_a_clear_error(backend: Backend) -> None:
    led = ledger(backend, LedgerMode.PER_RECORD)
    backend.run(
        led.claim(
            record(1, b"a", "same"), "w1", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN
        )
    )

    with pytest.raises(PayloadMismatchError):
        backend.run(
            led.claim(
                record(2, b"b", "same"), "w2", timedelta(seconds=30), ExpiredClaimPolicy.RUN_AGAIN
            )
        )


def test_consumer_groups_do_not_see_each_others_marks(backend: Backend) -> None:
    backend.run(ledger(backend, LedgerMode.PER_RECORD).commit([Entry(record(1, event_id="x"))]))
    other = Ledger(
        backend.store,
        replace(LedgerConfig(consumer_group="other", mode=LedgerMode.PER_RECORD)),
        FakeClock(),
    )

    assert backend.run(other.screen([record(1, event_id="x")])).new == [record(1, event_id="x")]


def test_a_replay_starting_exactly_at_the_watermark_skips_that_record(backend: Backend) -> None:
    backend.run(ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, [record(5)])))

    result = backend.run(
        ledger(backend, LedgerMode.WATERMARK).commit(entries(backend, [record(5), record(6)]))
    )

    assert [r.sequence_number for r in result.duplicates] == ["5"]
    assert [r.sequence_number for r in result.committed] == ["6"]


@pytest.mark.parametrize("mode", [LedgerMode.WATERMARK, LedgerMode.PER_RECORD])
def test_records_that_change_the_same_sink_item_commit_in_separate_transactions(
    backend: Backend, mode: LedgerMode
) -> None:
    batch = [record(i, event_id=f"c{i}") for i in range(1, 7)]
    work = [Entry(r, [backend.counter_write("account-1")]) for r in batch]

    result = backend.run(ledger(backend, mode).commit(work))
    replay = backend.run(ledger(backend, mode).commit(work))

    assert result.committed == batch
    assert result.writes == 6
    assert replay.committed == []
    assert backend.counter("account-1") == 6


def test_a_record_whose_own_writes_change_one_item_twice_is_refused_as_invalid(
    backend: Backend,
) -> None:
    batch = [record(i) for i in range(1, 4)]
    work = entries(backend, batch)
    work[1] = Entry(batch[1], [backend.counter_write("x"), backend.counter_write("x")])

    result = backend.run(ledger(backend, LedgerMode.WATERMARK).commit(work))

    assert result.committed == batch[:1]
    assert [r for r, _ in result.invalid] == [batch[1]]
    assert [e.record for e in result.held_back] == batch[2:]


@pytest.mark.parametrize("culprit", [0, 17, 59])
def test_an_invalid_write_refuses_only_its_record_and_the_watermark_stops_before_it(
    backend: Backend, culprit: int
) -> None:
    batch = [record(i) for i in range(1, 61)]
    work = entries(backend, batch)
    work[culprit] = Entry(batch[culprit], [backend.invalid_write(f"k-{culprit}")])

    result = backend.run(ledger(backend, LedgerMode.WATERMARK).commit(work))

    assert result.committed == batch[:culprit]
    assert [r for r, _ in result.invalid] == [batch[culprit]]
    assert [e.record for e in result.held_back] == batch[culprit + 1 :]
    assert backend.sink_keys() == {f"{r.shard_id}/{r.sequence_number}" for r in batch[:culprit]}


def test_invalid_writes_in_a_per_record_batch_leave_every_other_record_committed(
    backend: Backend,
) -> None:
    batch = [record(i, event_id=f"e-{i}") for i in range(1, 41)]
    work = entries(backend, batch)
    for bad in (3, 30):
        work[bad] = Entry(batch[bad], [backend.invalid_write(f"k-{bad}")])

    result = backend.run(ledger(backend, LedgerMode.PER_RECORD).commit(work))

    assert sorted((r for r, _ in result.invalid), key=lambda r: r.position) == [batch[3], batch[30]]
    good = [r for i, r in enumerate(batch) if i not in (3, 30)]
    assert sorted(result.committed, key=lambda r: r.position) == good
    assert backend.sink_keys() == {f"{r.shard_id}/{r.sequence_number}" for r in good}


# --- counting ----------------------------------------------------------------------------------


def test_an_increment_counts_from_an_absent_item_and_sets_its_values(backend: Backend) -> None:
    backend.run(backend.store.apply([Increment("count#a", "hits", 1, {"note": "first"})]))
    backend.run(backend.store.apply([Increment("count#a", "hits", 2, {"note": "second"})]))

    item = backend.run(backend.store.get(["count#a"]))["count#a"]

    assert item["hits"] == 3
    assert item["note"] == "second"


def test_an_increment_whose_condition_fails_changes_nothing_in_its_write(backend: Backend) -> None:
    backend.run(backend.store.apply([Increment("count#b", "hits")]))

    with pytest.raises(LedgerConflict) as conflict:
        backend.run(
            backend.store.apply(
                [Increment("count#c", "hits"), Increment("count#b", "hits", condition=Absent())]
            )
        )

    assert list(conflict.value.failed) == [1]
    found = backend.run(backend.store.get(["count#b", "count#c"]))
    assert found["count#b"]["hits"] == 1
    assert "count#c" not in found


def test_failed_deliveries_are_counted_per_key_across_ledgers_and_are_not_marks(
    backend: Backend,
) -> None:
    clock = FakeClock()
    poison, other = record(7, event_id="e-7"), record(8, event_id="e-8")

    counts = [
        backend.run(ledger(backend, LedgerMode.PER_RECORD, clock).record_failure(poison)),
        # A fresh ledger (the next Lambda invocation) goes on from the stored count.
        backend.run(ledger(backend, LedgerMode.WATERMARK, clock).record_failure(poison)),
        backend.run(ledger(backend, LedgerMode.PER_RECORD, clock).record_failure(other)),
    ]

    assert counts == [1, 2, 1]
    led = ledger(backend, LedgerMode.PER_RECORD, clock)
    assert backend.run(led.screen([poison])).new == [poison]
    stored = backend.run(backend.store.get([led.failure_key(poison)]))[led.failure_key(poison)]
    assert stored["expires_at"] == int(clock.now) + 8 * 24 * 3600
