"""Moved to :mod:`kinesis_eo.harness.moto_transactions`; the old name stays as its alias."""

from __future__ import annotations

import sys

from kinesis_eo.harness import moto_transactions as _moved

sys.modules[__name__] = _moved
