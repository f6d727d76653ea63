"""Log output for long-running processes: plain text for people, JSON lines for log pipelines.

CloudWatch Logs, Loki and the like index a JSON object per line without a
parsing rule, so the worker's ``--log-format json`` writes exactly that: the
standard fields plus whatever a call passed as ``extra={...}``.

What never reaches the output unless asked for:

- **the AWS SDK's wire logging.** At DEBUG, botocore logs every request with
  its headers (the session token, the signature) and every response body
  (records' data, base64); urllib3 and friends add more. The loggers in
  :data:`WIRE_LOGGERS` stay at WARNING whatever the level, unless named in
  ``debug_loggers`` (``kinesis-eo run --debug-logger botocore``);
- **record payloads.** Without ``log_payloads`` (``--log-payloads``) a log
  call's ``bytes`` or :class:`~kinesis_eo.records.Record` arguments print as
  their size, and the arguments of a wire logger that was asked for (request
  parameters, bodies, signed headers) print as ``<omitted>``;
- **credentials.** Every line is scrubbed of the session token and secret key
  in the environment and of signed header values, even with ``log_payloads``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "FORMATS",
    "REDACTED",
    "TEXT_FORMAT",
    "WIRE_LOGGERS",
    "JsonFormatter",
    "PayloadFilter",
    "configure_logging",
    "scrub_secrets",
    "set_wire_levels",
]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"

WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "aiobotocore", "s3transfer")
"""Loggers kept at WARNING unless named: at DEBUG they write credentials and payloads."""

REDACTED = "<redacted>"
# Environment variables whose values are secrets wherever they show up.
_SECRET_ENVIRONMENT = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_SECRET_ACCESS_KEY")
# Signed headers as botocore prints them: in a dict repr ('Name': b'value') and
# in a canonical request (name:value).
_SECRET_HEADERS = re.compile(
    r"""(?P<name>x-amz-security-token|authorization)(?P<sep>['"]?\s*[:=]\s*b?['"]?)"""
    r"""(?P<value>[^'"\r\n]+)""",
    re.IGNORECASE,
)
# A wire logger's argument short and plain enough to be a method, status or event name.
_MAX_PLAIN_ARGUMENT = 100

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}


def _is_wire_logger(name: str) -> bool:
    return any(name == wire or name.startswith(wire + ".") for wire in WIRE_LOGGERS)


def scrub_secrets(text: str, secrets: Sequence[str]) -> str:
    """``text`` with each secret value and each signed header's value replaced."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _SECRET_HEADERS.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)


def _environment_secrets() -> tuple[str, ...]:
    # Short values ("testing") would blank ordinary words; real ones are 40+ characters.
    values = (os.environ.get(name, "") for name in _SECRET_ENVIRONMENT)
    return tuple(value for value in values if len(value) >= 16)


class PayloadFilter(logging.Filter):
    """Replaces payload-bearing arguments of a log call unless payloads may be logged."""

    def __init__(self, log_payloads: bool = False) -> None:
        super().__init__()
        self.log_payloads = log_payloads

    def filter(self, record: logging.LogRecord) -> bool:
        if self.log_payloads or not record.args:
            return True
        wire = _is_wire_logger(record.name)
        if isinstance(record.args, dict):
            record.args = {k: self._safe(v, wire) for k, v in record.args.items()}
        else:
            record.args = tuple(self._safe(value, wire) for value in record.args)
        return True

    @staticmethod
    def _safe(value: object, wire: bool) -> object:
        from kinesis_eo.records import Record

        if isinstance(value, bytes | bytearray | memoryview):
            return f"<{len(value)} bytes>"
        if isinstance(value, Record):
            return (
                f"<record {value.shard_id} {value.position} of {value.stream}, "
                f"{len(value.data)} bytes>"
            )
        if not wire or value is None or isinstance(value, int | float):
            return value
        # Request parameters, prepared requests, bodies and canonical requests
        # carry records' data; a method, URL path or status code is short text.
        if isinstance(value, str) and len(value) <= _MAX_PLAIN_ARGUMENT:
            return value
        return "<omitted>"


class _Scrubbing(logging.Formatter):
    """Formats with ``inner``, then scrubs credentials from the whole line."""

    def __init__(self, inner: logging.Formatter, secrets: Sequence[str]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return scrub_secrets(self.inner.format(record), self.secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ``extra`` fields, any error."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        # default=str: an ``extra`` value that JSON cannot hold must not lose the whole line.
        return json.dumps(document, default=str, ensure_ascii=False)


def set_wire_levels(debug_loggers: Sequence[str] = ()) -> None:
    """Wire loggers to WARNING, except those named in ``debug_loggers`` (and theirs) to DEBUG."""
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in debug_loggers:
        logging.getLogger(name).setLevel(logging.DEBUG)


def configure_logging(
    format: str = "text",
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
    *,
    debug_loggers: Sequence[str] = (),
    log_payloads: bool = False,
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as text or JSON lines.

    The AWS SDK's loggers stay at WARNING unless named in ``debug_loggers``;
    payloads print as their size unless ``log_payloads``; credentials never
    print (see the module docstring). Replaces the handlers a previous call
    installed, so calling it twice does not print every line twice. The
    handler is returned for tests to remove.
    """
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    inner = JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(_Scrubbing(inner, _environment_secrets()))
    handler.addFilter(PayloadFilter(log_payloads))
    handler._kinesis_eo = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_kinesis_eo", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    set_wire_levels(debug_loggers)
    return handler
