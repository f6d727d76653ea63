"""moto's ``TransactWriteItems`` with an undo log instead of whole-table copies.

Why: stock moto (5.2, ``DynamoDBBackend.transact_write_items``) deep-copies the
target table once per item of the transaction before running it, so that it can
put the copy back if the transaction is canceled. The cost grows with the table,
not with the transaction. Measured on our machine: with 1,000 items in the
table, a 100-item transaction takes about 0.5 s; with 4,000 items, 2.2 s and
5.9 GB; with 10,000 items the emulator ran out of 24 GB. The memory is not a
peak: moto keeps every model object it creates (``BaseModel.__new__`` appends
it to a class-level list) until a reset, so every table copy, and every item
in it, stays in memory for the life of the emulator.

Who uses it: only the emulator processes the toolkit starts itself (the demo,
the chaos harness, the benchmarks), which run moto in-process (``mock_aws``) or
as a ``ThreadedMotoServer`` in the same process. :func:`install` patches the
backend class, so both see it. The normal test suite runs on stock moto.

How: the replacement is moto's own function, line for line, with the same
per-item helpers (``get_item``, ``put_item``, ``update_item``,
``delete_item``, ``get_filter_expression``) and the same exceptions. Only the
rollback changes: before an item is first touched, the undo log records the
item and a copy of its attributes, or that it was absent, and the length of the
table's stream record list; on cancellation exactly those items and records are
put back. Secondary indexes need nothing: moto derives them from the items on
every read.

``tests/test_moto_transactions.py`` proves the equivalence: each scenario runs
on a fresh stock moto and on a fresh patched one, and the response or error
(class, code, message, cancellation reasons with their ``ALL_OLD`` items), the
tables' contents and item counts, the internal item layout and the stream
records must be identical. It also checks that no table is copied and that
what a transaction copies and leaves in memory does not depend on table size.

Stock behaviour kept on purpose, because equivalence is the contract: a table
named only by ARN in a transaction is not rolled back, and an entry holding two
operations (``TransactWriteSingleOpException``) leaves the entries before it
written. The one difference: stock swaps in a new table object on rollback,
which leaves an existing DynamoDB Streams shard iterator on the old object
(it keeps the canceled records and misses later ones). Here the table and its
stream shard stay the same objects, so such iterators keep working.

:func:`install` refuses a moto whose relevant functions differ from the ones
verified here.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["install", "installed", "undo_log_transactions", "uninstall"]

# sha256 of the source of every moto function whose behaviour the replacement
# copies or relies on. A moto release that changes any of them may have changed
# what "equivalent" means: rerun tests/test_moto_transactions.py against it and
# add the new digests here only if it passes.
_VERIFIED_SOURCES: dict[str, frozenset[str]] = {
    # moto 5.2.5
    "DynamoDBBackend.transact_write_items": frozenset(
        {"81db2cb7d94e39c90b3a2077e1f4bb41a449c558ef9b1b1e2910fdaa39978ad4"}
    ),
    "DynamoDBBackend.get_table": frozenset(
        {"a738146035fc206b81e0659a004dcc62ae70eb356ef7c5ab771ba68bdd2d7ab0"}
    ),
    "DynamoDBBackend.get_keys_value": frozenset(
        {"1f948797496ddc2cd4e4752e29e470d19ce757ca3406e07fed6bd90b331c1caa"}
    ),
    "DynamoDBBackend.get_item": frozenset(
        {"290b95c46b38bc5ac8079668e9c449bba9b6b26f4a2872d80ca262115023e189"}
    ),
    "DynamoDBBackend.put_item": frozenset(
        {"f5d9a5042c77b89e5f4c88b5884f7966b9dccd95b8b04090ee9e07afc5eea675"}
    ),
    "DynamoDBBackend.update_item": frozenset(
        {"218984588dd689a5de81678ce11e6a40d05c91e7b6c21b44c4ed4122fe74aa9f"}
    ),
    "DynamoDBBackend.delete_item": frozenset(
        {"083a4bb1af18f6fd2feef40195a4c9c803da66cb2cacd14f87916c6e76930ea5"}
    ),
    "Table.get_item": frozenset(
        {"b08e98fe37b7e5836afe03b010d637ef50df5dea6cbecd9cf8816eef326a21cd"}
    ),
    "Table.put_item": frozenset(
        {"de23933013ef842639046c19bcf7e418bce0474d810f6719368be4cedce11d47"}
    ),
    "Table.delete_item": frozenset(
        {"1594f7b07616c8cb8cdf0fbf58d6f54eeac83f25d7ac7b14e832a08e10efd8f9"}
    ),
    "StreamShard.add": frozenset(
        {"357dc6da267e5dd7d46e18ee25d14b232a98679677906a2f02e4d454d1f11e03"}
    ),
}

_lock = threading.Lock()
_stock: Callable[..., None] | None = None


def _moto_version() -> str:
    try:
        import moto
    except ImportError:  # pragma: no cover - moto is a test dependency
        return "(not installed)"
    return str(getattr(moto, "__version__", "(unknown version)"))


def _check_moto() -> None:
    try:
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.table import StreamShard, Table
    except ImportError as exc:
        raise RuntimeError(
            f"moto {_moto_version()}: cannot import the DynamoDB models the undo-log "
            f"transactions replace ({exc})"
        ) from exc
    owners = {"DynamoDBBackend": DynamoDBBackend, "Table": Table, "StreamShard": StreamShard}
    changed = []
    for qualname, digests in _VERIFIED_SOURCES.items():
        owner_name, attr = qualname.split(".")
        try:
            source = inspect.getsource(getattr(owners[owner_name], attr))
        except (AttributeError, OSError, TypeError):
            changed.append(f"{qualname} (missing or without source)")
            continue
        if hashlib.sha256(source.encode()).hexdigest() not in digests:
            changed.append(qualname)
    if changed:
        raise RuntimeError(
            f"moto {_moto_version()} differs from the moto the undo-log transactions were "
            f"verified against (5.2.5) in: {', '.join(changed)}. Rerun "
            "tests/test_moto_transactions.py against this moto and update _VERIFIED_SOURCES "
            "in kinesis_eo/harness/moto_transactions.py."
        )


def install() -> None:
    """Make every DynamoDB backend in this process run transactions with an undo log.

    Idempotent. Raises :class:`RuntimeError`, naming the moto version, if moto's
    functions are not the ones this replacement was verified against.
    """
    global _stock
    with _lock:
        if _stock is not None:
            return
        _check_moto()
        from moto.dynamodb.models import DynamoDBBackend

        _stock = DynamoDBBackend.transact_write_items
        DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]


def uninstall() -> None:
    """Put stock moto's ``transact_write_items`` back. Does nothing if not installed."""
    global _stock
    with _lock:
        if _stock is None:
            return
        from moto.dynamodb.models import DynamoDBBackend

        DynamoDBBackend.transact_write_items = _stock  # type: ignore[method-assign]
        _stock = None


