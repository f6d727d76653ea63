"""The chaos harness's Lambda adapter: the handler under a simulated event source mapping.

:func:`kinesis_eo.harness.chaos.run_chaos` calls it with ``--adapter lambda``
once production is over; the same verifier then reads the sink.
"""

from __future__ import annotations

import random
import time
from typing import Any

from kinesis_eo.deadletter import DynamoDBDeadLetterTable
from kinesis_eo.harness.chaos import ChaosConfig, ChaosReport, Progress
from kinesis_eo.harness.chaos_faults import OutageSwitch, SinkOutage
from kinesis_eo.harness.chaos_worker import effect_handler
from kinesis_eo.harness.scenario import Names, _SimulatedCrash, applied_counts, client
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig, LedgerMode
from kinesis_eo.retry import RetryConfig
from kinesis_eo.sinks import FailurePolicy
from kinesis_eo.testing.faults import Always, FaultInjector, FaultKind, Probability
from kinesis_eo.testing.lambda_esm import EsmConfig, EventSourceMapping, FakeContext, read_stream
from lambda_handlers import KinesisHandler, LambdaConfig

__all__ = ["consume_with_lambda"]


def _faulty_handler(
    config: ChaosConfig, dynamodb: Any, names: Names, outage: OutageSwitch
) -> tuple[KinesisHandler, FaultInjector, SinkOutage]:
    """The Lambda handler on a DynamoDB client of its own, throttled and losing responses."""
    handler_dynamodb = client("dynamodb", dynamodb.meta.endpoint_url)
    faults = FaultInjector(seed=config.seed + 1)
    faults.throttle("TransactWriteItems", schedule=Probability(config.throttle_probability))
    faults.disconnect("*", schedule=Probability(config.disconnect_probability), after_send=True)
    faults.attach(handler_dynamodb)
    down = SinkOutage("")
    if config.sink_outage_s:
        # Added last, so that the seeded draws of the rules above stay as they were.
        throttle = faults.throttle("TransactWriteItems", schedule=Always())
        down = SinkOutage(str(outage.marker), throttle)
    retry = RetryConfig(max_attempts=10, initial_backoff_s=0.01, max_backoff_s=0.2)
    handler = KinesisHandler(
        effect_handler(
            names.effects,
            invalid_write_rate=config.invalid_write_rate,
            invalid_write_seed=config.seed,
            outage=down,
        ),
        ledger=Ledger(
            DynamoDBLedgerStore(names.ledger, retry),
            LedgerConfig(names.group, LedgerMode.PER_RECORD),
        ),
        dead_letters=DynamoDBDeadLetterTable(handler_dynamodb, names.dead_letters),
        config=LambdaConfig(
            policy=FailurePolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.01),
            max_failed_deliveries=2,
            retry=retry,
        ),
        dynamodb=handler_dynamodb,
    )
    return handler, faults, down


def consume_with_lambda(
    config: ChaosConfig,
    kinesis: Any,
    dynamodb: Any,
    names: Names,
    report: ChaosReport,
    rng: random.Random,
    say: Progress,
    outage: OutageSwitch,
) -> None:
    """The Lambda handler under a simulated event source mapping, with faults.

    Invocations crash after their commits (the ESM delivers the batch again,
    bisected); the handler's DynamoDB calls are throttled and lose responses;
    some invocations are played again at the end, as a function instance that
    timed out but went on running would (a zombie): none may apply anything.
    The sink's outage starts at a seeded invocation (the mapping delivers only
    once production is over) and lasts its seconds; meanwhile the mapping
    waits a little before each delivery, as after a reported failure.
    """
    handler, faults, down = _faulty_handler(config, dynamodb, names, outage)
    crash_probability = max(config.crash_after_commit_probability * 20, 0.05)
    replays: list[dict[str, Any]] = []
    calls = 0
    records = read_stream(kinesis, names.stream)
    outage_call = random.Random(config.seed).randint(2, max(2, len(records) // 200))

    def invoke(event: dict[str, Any], context: Any) -> Any:
        nonlocal calls
        calls += 1
        now = time.monotonic()
        outage.step(now, now if calls >= outage_call else float("inf"))
        if outage.on:
            time.sleep(0.02)
        elif len(replays) < 5 and calls % 10 == 1:
            replays.append(event)
        response = handler(event, context)
        if outage.on and response.get("batchItemFailures"):
            report.outage_pauses += 1
        if rng.random() < crash_probability:
            report.kills += 1
            raise _SimulatedCrash("the instance died before it answered")
        return response

    esm = EventSourceMapping(invoke, records, stream=names.stream, config=EsmConfig(batch_size=100))
    try:
        invocations = esm.run(max_invocations=100 * (len(records) // 10 + 10))
    finally:
        down.close()
    say(f"{len(invocations)} invocations for {len(records)} records, {report.kills} crashed")
    for event in replays:
        before = sum(applied_counts(dynamodb, names.effects).values())
        handler(event, FakeContext())
        report.zombies += 1
        if sum(applied_counts(dynamodb, names.effects).values()) == before:
            report.zombies_fenced += 1
    report.throttles_injected = faults.injected[FaultKind.ERROR_RESPONSE]
    report.connection_faults_injected = faults.injected[FaultKind.CONNECTION_LOST]
