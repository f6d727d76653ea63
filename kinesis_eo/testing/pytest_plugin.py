"""kinesis_eo's pytest plugin: fixtures and ``assert_exactly_once`` for your own handlers.

Installed with the package (entry point ``pytest11``), it is inert until the
``testing`` extra is installed too (``pip install 'kinesis-eo[testing]'``,
which brings moto): only then does it register its fixtures
(:mod:`kinesis_eo.testing.fixtures`). Loading it imports neither boto3 nor
moto; they are imported when a test first uses a fixture. Without the
entry point (a source checkout), load it with ``-p kinesis_eo.testing.pytest_plugin``.
"""

from __future__ import annotations

import importlib.util

import pytest

__all__ = ["pytest_configure"]

_FIXTURES = "kinesis_eo.testing.fixtures"


def _moto_importable() -> bool:
    try:
        return importlib.util.find_spec("moto") is not None
    except (ImportError, ValueError):
        # ValueError: a module in sys.modules with no spec (for instance set to None).
        return False


def pytest_configure(config: pytest.Config) -> None:
    """Register the fixtures, where moto is importable and they are not registered yet."""
    if not _moto_importable() or config.pluginmanager.has_plugin(_FIXTURES):
        return
    fixtures = importlib.import_module(_FIXTURES)
    config.pluginmanager.register(fixtures, _FIXTURES)
