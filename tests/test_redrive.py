"""`kinesis-eo redrive` on in-process moto: letters and on-failure records applied exactly once.

The handlers below are named by the command (``--handler tests.test_redrive:...``);
the effects table comes from the environment, as for ``tests.handlers``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from kinesis_eo import cli
from kinesis_eo.deadletter import (
    DeadLetter,
    DeadLetterReason,
    DynamoDBDeadLetterTable,
    SqsDeadLetterQueue,
    create_dead_letter_table,
    read_dead_letters,
)
from kinesis_eo.envelope import wrap
from kinesis_eo.flow import run_sync
from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.on_failure import parse_on_failure
from kinesis_eo.records import Record
from kinesis_eo.redrive import RedriveOptions, RedriveSource, redrive
from kinesis_eo.retry import RetryConfig
from kinesis_eo.runner import RunOptions
from kinesis_eo.sinks import (
    EffectContext,
    FailurePolicy,
    TransactionalSink,
    idempotency_key,
    update,
)
from kinesis_eo.testing.effects import create_effects_table, scan_table
from tests.conftest import REGION
from tests.handlers import EFFECTS_TABLE_ENV

SHARD = "shardId-000000000000"


def apply_payload(record: Record, ctx: EffectContext) -> list[Any]:
    # Not idempotent on its own: a second application shows as applied == 2.
    return [
        update(
            os.environ[EFFECTS_TABLE_ENV],
            {"id": record.event_id},
            "ADD applied :one SET sha = :sha",
            values={":one": 1, ":sha": hashlib.sha256(record.data).hexdigest()},
        )
    ]


def always_fails(record: Record, ctx: EffectContext) -> list[Any]:
    raise ValueError("the handler is still broken")


@pytest.fixture
def app(moto_aws: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """An app with its ledger, effects table, dead-letter queue and table."""
    name = f"billing-{uuid.uuid4().hex[:6]}"
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    create_ledger_table(dynamodb, f"{name}-ledger")
    create_dead_letter_table(dynamodb, f"{name}-letters")
    create_effects_table(dynamodb, f"{name}-effects")
    boto3.client("sqs", region_name=REGION).create_queue(QueueName=f"{name}-letters")
    monkeypatch.setenv(EFFECTS_TABLE_ENV, f"{name}-effects")
    return name


def queue_url(app: str) -> str:
    sqs = boto3.client("sqs", region_name=REGION)
    return str(sqs.get_queue_url(QueueName=f"{app}-letters")["QueueUrl"])


def letter(app: str, event_id: str, sequence: int, data: bytes = b"{}") -> DeadLetter:
    record = Record("orders", SHARD, str(sequence), "pk", data, event_id=event_id)
    return DeadLetter(
        record, DeadLetterReason.PROCESSING_FAILED, "ValueError: bug", 3, app, datetime.now(UTC)
    )


def effects(app: str) -> dict[str, tuple[int, str]]:
    items = scan_table(boto3.client("dynamodb", region_name=REGION), f"{app}-effects")
    return {i["id"]["S"]: (int(i["applied"]["N"]), i["sha"]["S"]) for i in items}


def queue_bodies(app: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    found = sqs.receive_message(QueueUrl=queue_url(app), MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in found.get("Messages", [])]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_redrive(app: str, source: str, *extra: str, handler: str = "apply_payload") -> int:
    return cli.main(
        [
            "redrive",
            "--source",
            source,
            "--app",
            app,
            "--handler",
            f"tests.test_redrive:{handler}",
            *extra,
        ]
    )


def test_letters_from_sqs_are_applied_once_however_often_redriven(app: str) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    letters = [letter(app, f"e{n}", n, b'{"n": %d}' % n) for n in (1, 2, 3)]
    target = SqsDeadLetterQueue(sqs, queue_url(app))
    target.send(letters)
    target.send(letters[:1])  # a copy, as a resend after a crash leaves one

    assert run_redrive(app, f"sqs:{queue_url(app)}") == cli.EXIT_OK
    # A crash between the commit and the delete leaves the letter: it comes back.
    target.send(letters[1:2])
    assert run_redrive(app, f"sqs:{queue_url(app)}") == cli.EXIT_OK

    assert effects(app) == {f"e{n}": (1, sha(b'{"n": %d}' % n)) for n in (1, 2, 3)}
    assert queue_bodies(app) == []


@pytest.mark.parametrize("mode", [LedgerMode.PER_RECORD, LedgerMode.WATERMARK])
def test_letters_from_dynamodb_are_applied_once_however_often_redriven(
    app: str, mode: LedgerMode
) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    table = DynamoDBDeadLetterTable(dynamodb, f"{app}-letters")
    # Letters as the consumer leaves them: marked done (DEAD_LETTERED, or below the watermark).
    consumer = TransactionalSink(
        Ledger(DynamoDBLedgerStore(f"{app}-ledger"), LedgerConfig(app, mode=mode)),
        always_fails,
        policy=FailurePolicy(max_attempts=1),
        dead_letters=table,
    )
    records = [Record("orders", SHARD, str(n), "pk", b"{}", event_id=f"e{n}") for n in (1, 2)]
    run_sync(consumer.process(records), dynamodb, RetryConfig())
    letters = read_dead_letters(dynamodb, f"{app}-letters")
    assert [x.record for x in letters] == records
    other_app = letter("someone-else", "e9", 9)
    table.send([other_app])

    assert run_redrive(app, f"dynamodb:{app}-letters") == cli.EXIT_OK
    table.send(letters[:1])
    assert run_redrive(app, f"dynamodb:{app}-letters") == cli.EXIT_OK

    assert {k: v[0] for k, v in effects(app).items()} == {"e1": 1, "e2": 1}
    # Only the app's letters are redriven and removed.
    assert read_dead_letters(dynamodb, f"{app}-letters") == [other_app]


def test_a_letter_whose_handler_still_fails_stays_dead_lettered_until_fixed(
    app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    poison = letter(app, "e1", 1)
    SqsDeadLetterQueue(sqs, queue_url(app)).send([poison])
    DynamoDBDeadLetterTable(dynamodb, f"{app}-letters").send([poison])

    for source in (f"sqs:{queue_url(app)}", f"dynamodb:{app}-letters"):
        assert run_redrive(app, source, handler="always_fails") == cli.EXIT_FAILED
        assert "failed again, left in place (ValueError: the handler is still broken)" in (
            capsys.readouterr().out
        )
    assert effects(app) == {}
    assert [b["letter_id"] for b in queue_bodies(app)] == [poison.letter_id]
    assert read_dead_letters(dynamodb, f"{app}-letters") == [poison]

    # No mark was left behind: once the handler is fixed the letter applies, once.
    for source in (f"sqs:{queue_url(app)}", f"dynamodb:{app}-letters"):
        assert run_redrive(app, source) == cli.EXIT_OK
    assert effects(app) == {"e1": (1, sha(b"{}"))}
    assert read_dead_letters(dynamodb, f"{app}-letters") == []


@pytest.mark.parametrize("kind", ["sqs", "dynamodb"])
def test_a_large_letter_is_reassembled_from_its_parts(app: str, kind: str) -> None:
    payload = os.urandom(700_000)
    big = letter(app, "big", 1, payload)
    if kind == "sqs":
        sqs = boto3.client("sqs", region_name=REGION)
        SqsDeadLetterQueue(sqs, queue_url(app)).send([big])
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url(app), AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert int(attributes["Attributes"]["ApproximateNumberOfMessages"]) > 1  # in parts
        source = f"sqs:{queue_url(app)}"
    else:
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        DynamoDBDeadLetterTable(dynamodb, f"{app}-letters").send([big])
        source = f"dynamodb:{app}-letters"

    options = RedriveOptions(RedriveSource.parse(source), wait_s=0)
    report = redrive(RunOptions("", app, "unused:unused"), options, clients(), apply_payload)

    assert report.ok, report.items
    assert effects(app) == {"big": (1, sha(payload))}
    if kind == "dynamodb":
        scan = boto3.client("dynamodb", region_name=REGION).scan(TableName=f"{app}-letters")
        assert scan["Items"] == []  # the head and every part item


def clients() -> dict[str, Any]:
    return {s: boto3.client(s, region_name=REGION) for s in ("dynamodb", "sqs", "kinesis")}


def test_dry_run_lists_and_max_bounds_the_redrive(
    app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    letters = [letter(app, f"e{n}", n) for n in (1, 2, 3)]
    DynamoDBDeadLetterTable(dynamodb, f"{app}-letters").send(letters)
    source = f"dynamodb:{app}-letters"

    assert run_redrive(app, source, "--dry-run") == cli.EXIT_OK
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("letter ")]
    assert len(listed) == 3
    assert all("would redrive (PROCESSING_FAILED" in x for x in listed)
    assert out.splitlines()[-1].endswith(": 3 would redrive")
    assert effects(app) == {}

    assert run_redrive(app, source, "--max", "2") == cli.EXIT_OK
    assert sorted(effects(app)) == ["e1", "e2"]
    assert [x.record.event_id for x in read_dead_letters(dynamodb, f"{app}-letters")] == ["e3"]


# --- the event source mapping's on-failure records ----------------------------------------------


def on_failure_body(stream_arn: str, shard_id: str, start: str, end: str, size: int) -> str:
    """An on-failure record in the shape AWS documents for a Kinesis mapping's SQS destination."""
    return json.dumps(
        {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:billing",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 4,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": "2026-11-26T10:00:00.000Z",
            "KinesisBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": start,
                "endSequenceNumber": end,
                "approximateArrivalOfFirstRecord": "2026-11-26T09:59:58.000Z",
                "approximateArrivalOfLastRecord": "2026-11-26T09:59:59.000Z",
                "batchSize": size,
                "streamArn": stream_arn,
            },
        }
    )


