"""One exception hierarchy for everything kinesis_eo raises.

Every error says whether retrying the same call later can succeed (``retryable``),
so that callers decide with one attribute instead of matching botocore codes.
AWS errors are translated at the edge by :func:`translate_aws_error` into one
sentence that names the resource, keeping the botocore error as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ACCESS_CODES",
    "NOT_FOUND_CODES",
    "THROTTLING_CODES",
    "TRANSIENT_CANCELLATION_CODES",
    "TRANSIENT_CODES",
    "AccessDeniedError",
    "AwsCallError",
    "ConditionFailedError",
    "ConfigurationError",
    "ConnectionFailedError",
    "InvalidRecordError",
    "InvalidWriteError",
    "IteratorExpiredError",
    "KinesisEOError",
    "RecordTooLargeError",
    "ResourceNotFoundError",
    "RetryableError",
    "SinkUnavailableError",
    "ThrottledError",
    "TransactionCanceledError",
    "error_code",
    "is_outage",
    "is_setup_fault",
    "translate_aws_error",
]


class KinesisEOError(Exception):
    """Base class of every error raised by kinesis_eo."""

    retryable: bool = False


class RetryableError(KinesisEOError):
    """A transient failure: the same call may succeed later."""

    retryable = True


class ThrottledError(RetryableError):
    """AWS refused the call for capacity or rate reasons."""


class ConnectionFailedError(RetryableError):
    """The endpoint could not be reached or the connection broke."""


class IteratorExpiredError(RetryableError):
    """A shard iterator expired (iterators live for 300 s)."""


class ConfigurationError(KinesisEOError):
    """The toolkit or the AWS client is set up in a way that cannot work."""


class ResourceNotFoundError(KinesisEOError):
    """A stream, shard or table does not exist (or is not visible to these credentials)."""

    def __init__(self, message: str, *, resource: str) -> None:
        super().__init__(message)
        self.resource = resource


class AccessDeniedError(KinesisEOError):
    """The credentials in use are not allowed to make a call."""

    def __init__(self, message: str, *, resource: str) -> None:
        super().__init__(message)
        self.resource = resource


class InvalidRecordError(KinesisEOError):
    """A record cannot be sent or understood as given (too large, malformed)."""


class RecordTooLargeError(InvalidRecordError):
    """A record is over the Kinesis size limit; it is refused before any call."""


class ConditionFailedError(KinesisEOError):
    """A DynamoDB condition did not hold; ``item`` is the item as it was, when AWS returned it."""

    def __init__(self, message: str, *, item: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.item = item


class TransactionCanceledError(KinesisEOError):
    """DynamoDB canceled a transaction; ``reasons`` line up with its items.

    Retryable when every reason is a transient one (a conflict with another
    transaction, throttling): the same transaction may then succeed.
    """

    def __init__(self, message: str, *, reasons: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(message)
        self.reasons = list(reasons)
        codes = {str(r.get("Code", "None")) for r in self.reasons} - {"None"}
        self.retryable = bool(codes) and codes <= TRANSIENT_CANCELLATION_CODES

    def failed_indexes(self, code: str = "ConditionalCheckFailed") -> list[int]:
        return [i for i, r in enumerate(self.reasons) if r.get("Code") == code]

    def invalid_indexes(self) -> list[int]:
        """Items refused for what they are (``ValidationError``), which no retry mends."""
        harmless = {"None", "ConditionalCheckFailed"} | TRANSIENT_CANCELLATION_CODES
        return [i for i, r in enumerate(self.reasons) if str(r.get("Code", "None")) not in harmless]


class InvalidWriteError(KinesisEOError):
    """DynamoDB refused a write as invalid (a ``ValidationException``): retrying cannot help.

    A bad expression, a key of the wrong type, an item over 400 KB, two
    operations on one item in a transaction. ``indexes`` name the refused
    operations of a transaction where DynamoDB said which (its cancellation
    reasons); None where it refused the request whole.
    """

    def __init__(self, message: str, *, indexes: Sequence[int] | None = None) -> None:
        super().__init__(message)
        self.indexes = None if indexes is None else sorted(indexes)


class SinkUnavailableError(RetryableError):
    """The world is down, not the record at fault: the shard pauses and retries, nothing is
    dead-lettered.

    Raise it from a handler when the system it writes to is unreachable or
    overloaded; kinesis_eo raises it for a handler's own throttled, timed-out
    or unreachable AWS calls and for ``TimeoutError`` / ``ConnectionError``.
    """


class AwsCallError(KinesisEOError):
    """An AWS error that none of the more precise classes describe."""

    def __init__(self, message: str, *, code: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "KMSThrottlingException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalServerError",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "KMSInternalException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
NOT_FOUND_CODES = frozenset(
    {"ResourceNotFoundException", "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}
)
TRANSIENT_CANCELLATION_CODES = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)
ACCESS_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "KMSAccessDeniedException",
    }
)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError``, or None for anything else."""
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def translate_aws_error(exc: BaseException, *, resource: str, action: str) -> KinesisEOError:
    """Turn a botocore exception into a kinesis_eo error with one clear sentence.

    ``resource`` names what was touched ("stream 'orders'", "table 'leases'"),
    ``action`` the call ("GetRecords"). The caller raises the result ``from exc``.
    """
    if isinstance(exc, KinesisEOError):
        return exc
    # Imported here so that this module stays importable without botocore in type-only use.
    from botocore import exceptions as bce

    code = error_code(exc)
    if code is not None:
        message = str(getattr(exc, "response", {}).get("Error", {}).get("Message") or code)
        if code in THROTTLING_CODES:
            return ThrottledError(f"{action} on {resource} was throttled ({code}): {message}")
        if code == "ExpiredIteratorException":
            return IteratorExpiredError(f"the shard iterator for {resource} expired: {message}")
        if code == "ConditionalCheckFailedException":
            item = getattr(exc, "response", {}).get("Item")
            return ConditionFailedError(f"{action} on {resource}: {message}", item=item)
        if code == "TransactionCanceledException":
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            return TransactionCanceledError(f"{action} on {resource}: {message}", reasons=reasons)
        if code in NOT_FOUND_CODES:
            return ResourceNotFoundError(
                f"{resource} does not exist or is not visible to these credentials "
                f"({action}: {message})",
                resource=resource,
            )
        if code in ACCESS_CODES:
            return AccessDeniedError(
                f"access to {resource} was denied for {action} ({code}): {message}",
                resource=resource,
            )
        return AwsCallError(
            f"{action} on {resource} failed ({code}): {message}",
            code=code,
            retryable=code in TRANSIENT_CODES,
        )
    if isinstance(exc, bce.NoRegionError):
        return ConfigurationError(
            f"no AWS region is configured for {action} on {resource}: set AWS_REGION "
            "or pass region_name when you create the client"
        )
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return ConfigurationError(
            f"no AWS credentials were found for {action} on {resource}: configure a profile, "
            "environment variables or an instance role"
        )
    if isinstance(
        exc,
        bce.EndpointConnectionError
        | bce.ConnectionClosedError
        | bce.ReadTimeoutError
        | bce.ConnectTimeoutError
        | bce.HTTPClientError,
    ):
        return ConnectionFailedError(f"{action} on {resource} could not reach AWS: {exc}")
    return AwsCallError(f"{action} on {resource} failed: {exc}", code=type(exc).__name__)


def is_outage(exc: BaseException) -> bool:
    """Whether a handler's exception says the world is down rather than the record is bad.

    Outages pause the shard and are retried with back-off; any other failure
    of a handler is the record's, and after the failure policy's tries the
    record is dead-lettered. Toolkit errors that are not retryable (a lost
    lease, a missing table, a denied call) are neither: they stop the shard's
    loop and show in its health.
    """
    if isinstance(exc, KinesisEOError):
        return exc.retryable
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError | BotoCoreError):
        return translate_aws_error(exc, resource="a handler's AWS call", action="it").retryable
    return False


def is_setup_fault(exc: BaseException) -> bool:
    """Whether a handler's AWS call failed for a reason no record causes: denied, not found."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not isinstance(exc, ClientError | BotoCoreError):
        return False
    translated = translate_aws_error(exc, resource="a handler's AWS call", action="it")
    return isinstance(translated, AccessDeniedError | ResourceNotFoundError | ConfigurationError)
