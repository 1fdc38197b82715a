"""The demo's scenario file: a timeline in minutes of demo time (internal demand
levels, tenants' job submissions), the tenants and their contracts, and the
site's settings. Loaded once and validated into frozen dataclasses; every error
names the file, the line and the field, e.g.
"demo.yaml line 12: jobs[2].gpus: must be a whole number from 1 to 4096, not 'lots'".

YAML is composed (not `safe_load`ed) so each value keeps its line and duplicate
keys are caught instead of silently overwritten.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

# Package data, so the demo plays from an installed wheel as from a checkout.
DEFAULT_FILE: Traversable = resources.files(__package__) / "scenario.yaml"
CLASSES = ("reserved", "on_demand", "spot")  # tenants' classes; internal demand has its own section
DEFAULT_LOAD = {"internal": 0.9, "reserved": 0.8, "on_demand": 0.75, "spot": 0.7}
MAX_GPUS = 4096
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_PERCENT = re.compile(r"\s*(\d+(?:\.\d*)?)\s*%\s*")
_TAG = "tag:yaml.org,2002:"


class ScenarioError(ValueError):
    """The scenario cannot run as written; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Gpus:
    """A number of GPUs, or a share of the fleet (so one scenario fits any --nodes)."""

    count: int | None = None
    percent: float | None = None

    def resolve(self, fleet_gpus: int) -> int:
        if self.count is not None:
            return self.count
        return int(fleet_gpus * (self.percent or 0.0) / 100.0)

    def __str__(self) -> str:
        return f"{self.count} GPUs" if self.count is not None else f"{self.percent:g}% of the fleet"


@dataclass(frozen=True, slots=True)
class Contract:
    """A reserved contract: power_w watts or gpus GPUs over demo minutes [start, end)."""

    power_w: float | None
    gpus: int | None
    start: float
    end: float | None  # None: to the end of the demo
    contract_id: str  # the operator's name for it: the rate card prices it under contracts.<id>


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    weight: float
    contract: Contract | None
    line: int


@dataclass(frozen=True, slots=True)
class InternalLevel:
    """From minute `at`, the owner's own work wants this many GPUs."""

    at: float
    gpus: Gpus
    note: str
    line: int


@dataclass(frozen=True, slots=True)
class Submission:
    """At minute `at`, `tenant` submits `count` jobs of this shape."""

    at: float
    tenant: str
    job_class: str
    gpus: int
    gpus_per_node: int | None
    count: int
    duration: float | None  # demo minutes of work; None: until the demo ends
    grace: float  # demo minutes between a preemption notice and the kill
    checkpoint: float | None  # demo minutes between checkpoints; None: never
    load: float  # what the simulated GPUs draw for it, 0..1
    note: str
    line: int


@dataclass(frozen=True, slots=True)
class Site:
    power_budget_w: float  # math.inf: no budget
    internal_floor: Gpus
    min_runtime: float  # demo minutes a job runs before it may be preempted
    internal_load: float


@dataclass(frozen=True, slots=True)
class Scenario:
    source: str
    minutes: float
    speed: float  # demo minutes per wall minute
    site: Site
    tenants: tuple[Tenant, ...]
    internal: tuple[InternalLevel, ...]
    jobs: tuple[Submission, ...]

    def check_fleet(self, fleet_gpus: int) -> None:
        """Refuse what can never run on a fleet of this size (a typo, or too few --nodes)."""
        for level in self.internal:
            if level.gpus.resolve(fleet_gpus) > fleet_gpus:
                raise ScenarioError(
                    f"{self.source} line {level.line}: internal demand {level.gpus} exceeds the fleet's "
                    f"{fleet_gpus} GPUs (more --nodes?)"
                )
        for job in self.jobs:
            if job.gpus > fleet_gpus:
                raise ScenarioError(
                    f"{self.source} line {job.line}: a {job.gpus}-GPU job cannot fit the fleet's "
                    f"{fleet_gpus} GPUs (more --nodes?)"
                )


def load(path: str | Traversable) -> Scenario:
    path = Path(path) if isinstance(path, str) else path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"cannot read the scenario {path}: {getattr(e, 'strerror', None) or e}") from e
    return parse(text, str(path))


