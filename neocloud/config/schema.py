"""Config schemas as pydantic models, and their errors as file, line and field.

Each config declares its shape once as `Schema` models (unknown keys refused,
no silent type coercion, frozen); the value types below say how a YAML scalar
becomes a number or a string. `validate` checks a parsed `Document` against a
model and reports the first problem in the file (the lowest line; a missing
key after what is written wrong) as a
ConfigError naming file, line and field, in the operator's words rather than
pydantic's ("must be a mapping, not a list").

A value type's message may hold VALUE, replaced by the value as written in the
file ('yes', not True), so a message shows what the operator typed.
"""

from __future__ import annotations

import logging
import math
import types
from decimal import Decimal
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError

from neocloud.config.yamltree import DECIMAL, Document, Loc

logger = logging.getLogger(__name__)

VALUE = "{value}"
# Any decimal amount: below a quadrillion, to at most 24 places (exact, and still bounded).
MAX_DECIMAL_DIGITS = 15
MAX_DECIMAL_PLACES = 24

M = TypeVar("M", bound="Schema")


class Schema(BaseModel):
    """A config section: unknown keys are errors, nothing is coerced, values are read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def validate(model: type[M], doc: Document) -> M:
    """`doc` checked against `model`; ConfigError (file, line, field) at its first problem."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as e:
        errors = [(tuple(p for p in err["loc"] if p != "[key]"), err) for err in e.errors(include_url=False)]
        # What is written wrong comes first, in file order; then what is missing (its parent's line).
        loc, first = min(errors, key=lambda item: (item[1]["type"] == "missing", doc.line(item[0])))
        raise doc.error(loc, _problem(model, doc, loc, first)) from None  # pydantic's own text says less


def _problem(model: type[Schema], doc: Document, loc: Loc, err: Any) -> str:
    kind = err["type"]
    shown = doc.shown(loc)
    if kind == "value_error":
        return str(err["ctx"]["error"]).replace(VALUE, shown)
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "extra_forbidden":
        return f"unknown key (expected one of: {', '.join(_keys(model, loc[:-1]))})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, not {shown}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, not {shown}"
    if kind == "string_type":
        return f"must be a string, not {shown}"
    if kind == "literal_error":
        return f"must be one of {err['ctx']['expected']}, not {shown}"
    return f"{err['msg']}, not {shown}"


def _keys(model: type[Schema], loc: Loc) -> list[str]:
    """The keys the mapping at `loc` may have, from the model's declaration."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            by_key = {f.alias or name: f.annotation for name, f in current.model_fields.items()}
            current = by_key.get(str(part))
        else:  # dict[K, V] (a key) or list[V] (an index)
            args = get_args(current)
            current = args[-1] if args else None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or name for name, f in current.model_fields.items())
    return []


def _unwrap(annotation: Any) -> Any:
    """X from Annotated[X, ...] and from X | None."""
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return _unwrap(next(a for a in get_args(annotation) if a is not type(None)))
    return annotation


# --- value types ------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        raise ValueError("is empty: give a string")
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {VALUE}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


Text = Annotated[str, PlainValidator(_text)]


def exact_decimal(minimum: Decimal = Decimal(0), maximum: Decimal | None = None) -> PlainValidator:
    """For Annotated[Decimal, ...]: an exact Decimal from the text as written (never through float),
    bounded in size and range."""

    def check(value: Any) -> Decimal:
        if value is None:
            raise ValueError("is empty: give a number")
        if isinstance(value, dict | list):
            raise ValueError(f"must be a number, not {VALUE}")
        text = str(value).strip().replace("_", "") if isinstance(value, str) else str(value)
        if isinstance(value, bool) or not DECIMAL.fullmatch(text):
            raise ValueError(f"{VALUE} is not a number (write digits, e.g. '3.50')")
        number = Decimal(text)
        # Bounded before any arithmetic: '1e999999999' is short text but a billion digits.
        if number and number.adjusted() >= MAX_DECIMAL_DIGITS:
            raise ValueError(f"{VALUE} has more than {MAX_DECIMAL_DIGITS} digits before the point")
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
            raise ValueError(f"{VALUE} has more than {MAX_DECIMAL_PLACES} digits after the point")
        if number < 0 <= minimum:
            raise ValueError(f"{VALUE} is negative")
        if number < minimum:
            raise ValueError(f"{VALUE} is below {minimum}")
        if maximum is not None and number > maximum:
            raise ValueError(f"{VALUE} is above {maximum}")
        return Decimal(int(number)) if isinstance(exponent, int) and exponent > 0 else number  # '1e3' -> 1000

    return PlainValidator(check)


def whole(low: int, high: int) -> PlainValidator:
    """For Annotated[int, ...]: a whole number written as one (not '4.5', not 'true'), from `low` to `high`."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, not {VALUE}")
        return value

    return PlainValidator(check)


def number(low: float, high: float = math.inf, *, above: bool = False) -> PlainValidator:
    """For Annotated[float, ...]: a finite number written as one (not 'fast', not 'true'), at least
    `low` (or more than it, if `above`) and at most `high`."""
    bound = f"more than {low:g}" if above else f"at least {low:g}"
    if math.isfinite(high):
        bound += f" and at most {high:g}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise ValueError(f"must be a number, not {VALUE}")
        if value < low or (above and value == low) or value > high:
            raise ValueError(f"must be {bound}, not {VALUE}")
        if not math.isfinite(float(value)):  # '1.0e+400' is a Decimal, and no float
            raise ValueError(f"{VALUE} is too large")
        return float(value)

    return PlainValidator(check)
