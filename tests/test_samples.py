"""The samples run as documented and do what they say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def test_orders_sample_moves_each_balance_once_even_when_run_twice() -> None:
    done = subprocess.run(
        [sys.executable, str(SAMPLES / "orders_consumer.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert json.loads(done.stdout) == {"acct-0": 100, "acct-1": 100, "acct-2": 100}


def test_lambda_sample_moves_each_balance_once_and_dead_letters_the_bad_order() -> None:
    done = subprocess.run(
        [sys.executable, str(SAMPLES / "lambda_orders.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    lines = [json.loads(line) for line in done.stdout.splitlines()]
    # The function's metrics come first, as EMF documents on stdout, one per dimension set
    # and invocation; the sample's own result is the last line.
    emf = [line for line in lines[:-1] if "_aws" in line]
    assert emf == lines[:-1]
    assert sum(d.get("records_applied", 0) for d in emf) == 30  # 30 orders, each once
    assert lines[-1] == {
        "balances": {"acct-0": 100, "acct-1": 100, "acct-2": 100},
        "dead_letters": ["not an order"],
    }
    # It was reported to the event source mapping before it was given up.
    assert "failed in 2 of 3 deliveries" in done.stderr
