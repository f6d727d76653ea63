"""The pytest plugin: its fixtures, its registration, and assert_exactly_once on moto.

The entry point is active only where the package is installed; in a bare
checkout the plugin is loaded with ``-p`` inside pytester's runs.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kinesis_eo.ledger import (
    DynamoDBLedgerStore,
    Ledger,
    LedgerConfig,
    LedgerMode,
    create_ledger_table,
)
from kinesis_eo.producer import Event
from kinesis_eo.records import Record
from kinesis_eo.sinks import EffectContext, update
from kinesis_eo.testing.effects import create_effects_table
from kinesis_eo.testing.proof import Fault, NotExactlyOnceError, assert_exactly_once
from kinesis_eo.testing.resources import KinesisStream, SinkTable, make_stream
from lambda_handlers import KinesisHandler
from tests.helpers import pytest_plugin_args

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "kinesis_eo.testing.pytest_plugin"
FIXTURES = [
    "kinesis_eo_aws",
    "kinesis_stream",
    "ledger_table",
    "lease_table",
    "checkpoint_table",
    "sink_table",
    "dead_letter_table",
    "dead_letter_queue",
    "event_source_mapping",
]


def test_the_entry_point_names_the_plugin_module() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"kinesis_eo": PLUGIN}
    assert {"moto", "pytest"} <= {
        dep.split(">")[0].split("[")[0] for dep in project["optional-dependencies"]["testing"]
    }


def test_loading_the_plugin_imports_neither_boto3_nor_moto() -> None:
    code = (
        f"import sys, {PLUGIN}, kinesis_eo.testing.fixtures; "
        "print(sorted({'boto3', 'botocore', 'moto'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_the_plugin_lists_its_fixtures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(*pytest_plugin_args(), "--fixtures")

    listed = result.stdout.str()
    assert "fixtures defined from kinesis_eo.testing.fixtures" in listed
    for name in FIXTURES:
        assert f"\n{name} -- " in listed, name


def test_without_moto_the_plugin_registers_nothing_and_other_tests_still_run(
    pytester: pytest.Pytester,
) -> None:
    # moto cannot be imported in this run, as where the testing extra is not installed.
    pytester.makeconftest("import sys\nsys.modules['moto'] = None\n")
    pytester.makepyfile(
        "def test_plain():\n    assert True\n\ndef test_wants_a_stream(kinesis_stream):\n    pass\n"
    )

    result = pytester.runpytest_subprocess(*pytest_plugin_args())

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'kinesis_stream' not found*"])


def test_the_fixtures_make_a_stream_and_tables_on_moto(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_tables(kinesis_eo_aws, kinesis_stream, ledger_table, lease_table,
                        checkpoint_table, sink_table, dead_letter_table, dead_letter_queue):
            dynamodb = kinesis_eo_aws.dynamodb
            tables = set(dynamodb.list_tables()["TableNames"])
            assert tables == {"ledger", "leases", "checkpoints", "effects", "dead-letters"}
            shards = kinesis_stream.kinesis.list_shards(StreamName=kinesis_stream.name)
            assert len(shards["Shards"]) == 2
            assert dead_letter_queue.letters() == []
            assert sink_table.applied("nothing") == 0
        """
    )

    result = pytester.runpytest_subprocess(*pytest_plugin_args(), "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)


# --- assert_exactly_once ------------------------------------------------------------------------


@pytest.fixture
def stream(kinesis: Any) -> KinesisStream:
    return make_stream(kinesis, "orders", shards=2)


@pytest.fixture
def sink(dynamodb: Any) -> SinkTable:
    create_ledger_table(dynamodb, "ledger")
    create_effects_table(dynamodb, "effects")
    return SinkTable("effects", dynamodb)


def events(count: int) -> list[Event]:
    return [Event(b"order-%d" % i, f"key-{i % 5}", f"order-{i}") for i in range(count)]


def count_once(record: Record, ctx: EffectContext) -> list[Any]:
    return [update("effects", {"id": record.event_id}, "ADD applied :one", values={":one": 1})]


def kinesis_handler(dynamodb: Any) -> KinesisHandler:
    ledger = Ledger(DynamoDBLedgerStore("ledger"), LedgerConfig("orders", LedgerMode.PER_RECORD))
    return KinesisHandler(count_once, ledger=ledger, dynamodb=dynamodb)


def naive_handler(dynamodb: Any) -> Any:
    """A Lambda function without the toolkit: every delivery applies every record again."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        for entry in event["Records"]:
            event_id = _event_id(entry)
            dynamodb.update_item(
                TableName="effects",
                Key={"id": {"S": event_id}},
                UpdateExpression="ADD applied :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        return {"batchItemFailures": []}

    return handler


def _event_id(entry: dict[str, Any]) -> str:
    import base64

    from kinesis_eo.envelope import unwrap

    return str(unwrap(base64.b64decode(entry["kinesis"]["data"]))[0])


def test_a_kinesis_handler_passes_every_fault_with_each_event_applied_once(
    stream: KinesisStream, sink: SinkTable, dynamodb: Any
) -> None:
    report = assert_exactly_once(
        kinesis_handler(dynamodb), events(9), stream=stream, applied=sink.applied
    )

    assert report.applied == {f"order-{i}": 1 for i in range(9)}
    assert set(report.faults.values()) == {
        Fault.CRASH_AFTER_COMMIT,
        Fault.ZOMBIE,
        Fault.INBOUND_DUPLICATE,
    }
    assert report.crashes > 0
    assert report.zombies > 0


@pytest.mark.parametrize("fault", list(Fault))
def test_each_fault_applies_a_naive_handlers_events_twice_and_is_named(
    stream: KinesisStream, sink: SinkTable, dynamodb: Any, fault: Fault
) -> None:
    with pytest.raises(NotExactlyOnceError) as caught:
        assert_exactly_once(
            naive_handler(dynamodb),
            events(4),
            stream=stream,
            applied=sink.applied,
            faults={fault},
            dynamodb=dynamodb,
        )

    assert str(caught.value).splitlines() == [
        "not exactly once: 4 of 4 events applied more than once, 0 lost",
        *(f"  order-{i}: applied 2 times, after {fault.value}" for i in range(4)),
    ]


def test_a_record_handler_passes_on_a_per_record_ledger_given_as_ledger(
    stream: KinesisStream, sink: SinkTable, dynamodb: Any
) -> None:
    ledger = Ledger(DynamoDBLedgerStore("ledger"), LedgerConfig("orders", LedgerMode.PER_RECORD))

    report = assert_exactly_once(
        count_once, events(6), stream=stream, applied=sink.applied, ledger=ledger
    )

    assert report.applied == {f"order-{i}": 1 for i in range(6)}
    assert report.zombies > 0


def test_a_record_handler_on_a_watermark_ledger_lets_an_inbound_duplicate_through(
    stream: KinesisStream, sink: SinkTable
) -> None:
    # A watermark knows positions, not event ids: the second copy is a new record to it.
    ledger = Ledger(DynamoDBLedgerStore("ledger"), LedgerConfig("orders", LedgerMode.WATERMARK))

    with pytest.raises(AssertionError) as caught:
        assert_exactly_once(
            count_once,
            events(3),
            stream=stream,
            applied=sink.applied,
            faults={Fault.INBOUND_DUPLICATE},
            ledger=ledger,
        )

    assert str(caught.value).splitlines()[1:] == [
        f"  order-{i}: applied 2 times, after inbound_duplicate" for i in range(3)
    ]


def test_an_event_the_handler_never_applies_is_reported_lost(
    stream: KinesisStream, sink: SinkTable, dynamodb: Any
) -> None:
    def skip_order_2(record: Record, ctx: EffectContext) -> list[Any]:
        return [] if record.event_id == "order-2" else count_once(record, ctx)

    ledger = Ledger(DynamoDBLedgerStore("ledger"), LedgerConfig("orders", LedgerMode.PER_RECORD))
    handler = KinesisHandler(skip_order_2, ledger=ledger, dynamodb=dynamodb)

    with pytest.raises(AssertionError) as caught:
        assert_exactly_once(handler, events(6), stream=stream, applied=sink.applied)

    assert "0 of 6 events applied more than once, 1 lost" in str(caught.value)
    assert "  order-2: lost, after inbound_duplicate" in str(caught.value)


def test_events_without_their_own_ids_are_refused(stream: KinesisStream, sink: SinkTable) -> None:
    with pytest.raises(ValueError, match="event_id of its own"):
        assert_exactly_once(
            lambda event, context: None,
            [Event(b"a", "k", "same"), Event(b"b", "k", "same")],
            stream=stream,
            applied=sink.applied,
            faults={Fault.REDELIVERY},
        )


def test_a_zombie_needs_the_client_the_handler_commits_with(
    stream: KinesisStream, sink: SinkTable
) -> None:
    with pytest.raises(TypeError, match="pass dynamodb="):
        assert_exactly_once(
            lambda event, context: None, events(3), stream=stream, applied=sink.applied
        )