def parse(text: str, source: str = "<scenario>") -> Scenario:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source} line {mark.line + 1}" if mark is not None else source
        raise ScenarioError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from e
    if root is None:
        raise ScenarioError(f"{source}: the scenario is empty")
    top = _Map(_N(root, source, ""), {"minutes", "speed", "site", "tenants", "internal", "jobs"})
    minutes = top.number("minutes", low=0.0, above=True, default=60.0)
    speed = top.number("speed", low=0.0, above=True, default=40.0)
    site = _site(top.get("site") if "site" in top else None)
    tenants = tuple(
        _tenant(name, node) for name, node in (_Map(top.get("tenants"), None).items() if "tenants" in top else ())
    )
    names = {t.name: t for t in tenants}
    internal = tuple(_level(node) for node in top.need("internal").seq())
    for before, after in itertools.pairwise(internal):
        if after.at <= before.at:
            raise ScenarioError(f"{source} line {after.line}: internal levels must be in time order (minute "
                                f"{after.at:g} comes after minute {before.at:g})")  # fmt: skip
    jobs = tuple(_submission(node, names) for node in (top.get("jobs").seq() if "jobs" in top else ()))
    events: tuple[InternalLevel | Submission, ...] = (*internal, *jobs)
    for event in events:
        if event.at > minutes:
            raise ScenarioError(f"{source} line {event.line}: minute {event.at:g} is after the end ({minutes:g})")
    return Scenario(source, minutes, speed, site, tenants, internal, jobs)


# --- one entry each ---------------------------------------------------------------------------------


def _site(node: _N | None) -> Site:
    if node is None:
        return Site(math.inf, Gpus(0), 0.0, DEFAULT_LOAD["internal"])
    m = _Map(node, {"power_budget_w", "internal_floor_gpus", "min_runtime", "internal_load"})
    budget = m.get("power_budget_w") if "power_budget_w" in m else None
    return Site(
        power_budget_w=math.inf if budget is None or _is_inf(budget) else _number(budget, 0.0, above=True),
        internal_floor=_gpus(m.get("internal_floor_gpus")) if "internal_floor_gpus" in m else Gpus(0),
        min_runtime=m.number("min_runtime", low=0.0, default=0.0),
        internal_load=m.number("internal_load", low=0.0, high=1.0, default=DEFAULT_LOAD["internal"]),
    )


def _tenant(name: str, node: _N) -> Tenant:
    if not _NAME.fullmatch(name) or name == "internal":
        raise node.error(f"tenant name {name!r} must be 1-63 of [a-z0-9-] and not 'internal'")
    m = _Map(node, {"weight", "contract"}, empty_ok=True)
    contract = None
    if "contract" in m:
        c = _Map(m.need("contract"), {"id", "power_w", "gpus", "start", "end"})
        contract_id = c.text("id", required=True)
        if not _NAME.fullmatch(contract_id):
            raise c.need("id").error(f"contract id {contract_id!r} must be 1-63 of [a-z0-9-]")
        if ("power_w" in c) == ("gpus" in c):
            raise c.node.error("a contract has exactly one of power_w (watts) and gpus")
        start = c.number("start", low=0.0, default=0.0)
        end = c.number("end", low=0.0, default=None)
        if end is not None and end <= start:
            raise c.need("end").error(f"the contract must end after it starts (minute {start:g})")
        contract = Contract(
            power_w=c.number("power_w", low=0.0, above=True) if "power_w" in c else None,
            gpus=c.integer("gpus", 1, MAX_GPUS) if "gpus" in c else None,
            start=start,
            end=end,
            contract_id=contract_id,
        )
    return Tenant(name, m.number("weight", low=0.0, above=True, default=1.0), contract, node.line)


def _level(node: _N) -> InternalLevel:
    m = _Map(node, {"at", "gpus", "note"})
    return InternalLevel(m.number("at", low=0.0), _gpus(m.need("gpus")), m.text("note"), node.line)


def _submission(node: _N, tenants: dict[str, Tenant]) -> Submission:
    m = _Map(node, {"at", "tenant", "class", "gpus", "gpus_per_node", "count", "duration", "grace", "checkpoint",
                    "load", "note"})  # fmt: skip
    tenant = m.text("tenant", required=True)
    if tenant not in tenants:
        raise m.need("tenant").error(f"unknown tenant {tenant!r}: declare it under tenants")
    job_class = m.text("class", required=True)
    if job_class not in CLASSES:
        raise m.need("class").error(f"must be one of {', '.join(CLASSES)} (internal work is the internal section)")
    if job_class == "reserved" and tenants[tenant].contract is None:
        raise m.need("class").error(f"tenant {tenant} has no contract to run reserved work against")
    gpus = m.integer("gpus", 1, MAX_GPUS)
    per_node = m.integer("gpus_per_node", 1, 8) if "gpus_per_node" in m else None
    if per_node is None and gpus > 8 and gpus % 8:
        raise m.need("gpus").error(f"{gpus} GPUs do not split into whole 8-GPU nodes: give gpus_per_node")
    if per_node is not None and gpus % per_node:
        raise m.need("gpus_per_node").error(f"must divide gpus ({gpus})")
    return Submission(
        at=m.number("at", low=0.0),
        tenant=tenant,
        job_class=job_class,
        gpus=gpus,
        gpus_per_node=per_node,
        count=m.integer("count", 1, 1000) if "count" in m else 1,
        duration=m.number("duration", low=0.0, above=True, default=None),
        grace=m.number("grace", low=0.0, default=0.5),
        checkpoint=m.number("checkpoint", low=0.0, above=True, default=None),
        load=m.number("load", low=0.0, high=1.0, default=DEFAULT_LOAD[job_class]),
        note=m.text("note"),
        line=node.line,
    )


