"""mkdocs hook: the command-line reference page shows each subcommand's own ``--help``.

The page holds the marker ``<!-- cli-help -->``; the text put there is what ``kinesis-eo``
prints, so the reference cannot drift from the parser.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- cli-help -->"


def _help(argv: list[str]) -> str:
    from kinesis_eo.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return out.getvalue().rstrip()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # the checkout's kinesis_eo, installed or not
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: make the page stable
    from kinesis_eo.cli import build_parser

    commands = next(
        action.choices
        for action in build_parser()._actions
        if isinstance(getattr(action, "choices", None), dict)
    )
    parts = [f"```text\n$ kinesis-eo --help\n{_help([])}\n```"]
    for name in commands:
        parts.append(f"## `kinesis-eo {name}`\n\n```text\n{_help([name])}\n```")
    return markdown.replace(MARKER, "\n\n".join(parts))
