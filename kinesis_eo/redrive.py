"""Redrive: apply records that were set aside again, through the exactly-once machinery.

Three sources, each named ``KIND:WHERE`` (:meth:`RedriveSource.parse`):

- ``sqs:QUEUE_URL``: dead letters that :class:`~kinesis_eo.deadletter.SqsDeadLetterQueue`
  sent. The whole queue (up to ``max_items`` letters) is received before anything
  is applied, because a large letter comes in parts that may arrive in any order;
  :class:`~kinesis_eo.deadletter.DeadLetterAssembler` joins them and recognises copies.
- ``dynamodb:TABLE``: dead letters that :class:`~kinesis_eo.deadletter.DynamoDBDeadLetterTable`
  wrote, read whole (part items joined) by :func:`~kinesis_eo.deadletter.read_dead_letters_flow`.
- ``on-failure:QUEUE_URL``: what a Lambda event source mapping sends to its SQS
  on-failure destination when it gives up on a batch: no payload, only where
  the batch lay (:mod:`kinesis_eo.on_failure` documents the shape). The records
  are read again from the stream, while it still holds them, and applied.

The ledger, and why redriving is exactly once:

- A dead letter's record already holds a ``DEAD_LETTERED`` mark (per-record
  mode) or lies below its shard's watermark, so the consumer's own ledger would
  call it a duplicate. Letters are therefore applied under their own scope: a
  per-record ledger in the same table under the consumer group ``APP-redrive``
  (:func:`redrive_group`), keyed as the consumer keys records (the event id, else
  the position). Redriving a letter twice, or two copies of it, applies it once.
  The handler still gets the idempotency key of ``APP``, so a target that
  deduplicates by it recognises what the failed attempts may have left there.
- A letter whose handler fails again is left in its queue or table, as it was,
  and no mark is written, so that it can be redriven once the handler is fixed.
  (Dead-lettering it again would mark it done in ``APP-redrive`` and no later
  redrive could apply it.)
- On-failure records were never marked by the consumer, and some records of the
  range may have been applied before the mapping gave up, or may still be
  delivered by it: they are applied through ``APP``'s own per-record ledger,
  which knows both and lets only one of any two deliveries through. A watermark
  ledger cannot say which records below it were applied, so that source needs
  ``mode="per-record"``. A record of the range that fails again is dead-lettered
  with its payload when a dead-letter target is configured, else its message stays.
- A letter, or an on-failure message, is removed from its source only after the
  effects and marks of its records are committed; a crash in between leaves it,
  and the next redrive finds it already applied and removes it. The redrive marks
  live as long as the ledger's TTL (8 days): redrive what such a crash leaves
  behind within that time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from kinesis_eo.deadletter import (
    DeadLetter,
    DeadLetterAssembler,
    DeadLetterReason,
    DynamoDBDeadLetterConfig,
    describe_error,
    read_dead_letters_flow,
    table_items,
)
from kinesis_eo.errors import ConfigurationError, KinesisEOError
from kinesis_eo.flow import Call, run_sync
from kinesis_eo.ledger import DynamoDBLedgerStore, Ledger, LedgerConfig
from kinesis_eo.on_failure import BatchInfo, fetch_batch_flow, parse_on_failure
from kinesis_eo.records import Record
from kinesis_eo.retry import RetryConfig
from kinesis_eo.runner import RunOptions, build_sink, load_handler
from kinesis_eo.sinks import PoisonRecordError, idempotency_key

__all__ = [
    "REDRIVE_SUFFIX",
    "Outcome",
    "RedriveItem",
    "RedriveOptions",
    "RedriveReport",
    "RedriveSource",
    "SourceKind",
    "build_redrive_sink",
    "redrive",
    "redrive_flow",
    "redrive_group",
]

REDRIVE_SUFFIX = "-redrive"
SQS_BATCH = 10


def redrive_group(app: str) -> str:
    """The consumer group under which the letters of ``app`` are redriven."""
    return f"{app}{REDRIVE_SUFFIX}"


class SourceKind(Enum):
    QUEUE = "sqs"
    TABLE = "dynamodb"
    ON_FAILURE = "on-failure"


@dataclass(frozen=True, slots=True)
class RedriveSource:
    """Where the records to redrive are: a letter queue or table, or an on-failure queue."""

    kind: SourceKind
    where: str

    @classmethod
    def parse(cls, text: str) -> RedriveSource:
        """``sqs:QUEUE_URL``, ``dynamodb:TABLE`` or ``on-failure:QUEUE_URL``."""
        kind, colon, where = text.partition(":")
        kinds = {k.value: k for k in SourceKind}
        if not colon or kind not in kinds or not where:
            raise ConfigurationError(
                f"source {text!r} is not one kinesis-eo redrive reads: give sqs:QUEUE_URL, "
                "dynamodb:TABLE or on-failure:QUEUE_URL"
            )
        return cls(kinds[kind], where)

    @property
    def label(self) -> str:
        return f"table {self.where!r}" if self.kind is SourceKind.TABLE else f"queue {self.where!r}"


@dataclass(frozen=True, slots=True)
class RedriveOptions:
    """What to redrive and how far.

    ``reasons`` picks the letters (not on-failure records) to redrive: by default
    only ``PROCESSING_FAILED``, the records a fixed handler can apply. A
    ``CLAIM_EXPIRED`` letter's effect may have happened already and a
    ``PAYLOAD_MISMATCH`` letter shares its event id with another payload: redrive
    those only after a person decided to. ``visibility_timeout_s`` hides received
    messages from other readers while the redrive runs; those not removed are
    made visible again at the end. ``wait_s`` is the long poll of each receive.
    """

    source: RedriveSource
    dry_run: bool = False
    max_items: int | None = None
    reasons: frozenset[DeadLetterReason] = frozenset({DeadLetterReason.PROCESSING_FAILED})
    visibility_timeout_s: int = 300
    wait_s: int = 1

    def __post_init__(self) -> None:
        if self.max_items is not None and self.max_items < 1:
            raise ConfigurationError(f"--max must be at least 1, not {self.max_items}")
        if not 1 <= self.visibility_timeout_s <= 43_200:
            raise ConfigurationError("the visibility timeout must be 1 to 43200 seconds")


class Outcome(Enum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already applied"
    WOULD_REDRIVE = "would redrive"
    FAILED_AGAIN = "failed again, left in place"
    GONE = "gone from the stream"
    LEFT = "left in place"


@dataclass(frozen=True, slots=True)
class RedriveItem:
    """One letter or on-failure message, what became of it, and whether it left its source."""

    label: str
    outcome: Outcome
    detail: str = ""
    removed: bool = False

    def line(self) -> str:
        text = f"{self.label}: {self.outcome.value}"
        text += f" ({self.detail})" if self.detail else ""
        return text + ("; removed" if self.removed else "")


@dataclass
class RedriveReport:
    """Every item seen, in order; ``ok`` unless something failed again or is gone."""

    source: RedriveSource
    scope: str
    dry_run: bool
    items: list[RedriveItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(i.outcome in (Outcome.FAILED_AGAIN, Outcome.GONE) for i in self.items)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for i in self.items if i.outcome is outcome)

    def summary(self) -> str:
        counts = ", ".join(
            f"{self.count(o)} {o.value}"
            for o in Outcome
            if self.count(o) or (o is Outcome.APPLIED and not self.dry_run)
        )
        verb = "dry run of redrive" if self.dry_run else "redrive"
        return f"{verb} from {self.source.label} through consumer group {self.scope!r}: {counts}"


# --- applying records through a sink ------------------------------------------------------------


@dataclass
class _Applied:
    done: int = 0
    already: int = 0
    dead_lettered: int = 0
    failed: list[str] = field(default_factory=list)


def _apply_flow(sink: Any, records: Sequence[Record]) -> Generator[Any, Any, _Applied]:
    """Records through ``sink``; after a record without a dead-letter target fails, one by one.

    A sink raises :class:`PoisonRecordError` before it commits the batch's marks
    (the claim sink completes each record as it goes: those come back as already
    applied), so the records are applied again alone to single out the failing ones.
    """
    result = _Applied()
    try:
        report = yield from sink.process(list(records))
    except PoisonRecordError as exc:
        if len(records) > 1:
            for record in records:
                alone = yield from _apply_flow(sink, [record])
                result.done += alone.done
                result.already += alone.already
                result.dead_lettered += alone.dead_lettered
                result.failed += alone.failed
            return result
        result.failed.append(describe_error(exc.__cause__ or exc, 300))
        return result
    dead = {id(letter.record) for letter in report.dead_lettered}
    result.done = len(report.applied)
    result.already = len(report.duplicates)
    result.dead_lettered = len(dead)
    accounted = {id(r) for r in report.applied} | {id(r) for r in report.duplicates} | dead
    result.failed += ["not committed" for r in records if id(r) not in accounted]
    return result


def _outcome(applied: _Applied) -> Outcome:
    if applied.failed:
        return Outcome.FAILED_AGAIN
    return Outcome.APPLIED if applied.done or applied.dead_lettered else Outcome.ALREADY_APPLIED


# --- SQS ----------------------------------------------------------------------------------------


def _receive_flow(
    queue_url: str,
    options: RedriveOptions,
    take: Callable[[Mapping[str, Any]], None],
    enough: Callable[[], bool],
) -> Generator[Any, Any, None]:
    """Hand every message to ``take`` until a receive comes back empty or ``enough()``."""
    params = {
        "QueueUrl": queue_url,
        "MaxNumberOfMessages": SQS_BATCH,
        "VisibilityTimeout": options.visibility_timeout_s,
        "WaitTimeSeconds": options.wait_s,
    }
    seen: set[str] = set()
    while True:
        response = yield Call(
            "receive_message", params, f"queue {queue_url!r}", "ReceiveMessage", "sqs"
        )
        messages = response.get("Messages") or []
        for message in messages:
            take(message)
        # Messages seen before came back because the visibility timeout ran out:
        # the queue has been read through.
        fresh = {str(m.get("MessageId")) for m in messages} - seen
        seen |= fresh
        if not fresh or enough():
            return


def _messages_flow(
    queue_url: str, method: str, entries: Sequence[dict[str, Any]]
) -> Generator[Any, Any, list[str]]:
    """Delete or release messages in batches of ten; returns why any entry failed."""
    action = "DeleteMessageBatch" if method == "delete_message_batch" else "ChangeVisibility"
    failures: list[str] = []
    for start in range(0, len(entries), SQS_BATCH):
        chunk = [{"Id": f"e{n}", **e} for n, e in enumerate(entries[start : start + SQS_BATCH])]
        params = {"QueueUrl": queue_url, "Entries": chunk}
        response = yield Call(method, params, f"queue {queue_url!r}", action, "sqs")
        failures += [str(f.get("Message") or f.get("Code")) for f in response.get("Failed") or []]
    return failures


def _release_flow(queue_url: str, handles: Sequence[str]) -> Generator[Any, Any, None]:
    """Make received messages visible again at once, for people and the next redrive."""
    entries = [{"ReceiptHandle": h, "VisibilityTimeout": 0} for h in handles]
    yield from _messages_flow(queue_url, "change_message_visibility_batch", entries)


def _delete_flow(queue_url: str, handles: Sequence[str]) -> Generator[Any, Any, str]:
    entries = [{"ReceiptHandle": h} for h in handles]
    failures = yield from _messages_flow(queue_url, "delete_message_batch", entries)
    # A message left behind is found already applied by the next redrive, and removed then.
    return f"{len(failures)} message(s) not removed: {failures[0]}" if failures else ""


class _QueueLetters:
    """Letters assembled from a queue's messages, with every receipt handle of each."""

    def __init__(self, app: str, options: RedriveOptions) -> None:
        self.app = app
        self.options = options
        self.assembler = DeadLetterAssembler()
        self.handles: dict[str, list[str]] = {}
        self.letters: list[DeadLetter] = []
        self.left: list[RedriveItem] = []
        self.stray: list[str] = []

    def enough(self) -> bool:
        limit = self.options.max_items
        return limit is not None and len(self.letters) >= limit

    def take(self, message: Mapping[str, Any]) -> None:
        handle = str(message["ReceiptHandle"])
        try:
            letter_id = json.loads(message.get("Body") or "")["letter_id"]
            letter = self.assembler.add(message)
        except (ValueError, KeyError, TypeError, KinesisEOError) as exc:
            self.stray.append(handle)
            why = describe_error(exc, 200)
            self.left.append(RedriveItem(f"message {message.get('MessageId')}", Outcome.LEFT, why))
            return
        self.handles.setdefault(str(letter_id), []).append(handle)
        if letter is None:
            return
        if letter.consumer_group != self.app:
            why = f"a letter of consumer group {letter.consumer_group!r}"
            self.left.append(RedriveItem(_letter_label(letter), Outcome.LEFT, why))
        elif letter.reason not in self.options.reasons:
            why = f"reason {letter.reason.value} was not asked for"
            self.left.append(RedriveItem(_letter_label(letter), Outcome.LEFT, why))
        elif not self.enough():
            self.letters.append(letter)

    def unchosen_handles(self) -> list[str]:
        chosen = {letter.letter_id for letter in self.letters}
        rest = [h for lid, hs in self.handles.items() if lid not in chosen for h in hs]
        return rest + self.stray


