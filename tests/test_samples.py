"""The samples run as documented and do what they say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import pytest_plugin_args

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


def test_orders_project_tests_pass_with_the_pytest_plugin_and_catch_a_doubling_handler() -> None:
    # The project's own pytest run, as its users run it.
    project = SAMPLES / "orders_project"
    env = {**os.environ, "PYTHONPATH": str(SAMPLES.parent)}
    plugins = [*pytest_plugin_args(), "-p", "no:cacheprovider", "-p", "no:asyncio"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "-v"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=project,
        env=env,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_a_handler_that_writes_outside_its_returned_writes_is_caught PASSED" in done.stdout
    assert " 3 passed" in done.stdout
