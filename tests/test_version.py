"""The version a user sees: ``kinesis_eo.__version__`` and ``kinesis-eo --version``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

import kinesis_eo
from kinesis_eo.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_the_installed_distributions_which_is_pyprojects() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    assert kinesis_eo.__version__ == version("kinesis-eo") == declared


def test_version_flag_prints_the_package_version_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"kinesis-eo {version('kinesis-eo')}\n"


def test_a_source_tree_that_was_never_installed_says_its_version_is_unknown() -> None:
    # -S leaves site-packages, and with it the installed metadata, off the path.
    script = "import sys; sys.path.insert(0, sys.argv.pop(1)); import kinesis_eo.cli as c; c.main()"
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, str(ROOT), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "kinesis-eo 0+unknown\n"