def _letter_label(letter: DeadLetter) -> str:
    return f"letter {letter.letter_id} {letter.describe()}"


def _letter_detail(letter: DeadLetter) -> str:
    return f"{letter.reason.value} after {letter.attempts} attempt(s): {letter.error[:200]}"


def _queue_letters_flow(
    sink: Any, app: str, options: RedriveOptions, report: RedriveReport
) -> Generator[Any, Any, None]:
    queue_url = options.source.where
    found = _QueueLetters(app, options)
    yield from _receive_flow(queue_url, options, found.take, found.enough)
    report.items += found.left
    for letter_id, missing in found.assembler.incomplete().items():
        why = f"parts {missing} were not received"
        report.items.append(RedriveItem(f"letter {letter_id}", Outcome.LEFT, why))
    keep = found.unchosen_handles()
    for letter in found.letters:
        handles = found.handles[letter.letter_id]
        if options.dry_run:
            keep += handles
            item = RedriveItem(_letter_label(letter), Outcome.WOULD_REDRIVE, _letter_detail(letter))
            report.items.append(item)
            continue
        applied = yield from _apply_flow(sink, [letter.record])
        outcome = _outcome(applied)
        if outcome is Outcome.FAILED_AGAIN:
            keep += handles
            report.items.append(RedriveItem(_letter_label(letter), outcome, applied.failed[0]))
            continue
        problem = yield from _delete_flow(queue_url, handles)
        report.items.append(RedriveItem(_letter_label(letter), outcome, problem, not problem))
    yield from _release_flow(queue_url, keep)


