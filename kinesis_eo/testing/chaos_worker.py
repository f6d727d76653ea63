"""Moved to :mod:`kinesis_eo.harness.chaos_worker`; the old name stays as its alias."""

from __future__ import annotations

import sys

from kinesis_eo.harness import chaos_worker as _moved

if __name__ == "__main__":
    raise SystemExit(_moved.main())
sys.modules[__name__] = _moved
