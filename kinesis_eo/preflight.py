"""Checks made once at start, before any shard is read: the tables' keys and TTL, the marks' TTL.

A table with the wrong key schema does not fail at start by itself: every
write to it fails later, in every shard loop, over and over. A per-record mark
that expires before the stream drops the record it guards lets a replay apply
that record twice. Both are cheaper to refuse at start, in one sentence that
names the resource, what it has and what kinesis_eo needs.

The checks are flows (:mod:`kinesis_eo.flow`), so the threaded worker, the
asyncio worker and the Lambda adapter share them; :func:`check_tables` /
:func:`acheck_tables` and :func:`fit_ledger_config` / :func:`afit_ledger_config`
run them with a boto3 or an aiobotocore client.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kinesis_eo.errors import AccessDeniedError, ConfigurationError, ResourceNotFoundError
from kinesis_eo.flow import Call, run_async, run_sync
from kinesis_eo.leases.model import LEASE_KEY, OWNER, OWNER_INDEX
from kinesis_eo.ledger.model import EXPIRES_AT, KEY, LedgerConfig, LedgerMode
from kinesis_eo.retrieval.shards import StreamRef
from kinesis_eo.retry import RetryConfig

__all__ = [
    "DEAD_LETTER_TABLE",
    "DEFAULT_RECORD_TTL",
    "LEASE_TABLE",
    "LEDGER_TABLE",
    "RETENTION_MARGIN",
    "KeyAttribute",
    "MarkTtl",
    "MissingTableError",
    "TableSchema",
    "acheck_tables",
    "afit_ledger_config",
    "check_table_flow",
    "check_tables",
    "check_tables_flow",
    "describe_keys",
    "fit_ledger_config",
    "key_schema_of",
    "mark_ttl_flow",
    "stream_retention_flow",
]

log = logging.getLogger(__name__)

# How much longer than the stream's retention a per-record mark must live. A mark
# is written when its record is applied, never before the record arrived, so its
# TTL already covers the record's time in the stream; the margin covers the time
# between reading a record near the trim horizon and committing it again: a shard
# paused by an outage (an outage dead-letters nothing and only waits), a poison
# record retried before it is dead-lettered, a replay started by hand, and the
# skew of the worker's clock, which stamps ``expires_at``. A day outlasts the
# outages DynamoDB and Kinesis have had in a region, and costs one more day of
# storage for each mark, a small part of the year a long-retention stream keeps.
RETENTION_MARGIN = timedelta(hours=24)
DEFAULT_RECORD_TTL: timedelta = LedgerConfig("-").record_ttl


# --- table key schemas and TTL ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyAttribute:
    """One attribute of a table's primary key: its name, HASH or RANGE, and S, N or B."""

    name: str
    key_type: str = "HASH"
    attribute_type: str = "S"

    def __str__(self) -> str:
        return f"{self.name} ({self.attribute_type})"


@dataclass(frozen=True, slots=True)
class TableSchema:
    """What kinesis_eo needs of one of its tables: the primary key and the TTL attribute."""

    kind: str
    keys: tuple[KeyAttribute, ...]
    ttl_attribute: str | None = None
    # Global secondary indexes (name, hash key) whose absence is a warning: slower, not wrong.
    indexes: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return describe_keys(self.keys)


def describe_keys(keys: Sequence[KeyAttribute]) -> str:
    """``pk (S)``, or ``pk (S) with sort key sk (S)``."""
    hash_keys = [str(k) for k in keys if k.key_type == "HASH"]
    sort_keys = [str(k) for k in keys if k.key_type == "RANGE"]
    text = " and ".join(hash_keys) or "nothing"
    if sort_keys:
        text += " with sort key " + " and ".join(sort_keys)
    return text


LEDGER_TABLE = TableSchema("ledger", (KeyAttribute(KEY),), ttl_attribute=EXPIRES_AT)
# The Java KCL's schema: a table can move between kinesis_eo and the KCL.
LEASE_TABLE = TableSchema("lease", (KeyAttribute(LEASE_KEY),), indexes=((OWNER_INDEX, OWNER),))
# As create_dead_letter_table makes it: letters of a shard under one partition key,
# sorted by position; no TTL (a person reads them, then deletes them).
DEAD_LETTER_TABLE = TableSchema("dead-letter", (KeyAttribute("pk"), KeyAttribute("sk", "RANGE")))


def key_schema_of(table: dict[str, Any]) -> tuple[KeyAttribute, ...]:
    """The primary key of a ``DescribeTable`` answer's ``Table``."""
    types = {
        d["AttributeName"]: d.get("AttributeType", "?")
        for d in table.get("AttributeDefinitions", [])
    }
    return tuple(
        KeyAttribute(k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], "?"))
        for k in table.get("KeySchema", [])
    )


