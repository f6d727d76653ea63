"""The ledger's protocol, by the names it had here before it was split by concern.

The concrete :class:`Ledger` lives in :mod:`kinesis_eo.ledger.ledger`, its parts in
:mod:`kinesis_eo.ledger.screening`, :mod:`kinesis_eo.ledger.commit` and
:mod:`kinesis_eo.ledger.claims`; import them from :mod:`kinesis_eo.ledger`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from kinesis_eo.ledger.claims import ClaimLostError, ClaimOutcome, ExpiredClaimPolicy
from kinesis_eo.ledger.commit import CommitResult, Entry, FencedError
from kinesis_eo.ledger.ledger import Ledger
from kinesis_eo.ledger.screening import Screened

__all__ = [
    "ClaimLostError",
    "ClaimOutcome",
    "CommitResult",
    "Entry",
    "ExpiredClaimPolicy",
    "FencedError",
    "Flow",
    "Ledger",
    "Screened",
]

Flow = Generator[Any, Any, Any]