# --- DynamoDB -----------------------------------------------------------------------------------


def _delete_table_letter_flow(table: str, letter: DeadLetter) -> Generator[Any, Any, None]:
    """Delete a letter's head item, then its part items (parts without a head are ignored)."""
    head = table_items(letter, DynamoDBDeadLetterConfig())[-1]
    params: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :sk)",
        "ExpressionAttributeValues": {":pk": head["pk"], ":sk": head["sk"]},
        "ProjectionExpression": "pk, sk",
        "ConsistentRead": True,
    }
    keys: list[dict[str, Any]] = []
    while True:
        response = yield Call("query", params, f"table {table!r}", "Query", "dynamodb")
        keys += response.get("Items") or []
        if not response.get("LastEvaluatedKey"):
            break
        params = {**params, "ExclusiveStartKey": response["LastEvaluatedKey"]}
    keys.sort(key=lambda k: k["sk"] != head["sk"])
    for key in keys:
        params = {"TableName": table, "Key": {"pk": key["pk"], "sk": key["sk"]}}
        yield Call("delete_item", params, f"table {table!r}", "DeleteItem", "dynamodb")


def _table_letters_flow(
    sink: Any, app: str, options: RedriveOptions, report: RedriveReport
) -> Generator[Any, Any, None]:
    table = options.source.where
    letters = yield from read_dead_letters_flow(table, app)
    chosen = [letter for letter in letters if letter.reason in options.reasons]
    for letter in chosen[: options.max_items]:
        if options.dry_run:
            item = RedriveItem(_letter_label(letter), Outcome.WOULD_REDRIVE, _letter_detail(letter))
            report.items.append(item)
            continue
        applied = yield from _apply_flow(sink, [letter.record])
        outcome = _outcome(applied)
        if outcome is Outcome.FAILED_AGAIN:
            report.items.append(RedriveItem(_letter_label(letter), outcome, applied.failed[0]))
            continue
        yield from _delete_table_letter_flow(table, letter)
        report.items.append(RedriveItem(_letter_label(letter), outcome, removed=True))


