"""One loader for every YAML config (the rate card, the demo scenario): composed YAML that keeps
each value's line, checked against pydantic models, errors naming file, line and field."""

from neocloud.config.schema import VALUE, Schema, Text, exact_decimal, number, validate, whole
from neocloud.config.yamltree import MAX_BYTES, ConfigError, Document, Loc, field_path, parse, read_text

__all__ = [
    "MAX_BYTES",
    "VALUE",
    "ConfigError",
    "Document",
    "Loc",
    "Schema",
    "Text",
    "exact_decimal",
    "field_path",
    "number",
    "parse",
    "read_text",
    "validate",
    "whole",
]