def installed() -> bool:
    """Whether the undo-log ``TransactWriteItems`` is installed in this process's moto."""
    with _lock:
        return _stock is not None


@contextmanager
def undo_log_transactions() -> Iterator[None]:
    """Undo-log transactions inside the block; on exit, the state from before it."""
    was_installed = installed()
    install()
    try:
        yield
    finally:
        if not was_installed:
            uninstall()


class _UndoLog:
    """What a canceled transaction must put back, recorded before each first touch."""

    def __init__(self) -> None:
        # Keyed by id(): the same table object, whatever name or ARN found it.
        self._tables: dict[int, Any] = {}
        self._streams: list[tuple[Any, list[Any], int]] = []
        self._seen: set[tuple[int, Any, Any]] = set()
        # (table, hash key, range key, range bucket existed, (item, attributes) or None)
        self._entries: list[tuple[Any, Any, Any, bool, Any]] = []

    def protect(self, table: Any) -> None:
        """Roll this table back on cancellation: stock does so for the tables it copied."""
        if id(table) in self._tables:
            return
        self._tables[id(table)] = table
        shard = table.stream_shard
        if shard is not None:
            # Records are only ever appended to the list object (a Lambda
            # trigger may swap in a fresh one), so object + length recovers it.
            self._streams.append((shard, shard.items, len(shard.items)))

    def remember(self, backend: Any, table_name: Any, key: Any) -> None:
        """Record the item ``key`` names, unless already recorded; never changes anything."""
        try:
            table = backend.get_table(table_name)
            hash_key, range_key = backend.get_keys_value(table, key)
        except Exception:
            # The lookup the transaction makes next raises the same error
            # before anything is written.
            return
        if id(table) not in self._tables or (id(table), hash_key, range_key) in self._seen:
            return
        self._seen.add((id(table), hash_key, range_key))
        if range_key is None:
            bucket_existed = True
            current = table.items.get(hash_key)
        else:
            # .get(), not [], on the defaultdict: moto's own lookup creates
            # an empty range bucket for a missing hash key, which a rollback
            # must remove again.
            bucket = table.items.get(hash_key)
            bucket_existed = bucket is not None
            current = None if bucket is None else bucket.get(range_key)
        # The item object plus a copy of its attributes, which update_item
        # changes in place. Not a copy of the Item: moto keeps every model
        # object it creates in a class-level list until reset, so each copy
        # would stay in memory for the life of the emulator.
        saved = None if current is None else (current, copy.deepcopy(dict(current.attrs)))
        self._entries.append((table, hash_key, range_key, bucket_existed, saved))

    def rollback(self) -> None:
        # One entry per item, each holding the state from before the
        # transaction, so the order does not matter; newest first is the habit.
        for table, hash_key, range_key, bucket_existed, saved in reversed(self._entries):
            if saved is None:
                if range_key is None:
                    table.items.pop(hash_key, None)
                elif (bucket := table.items.get(hash_key)) is not None:
                    bucket.pop(range_key, None)
            else:
                item, attrs = saved
                # dict's own methods: LimitedSizeDict checks the size only in __setitem__.
                item.attrs.clear()
                item.attrs.update(attrs)
                if range_key is None:
                    table.items[hash_key] = item
                else:
                    table.items[hash_key][range_key] = item
            if not bucket_existed:
                table.items.pop(hash_key, None)
        for shard, records, length in self._streams:
            del records[length:]
            shard.items = records


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    # moto 5.2.5's DynamoDBBackend.transact_write_items with the table copies
    # replaced by _UndoLog; every other line is moto's, in moto's order, so
    # that errors, their order and the cancellation reasons stay identical.
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    undo = _UndoLog()
    for item in transact_items:
        _, op = next(iter(item.items()))
        table_name = op.get("TableName")
        if table_name and table_name in self.tables:
            undo.protect(self.tables[table_name])

    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[tuple[str, str, dict[str, Any]] | tuple[None, None, None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        if len(list(item.keys())) > 1:
            # Outside the try, as in moto: entries before this one stay written.
            raise TransactWriteSingleOpException

        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")

            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            expression_attribute_names = op.get("ExpressionAttributeNames")
            expression_attribute_values = op.get("ExpressionAttributeValues")
            return_values_on_condition_check_failure = op.get("ReturnValuesOnConditionCheckFailure")

            key = _operation_key(self, op_type, op)

            check_unicity(table_name, key)

            undo.remember(self, table_name, key)
            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition_op = get_filter_expression(
                    condition_expression,
                    expression_attribute_names,
                    expression_attribute_values,
                )
                if not condition_op.expr(current):
                    if return_values_on_condition_check_failure == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)

            _write_operation(self, op_type, op, key)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            undo.rollback()
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))  # type: ignore[arg-type]
        except Exception as e:
            errors.append((type(e).__name__, str(e), original_item))  # type: ignore[arg-type]

    if any(code is not None for code, _, _ in errors):
        undo.rollback()
        raise TransactionCanceledException(errors)


def _operation_key(self: Any, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    # moto's: a Put names its item through the table's key schema.
    if op_type == "Put":
        attrs = op["Item"]
        table = self.get_table(op["TableName"])
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
        return key
    return dict(op["Key"])


def _write_operation(self: Any, op_type: str, op: dict[str, Any], key: dict[str, Any]) -> None:
    # moto's write of one transaction item, its condition passed on as moto passes it.
    expressions = {
        "condition_expression": op.get("ConditionExpression"),
        "expression_attribute_names": op.get("ExpressionAttributeNames"),
        "expression_attribute_values": op.get("ExpressionAttributeValues"),
    }
    table_name = op["TableName"]
    if op_type == "Put":
        self.put_item(table_name, op["Item"], **expressions)
    elif op_type == "Delete":
        self.delete_item(table_name, key, **expressions)
    elif op_type == "Update":
        self.update_item(table_name, key, update_expression=op["UpdateExpression"], **expressions)
