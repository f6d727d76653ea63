"""The documentation's runnable examples run: a guide's code that no longer works fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_block(page: str, heading: str) -> str:
    section = (DOCS / page).read_text().split(heading, 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, f"{page}: no python block under {heading!r}"
    return block.group(1)


def test_the_testing_guides_moto_example_passes_and_applies_each_order_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto's mock_aws needs credentials to sign with; the example names only its region.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    namespace: dict[str, object] = {}
    exec(python_block("guides/testing.md", "## A worker or consumer on moto"), namespace)

    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    tests[0]()  # type: ignore[operator]
