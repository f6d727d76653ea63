"""Moved to :mod:`kinesis_eo.harness.chaos`; the old name stays as its alias."""

from __future__ import annotations

import sys

from kinesis_eo.harness import chaos as _moved

sys.modules[__name__] = _moved
