"""mkdocs hook: docstrings written with Sphinx roles (:class:`X`) show as plain code (`X`).

The package's docstrings are read in editors and ``help()`` too, where the roles are at home;
on the site the Markdown renderer leaves the role's name in front of the code span.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(?=<code>)")
TILDE = re.compile(r"<code>~(?=[\w.]+</code>)")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return TILDE.sub("<code>", ROLE.sub("", html))
