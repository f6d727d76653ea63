"""Loading the user's handler named as ``module:function``, for ``kinesis-eo run`` and redrive."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from kinesis_eo.errors import ConfigurationError

__all__ = ["load_handler"]


def load_handler(spec: str) -> Callable[..., Any]:
    """The function named by ``module:function`` (``module:Class.method`` too).

    The current directory is searched first, as ``python -m`` would: the
    ``kinesis-eo`` script's own directory is the venv's ``bin``, where no
    user module lives.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigurationError(f"--handler must look like module:function, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ConfigurationError(
                f"handler module {module_name!r} was not found "
                "(searched the current directory and sys.path)"
            ) from exc
        raise ConfigurationError(f"handler module {module_name!r} failed to import: {exc}") from exc
    except Exception as exc:
        raise ConfigurationError(
            f"handler module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"handler module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigurationError(
            f"handler {spec!r} is a {type(target).__name__}, not a function: "
            "it must be callable as handler(record, ctx)"
        )
    if inspect.iscoroutinefunction(target):
        # The threaded worker cannot await it: every record would fail and be dead-lettered.
        raise ConfigurationError(
            f"handler {spec!r} is async; kinesis-eo run uses the threaded worker, "
            "so give it a plain def (or run AsyncWorker from your own program)"
        )
    return target  # type: ignore[no-any-return]
