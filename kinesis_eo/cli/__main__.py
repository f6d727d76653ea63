"""``python -m kinesis_eo.cli``: the ``kinesis-eo`` command."""

from __future__ import annotations

import sys

from kinesis_eo.cli import main

if __name__ == "__main__":
    sys.exit(main())
