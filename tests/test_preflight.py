"""What `kinesis-eo run` (and the adapters) refuse at start: wrong table keys, marks that die first.

Tables with the wrong keys are made for real on moto, and the stream's
retention is raised with IncreaseStreamRetentionPeriod, as an operator would.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kinesis_eo import preflight, runner
from kinesis_eo.deadletter import create_dead_letter_table
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.leases import LeaseConfig, create_lease_table
from kinesis_eo.ledger import LedgerConfig, LedgerMode, create_ledger_table
from kinesis_eo.retrieval import ReaderConfig
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.faults import FaultInjector
from tests.handlers import count_effect

YEAR_H = 8760


def names(prefix: str = "pre") -> runner.RunOptions:
    app = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return runner.RunOptions(stream=app, app=app, handler="tests.handlers:count_effect")


def make_table(dynamodb: Any, name: str, *keys: tuple[str, str, str]) -> None:
    """A table keyed by (name, HASH or RANGE, S/N/B), as someone else might have made it."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": n, "KeyType": kind} for n, kind, _ in keys],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, _, t in keys],
        BillingMode="PAY_PER_REQUEST",
    )


def make_stream(kinesis: Any, name: str, retention_hours: int = 24) -> None:
    kinesis.create_stream(StreamName=name, ShardCount=1)
    if retention_hours != 24:
        kinesis.increase_stream_retention_period(
            StreamName=name, RetentionPeriodHours=retention_hours
        )


def ttl_status(dynamodb: Any, table: str) -> str:
    status: str = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"][
        "TimeToLiveStatus"
    ]
    return status


# --- table keys and TTL ----------------------------------------------------------------------


def test_a_ledger_table_keyed_otherwise_is_refused_with_what_it_has_and_needs(
    dynamodb: Any,
) -> None:
    options = names()
    create_lease_table(dynamodb, options.lease_table_name)
    make_table(dynamodb, options.ledger_table_name, ("id", "HASH", "N"))

    with pytest.raises(ConfigurationError) as refused:
        runner.prepare_tables(dynamodb, options)

    assert str(refused.value) == (
        f"the ledger table '{options.ledger_table_name}' is keyed by id (N); "
        "kinesis_eo needs pk (S)"
    )


def test_a_lease_table_without_the_kcl_schema_is_refused(dynamodb: Any) -> None:
    options = names()
    make_table(
        dynamodb, options.lease_table_name, ("leaseKey", "HASH", "S"), ("owner", "RANGE", "S")
    )
    create_ledger_table(dynamodb, options.ledger_table_name)

    with pytest.raises(ConfigurationError) as refused:
        runner.prepare_tables(dynamodb, options)

    assert str(refused.value) == (
        f"the lease table '{options.lease_table_name}' is keyed by leaseKey (S) with sort key "
        "owner (S); kinesis_eo needs leaseKey (S)"
    )


def test_a_dead_letter_table_without_its_sort_key_is_refused(dynamodb: Any) -> None:
    options = dataclasses.replace(names(), dead_letter_table=f"dl-{uuid.uuid4().hex[:8]}")
    create_lease_table(dynamodb, options.lease_table_name)
    create_ledger_table(dynamodb, options.ledger_table_name)
    make_table(dynamodb, str(options.dead_letter_table), ("pk", "HASH", "S"))

    with pytest.raises(ConfigurationError) as refused:
        runner.prepare_tables(dynamodb, options)

    assert str(refused.value) == (
        f"the dead-letter table '{options.dead_letter_table}' is keyed by pk (S); "
        "kinesis_eo needs pk (S) with sort key sk (S)"
    )


def test_tables_made_by_the_toolkit_pass_without_warnings(dynamodb: Any) -> None:
    options = dataclasses.replace(names(), dead_letter_table=f"dl-{uuid.uuid4().hex[:8]}")
    create_lease_table(dynamodb, options.lease_table_name)
    create_ledger_table(dynamodb, options.ledger_table_name)
    create_dead_letter_table(dynamodb, str(options.dead_letter_table))

    assert runner.prepare_tables(dynamodb, options) == []


