"""The settings of a simulated Kinesis event source mapping, checked as AWS checks them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["ACCOUNT", "REGION", "EsmConfig", "function_arn", "window_of"]

REGION = "us-east-1"
ACCOUNT = "123456789012"
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
_MAX_BATCHING_WINDOW_S = 300
_MIN_RECORD_AGE_S, _MAX_RECORD_AGE_S = 60, 604_800
_MAX_TUMBLING_WINDOW_S = 900


def function_arn(name: str = "kinesis-eo-test", region: str = REGION) -> str:
    """The ARN of the simulated function ``name``, as the simulator's context reports it."""
    return f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"


def window_of(arrival: datetime, seconds: int) -> tuple[datetime, datetime]:
    """The tumbling window ``[start, end)`` a record that arrived at ``arrival`` belongs to.

    Windows are aligned to whole multiples of their length since the epoch.
    """
    epoch = int(arrival.timestamp())
    start = datetime.fromtimestamp(epoch - epoch % seconds, UTC)
    return start, start + timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class EsmConfig:
    """The event source mapping's settings that change what is delivered.

    ``maximum_retry_attempts`` -1 retries for ever, as on AWS.
    ``maximum_batching_window_s``: a batch holds the records that arrived within
    this many seconds of its first one (0: what the shard holds, up to
    ``batch_size``). ``maximum_record_age_s``: records older than this when
    their batch would be invoked are skipped and reported to the on-failure
    destination (``RecordAgeExceeded``); -1 keeps them. ``starting_position``:
    ``TRIM_HORIZON``; ``AT_TIMESTAMP`` with ``starting_position_timestamp``
    (records that arrived at or after it); ``LATEST`` (records that arrive
    after the mapping is made). ``filters``: the ``FilterCriteria`` patterns
    (see :mod:`kinesis_eo.testing.esm_filters`). ``tumbling_window_s``: 0, or
    the window length (up to 900 s).
    """

    batch_size: int = 100
    bisect_on_function_error: bool = True
    maximum_retry_attempts: int = -1
    parallelization_factor: int = 1
    maximum_batching_window_s: float = 0
    maximum_record_age_s: int = -1
    starting_position: str = "TRIM_HORIZON"
    starting_position_timestamp: datetime | None = None
    filters: tuple[str | Mapping[str, Any], ...] = ()
    tumbling_window_s: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("batch_size is 1 to 10000")
        if self.maximum_retry_attempts < -1:
            raise ValueError("maximum_retry_attempts is -1 (for ever) or more")
        if not 1 <= self.parallelization_factor <= 10:
            raise ValueError("parallelization_factor is 1 to 10")
        if not 0 <= self.maximum_batching_window_s <= _MAX_BATCHING_WINDOW_S:
            raise ValueError(f"maximum_batching_window_s is 0 to {_MAX_BATCHING_WINDOW_S}")
        age = self.maximum_record_age_s
        if age != -1 and not _MIN_RECORD_AGE_S <= age <= _MAX_RECORD_AGE_S:
            raise ValueError(
                f"maximum_record_age_s is -1 or {_MIN_RECORD_AGE_S} to {_MAX_RECORD_AGE_S}"
            )
        if self.starting_position not in STARTING_POSITIONS:
            raise ValueError(f"starting_position is one of {', '.join(STARTING_POSITIONS)}")
        if (self.starting_position == "AT_TIMESTAMP") != (
            self.starting_position_timestamp is not None
        ):
            raise ValueError("starting_position_timestamp goes with AT_TIMESTAMP, and only with it")
        if not 0 <= self.tumbling_window_s <= _MAX_TUMBLING_WINDOW_S:
            raise ValueError(f"tumbling_window_s is 0 to {_MAX_TUMBLING_WINDOW_S}")
