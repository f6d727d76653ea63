"""Moved to :mod:`kinesis_eo.harness.chaos_lambda`; the old name stays as its alias."""

from __future__ import annotations

import sys

from kinesis_eo.harness import chaos_lambda as _moved

sys.modules[__name__] = _moved
