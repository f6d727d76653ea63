"""ReadAhead as a flow, driven sync and asyncio: one read in flight, order, shard end, errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from kinesis_eo.flow import Flow, Sleep, run_async, run_sync
from kinesis_eo.read_ahead import ReadAhead
from kinesis_eo.retry import RetryConfig

RETRY = RetryConfig(max_attempts=1)
STEP_S = 0.04


@dataclass
class FakeBatch:
    number: int
    shard_end: bool = False


class Shard:
    """Batches 0..last, the last one ending the shard; logs reads and applies as they start."""

    def __init__(self, last: int, fail_read: int | None = None) -> None:
        self.last = last
        self.fail_read = fail_read
        self.next_number = 0
        self.log: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def read(self) -> Flow:
        number = self.next_number
        self.next_number += 1
        self.log.append(f"read {number}")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        yield Sleep(STEP_S)
        self.in_flight -= 1
        if number == self.fail_read:
            raise ConnectionError(f"read {number} failed")
        return FakeBatch(number, shard_end=number == self.last)

    def apply(self, batch: FakeBatch) -> Flow:
        self.log.append(f"apply {batch.number}")
        yield Sleep(STEP_S)
        return batch.number


def loop(shard: Shard, enabled: bool) -> Flow:
    ahead: ReadAhead[FakeBatch] = ReadAhead(shard.read, enabled)
    applied = []
    while True:
        batch = yield from ahead.next()
        assert batch is not None
        applied.append((yield from ahead.alongside(batch, shard.apply(batch))))
        if batch.shard_end:
            return applied


def run(driver: str, flow: Flow) -> Any:
    if driver == "sync":
        return run_sync(flow, None, RETRY)
    return asyncio.run(run_async(flow, None, RETRY))


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_reads_overlap_applies_in_order_one_ahead_and_none_past_the_shard_end(driver: str) -> None:
    timings = {}
    for enabled in (False, True):
        shard = Shard(last=5)
        started = time.perf_counter()
        assert run(driver, loop(shard, enabled)) == [0, 1, 2, 3, 4, 5]
        timings[enabled] = time.perf_counter() - started
        assert shard.next_number == 6  # nothing read after the batch that ended the shard
        assert shard.most_in_flight == 1
    assert timings[True] < 0.8 * timings[False], timings


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_failed_read_ahead_is_raised_where_the_batch_is_taken_after_the_commit(
    driver: str,
) -> None:
    shard = Shard(last=5, fail_read=2)

    def guarded() -> Flow:
        try:
            yield from loop(shard, True)
        except ConnectionError as exc:
            return str(exc), list(shard.log)
        raise AssertionError("the read's error was lost")

    message, log = run(driver, guarded())
    assert message == "read 2 failed"
    assert "apply 1" in log  # batch 1 was applied before its successor's error surfaced
    assert "apply 2" not in log


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_failed_apply_keeps_the_batch_read_beside_it(driver: str) -> None:
    shard = Shard(last=3)

    def failing(batch: FakeBatch) -> Flow:
        yield Sleep(0)
        raise RuntimeError("fenced")

    def flow() -> Flow:
        ahead: ReadAhead[FakeBatch] = ReadAhead(shard.read)
        first = yield from ahead.next()
        try:
            yield from ahead.alongside(first, failing(first))
        except RuntimeError as exc:
            error = str(exc)
        second = yield from ahead.next()
        return error, second

    error, second = run(driver, flow())
    assert error == "fenced"
    assert second == FakeBatch(1)
    assert shard.next_number == 2
