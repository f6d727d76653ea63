"""The public surface: what users import from ``kinesis_eo`` itself, and what that costs."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kinesis_eo

REPO = Path(__file__).resolve().parents[1]


def test_importing_the_package_loads_no_aws_sdk() -> None:
    # The CLI's start (and --version) must not pay for boto3.
    code = "import sys, kinesis_eo; print(sorted({'boto3', 'botocore'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_every_exported_name_is_the_object_its_module_defines() -> None:
    assert kinesis_eo.__all__ == sorted(kinesis_eo.__all__)
    assert set(kinesis_eo.__all__) == set(kinesis_eo._EXPORTS)
    for name, module in kinesis_eo._EXPORTS.items():
        assert getattr(kinesis_eo, name) is getattr(importlib.import_module(module), name), name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        kinesis_eo.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_the_readme_quick_start_imports_everything_from_the_package_in_one_statement() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## A consumer in a few lines", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    imports = [
        node
        for node in ast.parse(block.group(1)).body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kinesis_eo")
    ]
    assert [node.module for node in imports] == ["kinesis_eo"]
    assert {alias.name for alias in imports[0].names} <= set(kinesis_eo.__all__)


def test_every_public_exception_is_a_kinesis_eo_error_named_error() -> None:
    found = {}
    for info in pkgutil.walk_packages(kinesis_eo.__path__, "kinesis_eo."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("kinesis_eo")
                and not value.__name__.startswith("_")  # private control flow, never raised out
            ):
                found[value.__name__] = value
    assert len(found) > 10
    outside = sorted(n for n, c in found.items() if not issubclass(c, kinesis_eo.KinesisEOError))
    unsuffixed = sorted(n for n in found if not n.endswith("Error"))
    assert outside == []
    assert unsuffixed == []


MOVED = "sys.modules[__name__]"  # an alias module left where a module used to be


def test_every_module_with_public_names_declares_them_and_each_exists() -> None:
    missing, wrong = [], []
    for info in pkgutil.walk_packages(kinesis_eo.__path__, "kinesis_eo."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        source = Path(module.__file__ or "").read_text()
        if MOVED in source:
            continue
        exported = getattr(module, "__all__", None)
        if exported is None:
            missing.append(info.name)
            continue
        wrong += [f"{info.name}.{name}" for name in exported if not hasattr(module, name)]
    assert missing == []
    assert wrong == []