def test_on_failure_records_are_fetched_from_the_stream_and_applied_once(app: str) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    kinesis.create_stream(StreamName=app, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=app)["StreamDescriptionSummary"]["StreamARN"]
    numbers = [
        kinesis.put_record(StreamName=app, Data=wrap(f"o{n}", b"%d" % n), PartitionKey="k")[
            "SequenceNumber"
        ]
        for n in range(1, 6)
    ]
    # The mapping applied o3 before it gave up on the batch o2..o4.
    ledger = Ledger(
        DynamoDBLedgerStore(f"{app}-ledger"), LedgerConfig(app, mode=LedgerMode.PER_RECORD)
    )
    applied_before = Record(app, SHARD, numbers[2], "k", b"3", event_id="o3")
    run_sync(
        TransactionalSink(ledger, apply_payload).process([applied_before]),
        boto3.client("dynamodb", region_name=REGION),
        RetryConfig(),
    )
    failures = sqs.create_queue(QueueName=f"{app}-on-failure")["QueueUrl"]
    body = on_failure_body(arn, SHARD, numbers[1], numbers[3], 3)
    assert parse_on_failure(body).end == numbers[3]
    sqs.send_message(QueueUrl=failures, MessageBody=body)

    source = f"on-failure:{failures}"
    assert run_redrive(app, source, "--mode", "per-record") == cli.EXIT_OK
    sqs.send_message(QueueUrl=failures, MessageBody=body)  # delivered twice
    assert run_redrive(app, source, "--mode", "per-record") == cli.EXIT_OK

    assert effects(app) == {f"o{n}": (1, sha(b"%d" % n)) for n in (2, 3, 4)}
    assert "Messages" not in sqs.receive_message(QueueUrl=failures)


