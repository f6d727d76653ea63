"""The SQS calls of a redrive: receive a queue through, delete or release what was received."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

from kinesis_eo.flow import Call
from kinesis_eo.redrive.options import RedriveOptions

__all__ = ["SQS_BATCH", "delete_flow", "messages_flow", "receive_flow", "release_flow"]

SQS_BATCH = 10


def receive_flow(
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


def messages_flow(
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


def release_flow(queue_url: str, handles: Sequence[str]) -> Generator[Any, Any, None]:
    """Make received messages visible again at once, for people and the next redrive."""
    entries = [{"ReceiptHandle": h, "VisibilityTimeout": 0} for h in handles]
    yield from messages_flow(queue_url, "change_message_visibility_batch", entries)


def delete_flow(queue_url: str, handles: Sequence[str]) -> Generator[Any, Any, str]:
    """Remove applied messages from their queue; returns what went wrong, or nothing."""
    entries = [{"ReceiptHandle": h} for h in handles]
    failures = yield from messages_flow(queue_url, "delete_message_batch", entries)
    # A message left behind is found already applied by the next redrive, and removed then.
    return f"{len(failures)} message(s) not removed: {failures[0]}" if failures else ""