# --- the event source mapping's on-failure records ----------------------------------------------


def _on_failure_flow(
    sink: Any, options: RedriveOptions, report: RedriveReport
) -> Generator[Any, Any, None]:
    queue_url = options.source.where
    batches: list[tuple[BatchInfo, str]] = []
    keep: list[str] = []

    def take(message: Mapping[str, Any]) -> None:
        handle = str(message["ReceiptHandle"])
        try:
            batches.append((parse_on_failure(str(message.get("Body"))), handle))
        except ValueError as exc:
            keep.append(handle)
            label = f"message {message.get('MessageId')}"
            report.items.append(RedriveItem(label, Outcome.LEFT, str(exc)))

    def enough() -> bool:
        return options.max_items is not None and len(batches) >= options.max_items

    yield from _receive_flow(queue_url, options, take, enough)
    for info, handle in batches:
        if options.dry_run:
            keep.append(handle)
            detail = f"{info.batch_size} record(s), {info.condition or 'no condition given'}"
            report.items.append(RedriveItem(info.label, Outcome.WOULD_REDRIVE, detail))
            continue
        records, gone = yield from fetch_batch_flow(info)
        applied = (yield from _apply_flow(sink, records)) if records else _Applied()
        detail = (
            f"{applied.done} applied, {applied.already} already applied, "
            f"{applied.dead_lettered} dead-lettered, {len(applied.failed)} failed"
        )
        if gone or applied.failed:
            keep.append(handle)
            outcome = Outcome.GONE if gone else Outcome.FAILED_AGAIN
            why = gone or applied.failed[0]
            report.items.append(RedriveItem(info.label, outcome, f"{why}; {detail}"))
            continue
        problem = yield from _delete_flow(queue_url, [handle])
        item = RedriveItem(info.label, _outcome(applied), problem or detail, not problem)
        report.items.append(item)
    yield from _release_flow(queue_url, keep)