def test_on_failure_records_no_longer_in_the_stream_are_reported_gone(
    app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    boto3.client("kinesis", region_name=REGION).create_stream(StreamName=app, ShardCount=1)
    failures = sqs.create_queue(QueueName=f"{app}-on-failure")["QueueUrl"]
    arn = f"arn:aws:kinesis:{REGION}:123456789012:stream/{app}"
    body = on_failure_body(arn, "shardId-000000000007", "1", "2", 2)
    sqs.send_message(QueueUrl=failures, MessageBody=body)

    assert run_redrive(app, f"on-failure:{failures}", "--mode", "per-record") == cli.EXIT_FAILED

    assert "are no longer in the stream" in capsys.readouterr().out
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=failures)["Messages"]] == [body]


# --- the command line ---------------------------------------------------------------------------


def test_help_describes_the_sources_and_the_guarantees(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["redrive", "--help"])

    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in (
        "sqs:QUEUE_URL",
        "dynamodb:TABLE",
        "on-failure:QUEUE_URL",
        "APP-redrive",
        "redriving a letter twice applies it once",
        "fails again stays where it is",
        "--dry-run",
        "--max N",
    ):
        assert words in text


@pytest.mark.parametrize(
    ("source", "extra", "named"),
    [
        ("kafka:orders", (), "source 'kafka:orders' is not one kinesis-eo redrive reads"),
        ("dynamodb:no-such-table", (), "table 'no-such-table' does not exist"),
        ("on-failure:https://queue", (), "can only be redriven through its per-record ledger"),
    ],
)
def test_a_bad_source_is_refused_in_one_sentence_naming_it(
    app: str,
    capsys: pytest.CaptureFixture[str],
    source: str,
    extra: tuple[str, ...],
    named: str,
) -> None:
    assert run_redrive(app, source, *extra) == cli.EXIT_ERROR

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert named in err
    assert "Traceback" not in err