class MissingTableError(ConfigurationError):
    """One of the toolkit's tables does not exist (or these credentials cannot see it)."""

    def __init__(self, message: str, *, table_name: str) -> None:
        super().__init__(message)
        self.table_name = table_name


def check_table_flow(
    schema: TableSchema, table_name: str, *, missing_hint: str = ""
) -> Generator[Any, Any, list[str]]:
    """Refuse a missing table or one keyed otherwise than ``schema``; return warnings.

    A ledger table whose TTL is not on ``expires_at`` is a warning, not an
    error: its marks then never expire, which costs storage but never lets a
    record through twice (a mark that stays is still a mark).
    """
    resource = f"{schema.kind} table '{table_name}'"
    try:
        response = yield Call(
            "describe_table", {"TableName": table_name}, resource, "DescribeTable", "dynamodb"
        )
    except ResourceNotFoundError as exc:
        raise MissingTableError(
            f"the {resource} does not exist{missing_hint}", table_name=table_name
        ) from exc
    found = key_schema_of(response.get("Table", {}))
    if sorted(found, key=_key_order) != sorted(schema.keys, key=_key_order):
        raise ConfigurationError(
            f"the {resource} is keyed by {describe_keys(found)}; kinesis_eo needs "
            f"{schema.describe()}"
        )
    warnings = _index_warnings(schema, response.get("Table", {}), resource)
    if schema.ttl_attribute is None:
        return warnings
    warning = yield from _ttl_warning(schema, table_name, resource)
    return warnings + ([warning] if warning else [])


def _index_warnings(schema: TableSchema, table: dict[str, Any], resource: str) -> list[str]:
    """A missing owner index: the workers fall back to scanning the table, which works but
    costs read units in proportion to shards times workers."""
    found = {
        index.get("IndexName"): [k["AttributeName"] for k in index.get("KeySchema", [])]
        for index in table.get("GlobalSecondaryIndexes", [])
    }
    return [
        f"the {resource} has no index {name} on {hash_key}: every worker will scan the whole "
        "table to find its leases (read units grow with shards times workers); add the index "
        "(infra/worker.yaml and --create-tables make it)"
        for name, hash_key in schema.indexes
        if found.get(name, [None])[0] != hash_key
    ]


def _key_order(key: KeyAttribute) -> tuple[int, str]:
    return (0 if key.key_type == "HASH" else 1, key.name)


def _ttl_warning(
    schema: TableSchema, table_name: str, resource: str
) -> Generator[Any, Any, str | None]:
    try:
        response = yield Call(
            "describe_time_to_live",
            {"TableName": table_name},
            resource,
            "DescribeTimeToLive",
            "dynamodb",
        )
    except AccessDeniedError:
        # Only a warning would follow from the answer; a role without the
        # permission must not stop the worker.
        return (
            f"the TTL of the {resource} could not be checked (dynamodb:DescribeTimeToLive "
            f"is not allowed); it should be enabled on {schema.ttl_attribute}"
        )
    ttl = response.get("TimeToLiveDescription", {})
    status = ttl.get("TimeToLiveStatus", "DISABLED")
    attribute = ttl.get("AttributeName")
    if status in ("ENABLED", "ENABLING") and attribute == schema.ttl_attribute:
        return None
    has = f"on {attribute}" if attribute and status in ("ENABLED", "ENABLING") else status.lower()
    return (
        f"the {resource} has its TTL {has}, not on {schema.ttl_attribute}: its marks will "
        "never expire (safe, but the table grows); enable TTL on "
        f"{schema.ttl_attribute} to let DynamoDB delete them"
    )


def check_tables_flow(
    tables: Sequence[tuple[TableSchema, str]], *, missing_hint: str = ""
) -> Generator[Any, Any, list[str]]:
    """:func:`check_table_flow` for each ``(schema, table name)``; the warnings of all."""
    warnings: list[str] = []
    for schema, name in tables:
        warnings += yield from check_table_flow(schema, name, missing_hint=missing_hint)
    return warnings


def check_tables(
    dynamodb: Any,
    tables: Sequence[tuple[TableSchema, str]],
    *,
    missing_hint: str = "",
    retry: RetryConfig | None = None,
) -> list[str]:
    """Check ``tables`` with a boto3 client; logs each warning and returns them."""
    flow = check_tables_flow(tables, missing_hint=missing_hint)
    warnings: list[str] = run_sync(flow, dynamodb, retry or RetryConfig())
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