# --- the whole redrive --------------------------------------------------------------------------


def redrive_flow(
    run: RunOptions, options: RedriveOptions, sink: Any
) -> Generator[Any, Any, RedriveReport]:
    """Redrive ``options.source`` through ``sink`` (see :func:`build_redrive_sink`)."""
    kind = options.source.kind
    scope = run.app if kind is SourceKind.ON_FAILURE else redrive_group(run.app)
    report = RedriveReport(options.source, scope, options.dry_run)
    if kind is SourceKind.QUEUE:
        yield from _queue_letters_flow(sink, run.app, options, report)
    elif kind is SourceKind.TABLE:
        yield from _table_letters_flow(sink, run.app, options, report)
    else:
        yield from _on_failure_flow(sink, options, report)
    return report


def build_redrive_sink(
    run: RunOptions,
    source: RedriveSource,
    handler: Callable[..., Any],
    clients: Mapping[str, Any],
    retry: RetryConfig | None = None,
) -> Any:
    """The sink ``kinesis-eo run`` would build, scoped for a redrive of ``source``."""
    if source.kind is SourceKind.ON_FAILURE:
        if run.mode != "per-record":
            raise ConfigurationError(
                f"on-failure records of {run.app!r} can only be redriven through its "
                "per-record ledger (--mode per-record): a watermark cannot tell which "
                "records below it were applied"
            )
        return _with_flow_runner(build_sink(run, handler, clients["dynamodb"], clients.get("sqs")))
    if run.dead_letter_table or run.dead_letter_queue:
        raise ConfigurationError(
            f"a dead-letter target is for on-failure sources only: a letter from "
            f"{source.label} that fails again stays there"
        )
    scoped = replace(
        run, app=redrive_group(run.app), mode="per-record", ledger_table=run.ledger_table_name
    )
    sink = build_sink(scoped, handler, clients["dynamodb"])
    # The handler sees the key it saw when the record failed, so that a target that
    # deduplicates by it recognises whatever those attempts left behind.
    original = Ledger(DynamoDBLedgerStore(run.ledger_table_name), LedgerConfig(run.app))
    sink.key_of = lambda record: idempotency_key(original, record)
    return _with_flow_runner(sink, clients, retry)


def _with_flow_runner(
    sink: Any, clients: Mapping[str, Any] | None = None, retry: RetryConfig | None = None
) -> Any:
    if clients is not None:
        sink.bind(lambda flow: run_sync(flow, clients, retry or RetryConfig()))
    return sink


def redrive(
    run: RunOptions,
    options: RedriveOptions,
    clients: Mapping[str, Any],
    handler: Callable[..., Any] | None = None,
    retry: RetryConfig | None = None,
) -> RedriveReport:
    """Redrive with boto3 ``clients`` (``{"dynamodb", "sqs", "kinesis"}``, as the source needs).

    ``run`` names the handler, ``--app``, ledger table, sink and mode as for
    ``kinesis-eo run``; ``handler`` overrides ``run.handler`` (for programs and tests).
    """
    handler = handler if handler is not None else load_handler(run.handler)
    sink = build_redrive_sink(run, options.source, handler, clients, retry)
    flow = redrive_flow(run, options, sink)
    report: RedriveReport = run_sync(flow, clients, retry or RetryConfig())
    return report