SEEN_KEYS: list[str] = []


def remember_key(record: Record, ctx: EffectContext) -> None:
    SEEN_KEYS.append(ctx.idempotency_key)


def test_a_keyed_handler_gets_the_apps_own_idempotency_key_on_redrive(app: str) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    poison = letter(app, "e1", 1)
    DynamoDBDeadLetterTable(dynamodb, f"{app}-letters").send([poison])
    SEEN_KEYS.clear()

    options = RedriveOptions(RedriveSource.parse(f"dynamodb:{app}-letters"), wait_s=0)
    run = RunOptions("", app, "unused:unused", sink="keyed")
    assert redrive(run, options, clients(), remember_key).ok

    original = Ledger(DynamoDBLedgerStore(f"{app}-ledger"), LedgerConfig(app))
    assert [idempotency_key(original, poison.record)] == SEEN_KEYS


def poison_o3(record: Record, ctx: EffectContext) -> list[Any]:
    if record.event_id == "o3":
        raise ValueError("o3 is poison")
    return apply_payload(record, ctx)


def test_an_on_failure_record_that_fails_again_is_dead_lettered_with_its_payload(
    app: str,
) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    kinesis.create_stream(StreamName=app, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=app)["StreamDescriptionSummary"]["StreamARN"]
    numbers = [
        kinesis.put_record(StreamName=app, Data=wrap(f"o{n}", b"%d" % n), PartitionKey="k")[
            "SequenceNumber"
        ]
        for n in range(1, 5)
    ]
    failures = sqs.create_queue(QueueName=f"{app}-on-failure")["QueueUrl"]
    body = on_failure_body(arn, SHARD, numbers[0], numbers[3], 4)
    sqs.send_message(QueueUrl=failures, MessageBody=body)
    source = f"on-failure:{failures}"
    target = ("--dead-letter-table", f"{app}-letters")

    assert run_redrive(app, source, "--mode", "per-record", *target, handler="poison_o3") == 0

    assert sorted(effects(app)) == ["o1", "o2", "o4"]
    (dead,) = read_dead_letters(dynamodb, f"{app}-letters")
    assert (dead.record.event_id, dead.record.data, dead.consumer_group) == ("o3", b"3", app)
    assert "Messages" not in sqs.receive_message(QueueUrl=failures)
