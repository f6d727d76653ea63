"""``kinesis-eo demo`` through the command line: the run, its report, its exit codes.

The demo starts its own moto server in this process, so these tests need no
fixture; a small run (300 events) keeps them to a few seconds.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from moto.dynamodb.models import DynamoDBBackend

from kinesis_eo import __version__
from kinesis_eo.cli import main
from kinesis_eo.errors import ConfigurationError
from kinesis_eo.harness import demo as demo_module

REPO = Path(__file__).resolve().parent.parent
ROWS = (
    "produced",
    "delivered (with redeliveries)",
    "effects applied",
    "duplicates suppressed",
    "dead-lettered",
    "lost (missing)",
    "duplicated effects",
    "wall time",
    "emulator",
)


def test_a_small_demo_applies_every_effect_once_through_a_crash_and_producer_retries(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "report.json"
    environment = dict(os.environ)

    code = main(["demo", "--events", "300", "--report", str(report_path)])

    report = json.loads(report_path.read_text())
    assert code == 0
    assert report["produced"] == 300
    assert report["missing"] == 0
    assert report["duplicated"] == 0
    # One event in 400 is poison, and at least one always is.
    assert report["poison"] == 1
    assert report["dead_lettered"] == 1
    assert report["effects"] == 300 - 1
    assert report["producer_duplicates"] > 0
    assert report["duplicates_suppressed"] > 0
    assert report["crashes"] == 1
    # Every stored copy was read by each of the three consumers, at least once.
    assert report["stored_records"] == 300 + report["producer_duplicates"]
    assert report["delivered"] >= 2 * report["stored_records"]
    assert report["seed"] == 7
    assert report["wall_s"] > 0
    assert report["emulator"].startswith("moto ")
    # The demo leaves the process as it found it: the rest of the suite runs
    # on stock moto, and no fake credential leaks into the environment.
    assert DynamoDBBackend.transact_write_items.__module__ == "moto.dynamodb.models"
    assert dict(os.environ) == environment


def test_the_demo_prints_its_phases_and_the_result_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["demo", "--events", "120", "--shards", "2", "--seed", "3"])

    out = capsys.readouterr().out
    assert code == 0
    for phase in ("setup", "produce", "consume", "recover", "replay", "verify"):
        assert re.search(rf"^\[\d/6\] {phase} ", out, re.MULTILINE), phase
    for row in ROWS:
        assert re.search(rf"^  {re.escape(row)} ", out, re.MULTILINE), row
    assert re.search(r"^  lost \(missing\) +0$", out, re.MULTILINE)
    assert re.search(r"^  duplicated effects +0$", out, re.MULTILINE)
    assert "exactly once:" in out


def test_a_kinesis_eo_error_in_a_subcommand_exits_2_with_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(**_: Any) -> None:
        raise ConfigurationError("the emulator did not start\n--- log ---\nport taken")

    monkeypatch.setattr(demo_module, "run_demo", fail)

    code = main(["demo"])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("kinesis-eo: error: the emulator did not start")
    assert "port taken" in lines[0]
    assert "Traceback" not in captured.err


def test_a_report_path_in_a_missing_directory_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--report", str(tmp_path / "no-such-dir" / "report.json")])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert "no-such-dir" in captured.err


def test_a_demo_that_finds_a_lost_or_doubled_effect_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def doubled(**_: Any) -> demo_module.DemoReport:
        return demo_module.DemoReport(
            produced=10,
            delivered=20,
            effects=11,
            duplicates_suppressed=9,
            dead_lettered=0,
            missing=0,
            duplicated=1,
            producer_duplicates=0,
            crashes=1,
            wall_s=0.1,
            emulator="moto",
            seed=7,
            shards=1,
            poison=0,
            stored_records=10,
            redelivered=10,
            throttled_calls=0,
            consumer_passes=3,
        )

    monkeypatch.setattr(demo_module, "run_demo", doubled)

    assert main(["demo"]) == 1


def test_options_not_given_are_left_to_run_demo_and_the_help_states_its_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    defaults = inspect.signature(demo_module.run_demo).parameters
    received: dict[str, Any] = {}

    def record(**options: Any) -> Any:
        received.update(options)
        raise ConfigurationError("stop here")

    monkeypatch.setattr(demo_module, "run_demo", record)
    main(["demo", "--seed", "11"])
    assert received == {"seed": 11}

    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in ("events", "shards", "seed"):
        assert f"--{name} N " in help_text
        assert f"(default: {defaults[name].default})" in help_text, name


@pytest.mark.parametrize(
    "argv", [["demo", "--events", "0"], ["demo", "--shards", "two"], [], ["nonsense"]]
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's way out
        code = exited.code  # type: ignore[assignment]
    assert code == 2
    assert "usage: kinesis-eo" in capsys.readouterr().err


def _console_script() -> str:
    beside = Path(sys.executable).parent / "kinesis-eo"
    found = str(beside) if beside.is_file() else shutil.which("kinesis-eo")
    if found is None:
        pytest.fail("the kinesis-eo console script is not installed: run `pip install -e .`")
    return found


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(lambda: [_console_script(), "--version"], id="console-script"),
        pytest.param(lambda: [sys.executable, "-m", "kinesis_eo.cli", "--version"], id="module"),
    ],
)
def test_the_installed_entry_point_prints_the_version(command: Any) -> None:
    result = subprocess.run(
        command(), capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kinesis-eo {__version__}\n"
    assert result.stderr == ""