async def acheck_tables(
    dynamodb: Any,
    tables: Sequence[tuple[TableSchema, str]],
    *,
    missing_hint: str = "",
    retry: RetryConfig | None = None,
) -> list[str]:
    """:func:`check_tables` with an aiobotocore client."""
    flow = check_tables_flow(tables, missing_hint=missing_hint)
    warnings: list[str] = await run_async(flow, dynamodb, retry or RetryConfig())
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


# --- marks outlive records ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarkTtl:
    """The TTL per-record marks get on a stream, and why.

    ``raised`` says the TTL was not the user's and was lifted to ``needed``.
    """

    ttl: timedelta
    retention: timedelta
    needed: timedelta
    raised: bool


def stream_retention_flow(stream: str | StreamRef) -> Generator[Any, Any, timedelta]:
    """How long ``stream`` keeps records (``DescribeStreamSummary``)."""
    ref = StreamRef.of(stream)
    response = yield Call(
        "describe_stream_summary", ref.params(), str(ref), "DescribeStreamSummary", "kinesis"
    )
    hours = response["StreamDescriptionSummary"]["RetentionPeriodHours"]
    return timedelta(hours=int(hours))


def mark_ttl_flow(
    stream: str | StreamRef,
    ttl: timedelta,
    *,
    ttl_requested: bool,
    margin: timedelta = RETENTION_MARGIN,
    setting: str = "record_ttl",
) -> Generator[Any, Any, MarkTtl]:
    """The TTL per-record marks need on ``stream``: at least its retention plus ``margin``.

    A replay of a record older than its mark would apply it twice. A TTL the
    user asked for (``ttl_requested``) that is too short is refused, naming
    ``setting``; a default one is raised to what the stream needs.
    """
    ref = StreamRef.of(stream)
    retention = yield from stream_retention_flow(ref)
    needed = retention + margin
    if ttl >= needed:
        return MarkTtl(ttl, retention, needed, raised=False)
    if not ttl_requested:
        return MarkTtl(needed, retention, needed, raised=True)
    raise ConfigurationError(
        f"per-record marks expire after {_hours(ttl)} h but {ref} keeps records for "
        f"{_hours(retention)} h, so a replay of an older record would apply it twice: "
        f"set {setting} to at least {_hours(needed)} h (the retention plus "
        f"{_hours(margin)} h)"
    )


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g}"


def _fitted(config: LedgerConfig, result: MarkTtl, stream: str | StreamRef) -> LedgerConfig:
    if not result.raised:
        return config
    log.info(
        "per-record marks will expire after %s h instead of %s h: %s keeps records for %s h",
        _hours(result.ttl),
        _hours(config.record_ttl),
        StreamRef.of(stream),
        _hours(result.retention),
        extra={
            "mark_ttl_hours": result.ttl.total_seconds() / 3600,
            "retention_hours": result.retention.total_seconds() / 3600,
        },
    )
    return dataclasses.replace(config, record_ttl=result.ttl)


def fit_ledger_config(
    kinesis: Any,
    stream: str | StreamRef,
    config: LedgerConfig,
    *,
    ttl_requested: bool = True,
    margin: timedelta = RETENTION_MARGIN,
    setting: str = "record_ttl",
    retry: RetryConfig | None = None,
) -> LedgerConfig:
    """``config`` with a ``record_ttl`` that outlives ``stream``'s records, or an error.

    Only per-record mode needs it: in watermark mode the watermark guards each
    shard and never expires, so ``config`` comes back as it is, with no call.
    Pass ``ttl_requested=False`` when ``config.record_ttl`` is the default: it
    is then raised (and logged at INFO) instead of refused.
    """
    if config.mode is not LedgerMode.PER_RECORD:
        return config
    flow = mark_ttl_flow(
        stream, config.record_ttl, ttl_requested=ttl_requested, margin=margin, setting=setting
    )
    result: MarkTtl = run_sync(flow, kinesis, retry or RetryConfig())
    return _fitted(config, result, stream)


async def afit_ledger_config(
    kinesis: Any,
    stream: str | StreamRef,
    config: LedgerConfig,
    *,
    ttl_requested: bool = True,
    margin: timedelta = RETENTION_MARGIN,
    setting: str = "record_ttl",
    retry: RetryConfig | None = None,
) -> LedgerConfig:
    """:func:`fit_ledger_config` with an aiobotocore client."""
    if config.mode is not LedgerMode.PER_RECORD:
        return config
    flow = mark_ttl_flow(
        stream, config.record_ttl, ttl_requested=ttl_requested, margin=margin, setting=setting
    )
    result: MarkTtl = await run_async(flow, kinesis, retry or RetryConfig())
    return _fitted(config, result, stream)