def _gpus(node: _N) -> Gpus:
    value = node.scalar()
    if isinstance(value, str) and (match := _PERCENT.fullmatch(value)):
        percent = float(match.group(1))
        if percent > 100.0:
            raise node.error(f"a share of the fleet is at most 100%, not {value!r}")
        return Gpus(percent=percent)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_GPUS:
        return Gpus(count=value)
    raise node.error(f"must be a number of GPUs (0-{MAX_GPUS}) or a share of the fleet like '50%', not {node.shown()}")


# --- composed YAML with lines -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _N:
    raw: yaml.Node
    source: str
    path: str
    key_line: int = 0  # the line of the key naming this value: a block value starts below it

    @property
    def line(self) -> int:
        return self.key_line or int(self.raw.start_mark.line) + 1

    def error(self, problem: str) -> ScenarioError:
        field = f"{self.path}: " if self.path else ""
        return ScenarioError(f"{self.source} line {self.line}: {field}{problem}")

    def shown(self) -> str:
        if isinstance(self.raw, yaml.ScalarNode):
            return repr(self.raw.value)
        return "a list" if isinstance(self.raw, yaml.SequenceNode) else "a mapping"

    def scalar(self) -> Any:
        if not isinstance(self.raw, yaml.ScalarNode):
            raise self.error(f"must be a single value, not {self.shown()}")
        return yaml.SafeLoader("").construct_object(self.raw)  # resolves int, float, bool, null, str

    def seq(self) -> list[_N]:
        if not isinstance(self.raw, yaml.SequenceNode):
            raise self.error(f"must be a list, not {self.shown()}")
        return [_N(item, self.source, f"{self.path}[{i}]") for i, item in enumerate(self.raw.value)]


class _Map:
    """A mapping node's fields: unknown and duplicate keys are errors at their line."""

    def __init__(self, node: _N, allowed: set[str] | None, empty_ok: bool = False) -> None:
        self.node = node
        self._fields: dict[str, _N] = {}
        if empty_ok and isinstance(node.raw, yaml.ScalarNode) and node.scalar() is None:
            return  # `acme:` with nothing under it
        if not isinstance(node.raw, yaml.MappingNode):
            raise node.error(f"must be a mapping of fields, not {node.shown()}")
        for key_node, value in node.raw.value:
            key = _N(key_node, node.source, node.path).scalar()
            if not isinstance(key, str):
                raise _N(key_node, node.source, node.path).error(f"field names are text, not {key!r}")
            path = f"{node.path}.{key}" if node.path else key
            if key in self._fields:
                raise _N(key_node, node.source, path).error("appears twice")
            if allowed is not None and key not in allowed:
                raise _N(key_node, node.source, path).error(
                    f"unknown field; expected one of {', '.join(sorted(allowed))}"
                )
            self._fields[key] = _N(value, node.source, path, int(key_node.start_mark.line) + 1)

    def __contains__(self, key: str) -> bool:
        return key in self._fields

    def items(self) -> list[tuple[str, _N]]:
        return list(self._fields.items())

    def get(self, key: str) -> _N:
        return self._fields[key]

    def need(self, key: str) -> _N:
        if key not in self._fields:
            field = f"{self.node.path}.{key}" if self.node.path else key
            raise ScenarioError(f"{self.node.source} line {self.node.line}: {field}: missing")
        return self._fields[key]

    def number(self, key: str, low: float, high: float = math.inf, above: bool = False, default: Any = ...) -> Any:
        if key not in self._fields:
            if default is ...:
                self.need(key)
            return default
        return _number(self._fields[key], low, high, above)

    def integer(self, key: str, low: int, high: int) -> int:
        node = self.need(key)
        value = node.scalar()
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise node.error(f"must be a whole number from {low} to {high}, not {node.shown()}")
        return value

    def text(self, key: str, required: bool = False) -> str:
        if key not in self._fields and not required:
            return ""
        node = self.need(key)
        value = node.scalar()
        if not isinstance(value, str) or not value.strip():
            raise node.error(f"must be text, not {node.shown()}")
        return value.strip()


def _number(node: _N, low: float, high: float = math.inf, above: bool = False) -> float:
    value = node.scalar()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise node.error(f"must be a number, not {node.shown()}")
    if value < low or (above and value == low) or value > high:
        bound = f"more than {low:g}" if above else f"at least {low:g}"
        raise node.error(f"must be {bound}{f' and at most {high:g}' if math.isfinite(high) else ''}, not {value:g}")
    return float(value)


def _is_inf(node: _N) -> bool:
    value = node.scalar()
    return isinstance(value, str) and value.strip().lower() in ("inf", "none", "unlimited")
