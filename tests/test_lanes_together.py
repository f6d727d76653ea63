"""The Together instruction: sub-flows run at once under both drivers, values in order, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from kinesis_eo.flow import Flow, Invoke, Sleep, Together, run_async, run_sync
from kinesis_eo.retry import RetryConfig

RETRY = RetryConfig(max_attempts=1)


class Gauge:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.finished: list[int] = []

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)

    def leave(self, n: int) -> None:
        with self.lock:
            self.running -= 1
            self.finished.append(n)


def worker(gauge: Gauge, n: int, fail: bool = False) -> Flow:
    yield Invoke(gauge.enter)
    yield Sleep(0.05)
    yield Invoke(gauge.leave, (n,))
    if fail:
        raise ValueError(f"flow {n} failed")
    nested = yield Together((double(n),))
    return nested[0]


def double(n: int) -> Flow:
    yield Sleep(0)
    return n * 2


def parent(flows: tuple[Flow, ...], limit: int = 0) -> Flow:
    try:
        values = yield Together(flows, limit)
    except ValueError as exc:
        return f"caught: {exc}"
    return values


def test_sync_driver_runs_sub_flows_at_once_up_to_the_limit_and_sends_their_values_in_order() -> (
    None
):
    gauge = Gauge()
    started = time.perf_counter()
    values = run_sync(parent(tuple(worker(gauge, n) for n in range(6)), limit=3), None, RETRY)
    took = time.perf_counter() - started
    assert values == [0, 2, 4, 6, 8, 10]
    assert gauge.most == 3
    assert took < 0.6 * 6 * 0.05  # two rounds of 50 ms, not six


@pytest.mark.asyncio
async def test_async_driver_runs_sub_flows_as_tasks_up_to_the_limit() -> None:
    gauge = Gauge()
    started = time.perf_counter()
    flows = tuple(worker(gauge, n) for n in range(6))
    values = await run_async(parent(flows, limit=2), None, RETRY)
    took = time.perf_counter() - started
    assert values == [0, 2, 4, 6, 8, 10]
    assert gauge.most == 2
    assert took < 0.8 * 6 * 0.05


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_failing_sub_flow_lets_the_others_finish_and_its_error_reaches_the_parent(
    driver: str,
) -> None:
    gauge = Gauge()
    flows = tuple(worker(gauge, n, fail=n in (1, 3)) for n in range(4))
    if driver == "sync":
        outcome = run_sync(parent(flows), None, RETRY)
    else:
        outcome = asyncio.run(run_async(parent(flows), None, RETRY))
    assert outcome == "caught: flow 1 failed"
    assert sorted(gauge.finished) == [0, 1, 2, 3]


def emits() -> Flow:
    yield "an output"
    return 1


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_an_output_from_a_sub_flow_is_an_error(driver: str) -> None:
    def outer() -> Flow:
        values: Any = yield Together((emits(),))
        return values

    def run() -> Any:
        if driver == "sync":
            return run_sync(outer(), None, RETRY)
        return asyncio.run(run_async(outer(), None, RETRY))

    with pytest.raises(TypeError, match="output"):
        run()


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        Together((), -1)
