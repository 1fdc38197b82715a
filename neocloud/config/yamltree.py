"""Read a YAML config file into plain values, remembering each value's line and text.

`yaml.safe_load` would turn `3.1` into a binary float, drop duplicate keys
silently and forget where each value came from. Composing instead keeps every
node's line and source text, so money becomes `Decimal(text)` exactly and every
error names file, line and field: "ratecard.yaml line 12: prices.spot.'NVIDIA H200': '-3' is negative".

What YAML itself allows and no config of ours wants (duplicate keys, merge keys,
non-string keys, explicit tags, deep nesting, huge files) is refused here, before
the schema (neocloud/config/schema.py) sees the values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from neocloud.domain.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

MAX_BYTES = 1 << 20  # a rate card with thousands of contracts fits many times over
MAX_DEPTH = 16  # no config needs more than a few levels
MAX_VALUES = 100_000  # aliases included: ten levels of ten `*a` each are 10^10 values in a few hundred bytes
_TAG = "tag:yaml.org,2002:"
# Plain decimal notation: a YAML float or int in this form becomes an exact Decimal or int; any
# other spelling (0x10, 1:30, .nan, .inf) stays the text as written, which no number field accepts.
DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_MAX_INT_CHARS = 40
_MAX_SHOWN = 60  # a value quoted in a message is cut here
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

Loc = tuple[str | int, ...]  # where a value sits: mapping keys and list indices from the root


class ConfigError(InvalidArgumentError):
    """A config file is not valid; the message names file, line and field."""

    def __init__(self, source: str, line: int, field: str, problem: str) -> None:
        where = f"{source} line {line}" if line else source
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
        self.source = source
        self.line = line
        self.field = field
        self.problem = problem


def field_path(loc: Loc) -> str:
    """('prices', 'NVIDIA H200') -> "prices.'NVIDIA H200'"; ('jobs', 2, 'gpus') -> "jobs[2].gpus"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if _PLAIN_KEY.fullmatch(part) else "'" + part.replace("'", "''") + "'"
        out = f"{out}.{name}" if out else name
    return out


@dataclass(frozen=True, slots=True)
class Document:
    """A config file's values (dicts, lists, str, int, Decimal, bool, None) and where each one was written."""

    source: str
    data: Any
    nodes: Mapping[Loc, tuple[int, yaml.Node]]  # loc -> (line of its key, else of the value; the node)

    def line(self, loc: Loc) -> int:
        return self.nodes[self.written(loc)][0]

    def written(self, loc: Loc) -> Loc:
        """The longest part of `loc` that is in the file (a missing key's parent, say)."""
        while loc not in self.nodes:
            loc = loc[:-1]
        return loc

    def shown(self, loc: Loc) -> str:
        """The value at `loc` (or its nearest part in the file) as the operator wrote it, for messages."""
        node = self.nodes[self.written(loc)][1]
        if isinstance(node, yaml.ScalarNode):
            text = str(node.value)
            return "'" + (text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...") + "'"
        return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"

    def error(self, loc: Loc, problem: str) -> ConfigError:
        """An error at the field `loc` (or its nearest part that is in the file)."""
        written = self.written(loc)
        return ConfigError(self.source, self.line(written), field_path(written), problem)


def read_text(path: str | Traversable) -> str:
    """The config file at `path` as text; ConfigError names the path if it cannot be read."""
    path = Path(path) if isinstance(path, str) else path
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)  # bounded: a config is never this big
        if len(raw) > MAX_BYTES:
            raise _too_big(str(path))
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), 0, "", f"cannot read: {getattr(e, 'strerror', None) or e}") from e


def _too_big(source: str) -> ConfigError:
    return ConfigError(source, 0, "", f"is larger than {MAX_BYTES >> 20} MiB")


def parse(text: str, source: str) -> Document:
    """Parse `text`; syntax errors and what no config allows name the line too."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise _too_big(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = int(mark.line) + 1 if mark is not None else 0
        raise ConfigError(source, line, "", f"not valid YAML: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(source, 0, "", f"not valid YAML: {e}") from e
    except RecursionError as e:  # PyYAML's composer recurses once per level: '[[[[...' exhausts the stack
        raise ConfigError(source, 0, "", "nested too deeply (no config needs more than a few levels)") from e
    if root is None:
        raise ConfigError(source, 0, "", "the file is empty")
    nodes: dict[Loc, tuple[int, yaml.Node]] = {}  # also counts the values made, to bound aliases
    data = _value(root, (), int(root.start_mark.line) + 1, source, nodes)
    return Document(source, data, nodes)


def _value(node: yaml.Node, loc: Loc, line: int, source: str, nodes: dict[Loc, tuple[int, yaml.Node]]) -> Any:
    nodes[loc] = (line, node)
    if len(nodes) > MAX_VALUES:
        raise ConfigError(source, line, field_path(loc), f"more than {MAX_VALUES} values (aliases included)")
    if len(loc) > MAX_DEPTH:
        raise ConfigError(source, line, field_path(loc), f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = int(key_node.start_mark.line) + 1
            if key_node.tag == _TAG + "merge":
                raise ConfigError(source, key_line, field_path(loc), "merge keys (<<) are not supported: write the "
                                  "entries out")  # fmt: skip
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _TAG + "str":
                shown = f"'{key_node.value}'" if isinstance(key_node, yaml.ScalarNode) else "a collection"
                raise ConfigError(source, key_line, field_path(loc), f"key {shown} must be a string (quote it)")
            key = str(key_node.value)
            if key in out:
                first = nodes[(*loc, key)][0]
                raise ConfigError(source, key_line, field_path(loc), f"duplicate key {key!r} (first at line {first})")
            out[key] = _value(value_node, (*loc, key), key_line, source, nodes)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _value(item, (*loc, i), int(item.start_mark.line) + 1, source, nodes) for i, item in enumerate(node.value)
        ]
    return _scalar(node, loc, line, source)


def _scalar(node: yaml.Node, loc: Loc, line: int, source: str) -> Any:
    text = str(node.value)
    tag = node.tag.removeprefix(_TAG)
    if tag in ("str", "timestamp"):
        return text
    if tag == "null":
        return None
    if tag == "bool":
        return _BOOLS[text.lower()]
    plain = text.replace("_", "")
    if tag == "int":
        # Long digit strings stay text: int() refuses over 4300 digits, and a number field reads the text.
        return int(plain) if _INTEGER.fullmatch(plain) and len(plain) <= _MAX_INT_CHARS else text
    if tag == "float":
        return Decimal(plain) if DECIMAL.fullmatch(plain) else text
    raise ConfigError(source, line, field_path(loc), f"the tag {node.tag!r} is not supported: write a plain value")
