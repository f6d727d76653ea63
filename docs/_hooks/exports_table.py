"""mkdocs hook: the ``kinesis_eo`` reference page lists the package's exports with their summaries.

The page holds the marker ``<!-- exports -->``. Each name links to where its defining module's page
documents it, so a name exported from a module no reference page renders fails the strict build.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- exports -->"


def _summary(value: object) -> str:
    doc = inspect.getdoc(value) or ""
    return " ".join(doc.split("\n\n", 1)[0].split()).replace("|", "\\|")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    import kinesis_eo

    rows = ["| name | what it is for |", "| --- | --- |"]
    for name in kinesis_eo.__all__:
        module = kinesis_eo._EXPORTS[name]
        value = getattr(importlib.import_module(module), name)
        rows.append(f"| [`{name}`][{module}.{name}] | {_summary(value)} |")
    return markdown.replace(MARKER, "\n".join(rows))
