"""The harness proves the product: its workers come from ``runner.build_worker``, with its hooks.

``kinesis-eo run`` builds its worker through :func:`kinesis_eo.runner.build_worker`;
the chaos harness must build its own the same way, adding only what any
program may add: clients with faults attached, the handler object, a
dead-letter target and an ``after_commit`` hook.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kinesis_eo import runner
from kinesis_eo.deadletter import DynamoDBDeadLetterTable
from kinesis_eo.harness import chaos_worker
from kinesis_eo.records import Record
from kinesis_eo.retrieval import Batch, ReaderConfig
from kinesis_eo.retry import RetryConfig
from kinesis_eo.runner import RunOptions
from kinesis_eo.sinks import BatchReport, EffectContext, FailurePolicy
from kinesis_eo.testing.fakes import MemoryDeadLetters
from kinesis_eo.testing.faults import FaultInjector, FaultKind, Probability
from kinesis_eo.worker import Worker
from tests.handlers import count_effect
from tests.helpers import applied, produce
from tests.streams import make_stream
from tests.workers import QUICK, create_tables, effect, wait_for


def _spec() -> chaos_worker.WorkerSpec:
    return chaos_worker.WorkerSpec(
        worker_id="worker-0.0",
        stream="chaos-stream",
        # Nothing is called while the worker is built.
        kinesis_endpoint="http://127.0.0.1:9",
        dynamodb_endpoint="http://127.0.0.1:9",
        lease_table="chaos-leases",
        ledger_table="chaos-ledger",
        effects_table="chaos-effects",
        dead_letter_table="chaos-dead-letters",
        consumer_group="chaos",
        stats_file="",
        seed=5,
        crash_after_commit_probability=0.5,
    )


def test_the_chaos_worker_is_built_by_the_runner_from_the_options_kinesis_eo_run_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[RunOptions, dict[str, Any]]] = []
    build = runner.build_worker

    def spy(options: RunOptions, *args: Any, **kwargs: Any) -> Worker:
        calls.append((options, kwargs))
        return build(options, *args, **kwargs)

    monkeypatch.setattr(runner, "build_worker", spy)

    worker, injectors = chaos_worker.build_worker(_spec())

    ((options, hooks),) = calls
    assert options == chaos_worker.run_options(_spec())
    assert (options.sink, options.mode, options.app) == ("transactional", "per-record", "chaos")
    assert (options.lease_table, options.ledger_table) == ("chaos-leases", "chaos-ledger")
    assert options.worker_id == "worker-0.0"
    # Only a program's hooks are added: the handler object and the crash point.
    assert set(hooks) == {"handler", "after_commit"}
    assert worker.after_commit is hooks["after_commit"]
    assert isinstance(worker.sink.dead_letters, DynamoDBDeadLetterTable)
    assert worker.sink.dead_letters.table_name == "chaos-dead-letters"
    # The worker calls AWS through the harness's clients, the ones its faults are attached to.
    assert len(injectors) == 2
    assert worker.clients["kinesis"].meta.endpoint_url == _spec().kinesis_endpoint


def test_run_options_carry_the_failure_policy_and_the_ledger_retries_into_the_worker() -> None:
    retry = RetryConfig(max_attempts=10, initial_backoff_s=0.02, max_backoff_s=0.5)
    options = RunOptions(
        stream="s",
        app="a",
        handler="h:f",
        failure_policy=FailurePolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05),
        ledger_retry=retry,
    )

    worker = runner.build_worker(options, None, None, handler=count_effect)
    fewer = runner.build_worker(
        RunOptions(**{**_fields(options), "handler_attempts": 2}), None, None, handler=count_effect
    )

    assert worker.sink.policy == FailurePolicy(4, 0.01, 0.05)
    assert worker.sink.ledger.store.retry == retry
    # --handler-attempts still counts the tries; the back-off stays the program's.
    assert fewer.sink.policy == FailurePolicy(2, 0.01, 0.05)


def _fields(options: RunOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in RunOptions.__dataclass_fields__}


def _checkpoint(dynamodb: Any, shard_id: str) -> str:
    item = dynamodb.get_item(
        TableName="leases", Key={"leaseKey": {"S": shard_id}}, ConsistentRead=True
    )["Item"]
    return str(item["checkpoint"]["S"])


def test_build_worker_hooks_commit_before_the_hook_checkpoint_after_and_letters_to_the_target(
    kinesis: Any, dynamodb: Any
) -> None:
    make_stream(kinesis, "orders", 1)
    create_tables(dynamodb)
    ids = produce(kinesis, "orders", 20)
    poison = ids[7]

    def handler(record: Record, ctx: EffectContext) -> list[Any]:
        if record.event_id == poison:
            raise ValueError(f"cannot apply {poison}")
        return effect(record, ctx)

    seen: list[tuple[list[str], dict[str, int], str, str]] = []

    def after_commit(batch: Batch, report: BatchReport) -> None:
        # What a crash right here would leave: the sink's state and the checkpoint.
        keys = [str(r.event_id) for r in report.applied]
        last = batch.records[-1].sequence_number
        seen.append((keys, applied(dynamodb), _checkpoint(dynamodb, batch.shard_id), last))

    letters = MemoryDeadLetters()
    gets = FaultInjector(seed=3)
    gets.throttle("GetRecords", schedule=Probability(0.3))
    gets.attach(kinesis)
    options = RunOptions(
        stream="orders",
        app="app",
        handler="tests.workers:effect",
        lease_table="leases",
        ledger_table="ledger",
        failover_s=1.5,
        worker_id="hooked",
        failure_policy=FailurePolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01),
        worker={
            "reader": ReaderConfig(
                max_records=5, min_read_interval_s=0.0, idle_interval_s=0.05, retry=QUICK
            ),
            "retry": QUICK,
            "checkpoint_interval_s": 0.0,
            "shard_sync_interval_s": 0.5,
        },
    )
    worker = runner.build_worker(
        options, kinesis, dynamodb, handler=handler, after_commit=after_commit, dead_letters=letters
    )
    thread = threading.Thread(target=worker.run, name="hooked")
    thread.start()
    try:
        wait_for(lambda: len(applied(dynamodb)) == 19, timeout=30, what="19 effects")
        wait_for(lambda: len(letters.letters) == 1, timeout=30, what="the poison's letter")
    finally:
        worker.stop()
        thread.join(timeout=30)

    assert applied(dynamodb) == dict.fromkeys([i for i in ids if i != poison], 1)
    assert len(seen) >= 4
    for keys, effects, checkpoint, last in seen:
        assert all(effects.get(key) == 1 for key in keys)  # committed before the hook
        assert checkpoint == "TRIM_HORIZON" or int(checkpoint) < int(last)  # checkpoint after
    (letter,) = letters.letters
    assert letter.record.event_id == poison
    assert letter.record.data == poison.encode()
    assert gets.injected[FaultKind.ERROR_RESPONSE] > 0  # the worker read through our client
