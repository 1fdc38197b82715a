"""Read a YAML document as composed nodes, so every value keeps its line and source text.

`yaml.safe_load` would hand back floats (3.1 is already binary by then), drop
duplicate keys silently, and forget where each value came from. Composing
instead gives nodes with `start_mark.line` and the scalar's text as written,
so money becomes `Decimal(text)` exactly and every error names file, line and
field: "ratecard.yaml line 12: prices.spot.'NVIDIA H200': '-3' is negative".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import yaml

from neocloud.domain.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

_TAG = "tag:yaml.org,2002:"
_NUMERIC_TAGS = frozenset({_TAG + "str", _TAG + "int", _TAG + "float"})
# Plain decimal notation only: no hex, sexagesimal, NaN, infinity or currency signs.
# Any price, term or amount: below a quadrillion, to at most 24 places (exact, and still bounded).
MAX_DECIMAL_DIGITS = 15
MAX_DECIMAL_PLACES = 24
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class ConfigError(InvalidArgumentError):
    """A config file is not valid; the message names file, line and field."""

    def __init__(self, source: str, line: int, field: str, problem: str) -> None:
        where = f"{source} line {line}" if line else source
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
        self.source = source
        self.line = line
        self.field = field
        self.problem = problem


def key_path(parent: str, key: str) -> str:
    """`prices` + `NVIDIA H200` -> `prices.'NVIDIA H200'`; plain names stay bare."""
    part = key if _PLAIN_KEY.fullmatch(key) else "'" + key.replace("'", "''") + "'"
    return f"{parent}.{part}" if parent else part


@dataclass(frozen=True, slots=True)
class Node:
    """One composed YAML node with where it sits (dotted field path, 1-based line)."""

    raw: yaml.Node
    source: str
    path: str
    key_line: int = 0  # the line of the key that names this value, where there is one

    @property
    def line(self) -> int:
        """Where an operator looks for the field: its key's line (a block value starts below it)."""
        return self.key_line or int(self.raw.start_mark.line) + 1

    def error(self, problem: str) -> ConfigError:
        return ConfigError(self.source, self.line, self.path, problem)

    def shown(self) -> str:
        """The value as the operator wrote it, for messages."""
        if isinstance(self.raw, yaml.ScalarNode):
            return "'" + str(self.raw.value) + "'"
        return "a list" if isinstance(self.raw, yaml.SequenceNode) else "a mapping"

    # -- structure ---------------------------------------------------------

    def is_mapping(self) -> bool:
        return isinstance(self.raw, yaml.MappingNode)

    def items(self, allowed: frozenset[str] | None = None) -> Iterator[tuple[str, Node]]:
        """The mapping's (key, value) pairs in file order. Keys must be unique
        strings, and one of `allowed` when it is given."""
        if not isinstance(self.raw, yaml.MappingNode):
            raise self.error(f"must be a mapping, not {self.shown()}")
        seen: dict[str, int] = {}
        for key_raw, value_raw in self.raw.value:
            key_node = Node(key_raw, self.source, self.path)
            if key_raw.tag == _TAG + "merge":
                raise key_node.error("merge keys (<<) are not supported: write the entries out")
            if not isinstance(key_raw, yaml.ScalarNode) or key_raw.tag != _TAG + "str":
                raise key_node.error(f"key {key_node.shown()} must be a string (quote it)")
            key = str(key_raw.value)
            if key in seen:
                raise key_node.error(f"duplicate key {key!r} (first at line {seen[key]})")
            seen[key] = key_node.line
            if allowed is not None and key not in allowed:
                raise Node(key_raw, self.source, key_path(self.path, key)).error(
                    f"unknown key (expected one of: {', '.join(sorted(allowed))})"
                )
            yield key, Node(value_raw, self.source, key_path(self.path, key), key_node.line)

    def fields(self, allowed: frozenset[str], required: frozenset[str] = frozenset()) -> dict[str, Node]:
        """A mapping with a fixed set of keys, as a dict; missing required keys are errors."""
        out = dict(self.items(allowed))
        missing = sorted(required - out.keys())
        if missing:
            raise self.error(f"missing required key {missing[0]!r}")
        return out

    # -- scalars -----------------------------------------------------------

    def _scalar_text(self, what: str) -> str:
        if not isinstance(self.raw, yaml.ScalarNode):
            raise self.error(f"must be {what}, not {self.shown()}")
        if self.raw.tag == _TAG + "null":
            raise self.error(f"is empty: give {what}")
        return str(self.raw.value).strip()

    def text(self) -> str:
        value = self._scalar_text("a string")
        if self.raw.tag != _TAG + "str":
            raise self.error(f"{self.shown()} must be a string (quote it)")
        if not value:
            raise self.error("must not be empty")
        return value

    def decimal(self, *, minimum: Decimal = Decimal(0), maximum: Decimal | None = None) -> Decimal:
        """An exact decimal from the source text (never through float)."""
        text = self._scalar_text("a number")
        plain = text.replace("_", "")
        if self.raw.tag not in _NUMERIC_TAGS or not _DECIMAL.fullmatch(plain):
            raise self.error(f"{self.shown()} is not a number (write digits, e.g. '3.50')")
        try:
            value = Decimal(plain)
        except InvalidOperation as e:  # the pattern should have caught it
            raise self.error(f"{self.shown()} is not a number") from e
        # Bounded before any arithmetic: '1e999999999' is short text but a billion digits.
        if value and value.adjusted() >= MAX_DECIMAL_DIGITS:
            raise self.error(f"{self.shown()} has more than {MAX_DECIMAL_DIGITS} digits before the point")
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
            raise self.error(f"{self.shown()} has more than {MAX_DECIMAL_PLACES} digits after the point")
        if value < 0 <= minimum:
            raise self.error(f"{self.shown()} is negative")
        if value < minimum:
            raise self.error(f"{self.shown()} is below {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(f"{self.shown()} is above {maximum}")
        if isinstance(exponent, int) and exponent > 0:  # '1e3' -> 1000, not 1E+3
            value = Decimal(int(value))
        return value

    def integer(self, *, minimum: int, maximum: int) -> int:
        text = self._scalar_text("a whole number")
        plain = text.replace("_", "")
        if self.raw.tag not in _NUMERIC_TAGS or not re.fullmatch(r"[+-]?\d+", plain):
            raise self.error(f"{self.shown()} is not a whole number")
        value = int(plain)
        if not minimum <= value <= maximum:
            raise self.error(f"{self.shown()} is out of range ({minimum} to {maximum})")
        return value


def compose(text: str, source: str) -> Node:
    """Parse `text` into its root node; syntax errors name the line too."""
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
        raise ConfigError(source, 0, "", "is empty")
    return Node(root, source, "")