def test_a_ledger_without_ttl_is_a_warning_not_an_error(
    dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Marks that never expire cost storage; they never let a record through twice.
    options = names()
    create_lease_table(dynamodb, options.lease_table_name)
    make_table(dynamodb, options.ledger_table_name, ("pk", "HASH", "S"))

    with caplog.at_level(logging.WARNING, logger="kinesis_eo.preflight"):
        warnings = runner.prepare_tables(dynamodb, options)

    expected = (
        f"the ledger table '{options.ledger_table_name}' has its TTL disabled, not on "
        "expires_at: its marks will never expire (safe, but the table grows); enable TTL "
        "on expires_at to let DynamoDB delete them"
    )
    assert warnings == [expected]
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_a_ledger_with_ttl_on_another_attribute_is_warned_about_by_name(dynamodb: Any) -> None:
    options = names()
    create_lease_table(dynamodb, options.lease_table_name)
    make_table(dynamodb, options.ledger_table_name, ("pk", "HASH", "S"))
    dynamodb.update_time_to_live(
        TableName=options.ledger_table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
    )

    (warning,) = runner.prepare_tables(dynamodb, options)

    assert "has its TTL on ttl, not on expires_at" in warning


def test_a_role_that_may_not_read_the_ttl_gets_a_warning_and_starts(dynamodb: Any) -> None:
    # The TTL's answer could only ever give a warning: a denied look must not stop the worker.
    options = names()
    create_lease_table(dynamodb, options.lease_table_name)
    create_ledger_table(dynamodb, options.ledger_table_name)
    faults = FaultInjector().attach(dynamodb)
    faults.fail("DescribeTimeToLive", "AccessDeniedException")

    (warning,) = runner.prepare_tables(dynamodb, options)

    assert warning == (
        f"the TTL of the ledger table '{options.ledger_table_name}' could not be checked "
        "(dynamodb:DescribeTimeToLive is not allowed); it should be enabled on expires_at"
    )


def test_create_tables_refuses_an_existing_table_with_wrong_keys_and_leaves_it_alone(
    dynamodb: Any,
) -> None:
    options = dataclasses.replace(names(), create_tables=True)
    make_table(dynamodb, options.ledger_table_name, ("id", "HASH", "N"))

    with pytest.raises(ConfigurationError, match=r"is keyed by id \(N\); kinesis_eo needs pk"):
        runner.prepare_tables(dynamodb, options)

    # Not the toolkit's table: no TTL was switched on for it.
    assert ttl_status(dynamodb, options.ledger_table_name) == "DISABLED"


def test_create_tables_makes_the_missing_ones_and_passes(dynamodb: Any) -> None:
    options = dataclasses.replace(names(), create_tables=True)

    assert runner.prepare_tables(dynamodb, options) == []
    assert ttl_status(dynamodb, options.ledger_table_name) == "ENABLED"


# --- marks outlive records -------------------------------------------------------------------


def per_record(options: runner.RunOptions, **changes: Any) -> runner.RunOptions:
    return dataclasses.replace(options, mode="per-record", **changes)


def test_a_mark_ttl_shorter_than_the_streams_retention_is_refused(kinesis: Any) -> None:
    options = per_record(names(), mark_ttl_hours=200.0)
    make_stream(kinesis, options.stream, retention_hours=YEAR_H)

    with pytest.raises(ConfigurationError) as refused:
        runner.fit_mark_ttl(kinesis, options)

    assert str(refused.value) == (
        f"per-record marks expire after 200 h but stream '{options.stream}' keeps records "
        "for 8760 h, so a replay of an older record would apply it twice: set "
        "--mark-ttl-hours to at least 8784 h (the retention plus 24 h)"
    )


def test_the_default_mark_ttl_is_raised_to_the_retention_plus_a_day_and_logged(
    kinesis: Any, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    options = per_record(names())
    make_stream(kinesis, options.stream, retention_hours=YEAR_H)

    with caplog.at_level(logging.INFO, logger="kinesis_eo.preflight"):
        fitted = runner.fit_mark_ttl(kinesis, options)

    assert fitted.mark_ttl_hours == YEAR_H + 24
    sink = runner.build_sink(fitted, count_effect, dynamodb)
    assert sink.ledger.config.record_ttl == timedelta(hours=YEAR_H + 24)
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert message == (
        f"per-record marks will expire after 8784 h instead of 192 h: stream "
        f"'{options.stream}' keeps records for 8760 h"
    )


def test_a_mark_ttl_that_outlives_the_retention_is_kept(kinesis: Any) -> None:
    default = per_record(names())
    make_stream(kinesis, default.stream)  # 24 h: the default 8 days outlive it
    requested = dataclasses.replace(default, mark_ttl_hours=48.0)

    assert runner.fit_mark_ttl(kinesis, default) == default
    assert runner.fit_mark_ttl(kinesis, requested) == requested


def test_a_mark_ttl_within_the_margin_is_refused(kinesis: Any) -> None:
    # 24 h retention, 30 h marks: a record read at the trim horizon and held up
    # by an outage for more than 6 h would find its mark gone.
    options = per_record(names(), mark_ttl_hours=30.0)
    make_stream(kinesis, options.stream)

    with pytest.raises(ConfigurationError, match="at least 48 h"):
        runner.fit_mark_ttl(kinesis, options)


def test_watermark_mode_keeps_no_per_record_marks_so_the_ttl_is_not_checked(
    kinesis: Any,
) -> None:
    options = dataclasses.replace(names(), mode="watermark", mark_ttl_hours=1.0)
    make_stream(kinesis, options.stream, retention_hours=YEAR_H)

    assert runner.fit_mark_ttl(kinesis, options) == options


def test_the_stream_may_be_named_by_its_arn(kinesis: Any) -> None:
    options = per_record(names())
    make_stream(kinesis, options.stream, retention_hours=200)
    arn = kinesis.describe_stream_summary(StreamName=options.stream)["StreamDescriptionSummary"][
        "StreamARN"
    ]

    fitted = preflight.fit_ledger_config(
        kinesis, arn, LedgerConfig("g", LedgerMode.PER_RECORD), ttl_requested=False
    )

    assert fitted.record_ttl == timedelta(hours=224)


# --- the asyncio path --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_checks_run_with_asyncio_clients_too(
    moto_server: MotoServer, async_client: Any
) -> None:
    options = names("apre")
    sync_dynamodb, sync_kinesis = moto_server.client("dynamodb"), moto_server.client("kinesis")
    make_table(sync_dynamodb, options.ledger_table_name, ("id", "HASH", "N"))
    make_stream(sync_kinesis, options.stream, retention_hours=YEAR_H)
    kwargs = moto_server.client_kwargs()
    async with (
        async_client("kinesis", **kwargs) as kinesis,
        async_client("dynamodb", **kwargs) as dynamodb,
    ):
        with pytest.raises(ConfigurationError, match=r"is keyed by id \(N\)"):
            await preflight.acheck_tables(
                dynamodb, [(preflight.LEDGER_TABLE, options.ledger_table_name)]
            )
        config = LedgerConfig("g", LedgerMode.PER_RECORD, record_ttl=timedelta(days=8))
        with pytest.raises(ConfigurationError, match="at least 8784 h"):
            await preflight.afit_ledger_config(kinesis, options.stream, config)
        raised = await preflight.afit_ledger_config(
            kinesis, options.stream, config, ttl_requested=False
        )
    assert raised.record_ttl == timedelta(hours=YEAR_H + 24)


# --- settings that cannot work ----------------------------------------------------------------


@pytest.mark.parametrize("failover_s", [0.0001, 0.5, float("nan"), float("inf")])
def test_a_failover_too_short_to_renew_in_is_refused(failover_s: float) -> None:
    with pytest.raises(ValueError, match="failover_s must be at least 1 s"):
        LeaseConfig("leases", failover_s=failover_s)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"renew_interval_s": 0.001}, "renew_interval_s must be at least 0.05 s"),
        ({"take_interval_s": -1.0}, "take_interval_s must be at least 0.05 s"),
        ({"max_leases_per_worker": 0}, "max_leases_per_worker must be at least 1"),
    ],
)
def test_lease_intervals_that_make_a_busy_loop_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LeaseConfig("leases", failover_s=10.0, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_records": 0}, "max_records must be within 1..10000, got 0"),
        ({"max_records": 10_001}, "max_records must be within 1..10000"),
        ({"min_read_interval_s": float("nan")}, "min_read_interval_s must be 0 or more"),
        ({"idle_interval_s": float("inf")}, "idle_interval_s must be 0 or more"),
        ({"idle_interval_s": -0.5}, "idle_interval_s must be 0 or more"),
        ({"list_shards_page_size": 0}, "list_shards_page_size must be within 1..10000"),
    ],
)
def test_reader_settings_outside_what_kinesis_allows_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ReaderConfig(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"record_ttl": timedelta(0)}, "record_ttl must be positive"),
        ({"record_ttl": timedelta(hours=-1)}, "record_ttl must be positive"),
        ({"max_transaction_items": 101}, "at most 100 items per transaction"),
    ],
)
def test_ledger_settings_that_guard_nothing_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LedgerConfig("g", **changes)


# --- the Lambda sample, at cold start ----------------------------------------------------------


def lambda_sample(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = Path(__file__).resolve().parents[1] / "samples" / "lambda_orders.py"
    spec = importlib.util.spec_from_file_location(f"lambda_orders_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lambda_sample_fits_its_marks_to_the_stream_at_cold_start(
    kinesis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = f"orders-{uuid.uuid4().hex[:8]}"
    make_stream(kinesis, stream, retention_hours=YEAR_H)
    env = {"LEDGER_TABLE": "ledger", "DEAD_LETTER_QUEUE_URL": "https://sqs.invalid/q"}

    sample = lambda_sample(monkeypatch, **env)
    assert sample._entry_point(stream).ledger.config.record_ttl == timedelta(hours=YEAR_H + 24)

    too_short = lambda_sample(monkeypatch, **env, MARK_TTL_HOURS="200")
    with pytest.raises(ConfigurationError, match="set MARK_TTL_HOURS to at least 8784 h"):
        too_short._entry_point(stream)
