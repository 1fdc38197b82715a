"""`.neocloudignore`: which paths of a workdir stay home, in the common subset of `.gitignore` syntax.

Supported: blank lines and `#` comments (`\\#` for a leading hash), `!` negation (`\\!` for a
leading bang), `*` and `?` (never across a `/`), `[...]` classes, `**` (`**/x` at any depth, `x/**`
everything inside, `a/**/b` zero or more directories between), a trailing `/` (directories only) and
a leading or inner `/` (anchored to the workdir's root; otherwise the pattern matches a name at any
depth). The last matching pattern decides, and, as in git, nothing inside an ignored directory can be
brought back by a later `!` (the packer does not descend into it).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

IGNORE_FILE = ".neocloudignore"


@dataclass(frozen=True, slots=True)
class _Rule:
    regex: re.Pattern[str]
    negated: bool
    dirs_only: bool


def _segment(text: str) -> str:
    """One path segment's glob as a regex (no `/` inside)."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(re.escape(text[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := text.find("]", i + 2)) != -1:
            body = text[i + 1 : end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\").replace("/", "") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _rule(line: str) -> _Rule | None:
    line = line.rstrip("\n").rstrip("\r")
    if not line.strip() or line.startswith("#"):
        return None
    if not line.endswith("\\ "):  # trailing spaces are dropped unless escaped
        line = line.rstrip(" ")
    negated = line.startswith("!")
    if negated or line.startswith("\\!") or line.startswith("\\#"):
        line = line[1:]
    dirs_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    anchored = "/" in line
    parts = line.lstrip("/").split("/")
    body = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            body += ".*" if last else "(?:.*/)?"
        else:
            body += _segment(part) + ("" if last else "/")
    prefix = "^" if anchored else "^(?:.*/)?"
    return _Rule(re.compile(prefix + body + "$", re.DOTALL), negated, dirs_only)


class IgnoreRules:
    """Rules parsed from one `.neocloudignore` text; `ignored(path, is_dir)` with a `/`-separated
    path relative to the workdir's root."""

    def __init__(self, text: str = "") -> None:
        self._rules = tuple(r for r in map(_rule, text.splitlines()) if r is not None)

    def ignored(self, path: str, is_dir: bool) -> bool:
        verdict = False
        for rule in self._rules:
            if rule.dirs_only and not is_dir:
                continue
            if rule.regex.match(path):
                verdict = not rule.negated
        return verdict
