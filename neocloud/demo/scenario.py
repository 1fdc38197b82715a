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
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PlainValidator

from neocloud import config
from neocloud.config import VALUE, ConfigError, Schema, Text, number, whole

logger = logging.getLogger(__name__)

# Package data, so the demo plays from an installed wheel as from a checkout.
DEFAULT_FILE: Traversable = resources.files(__package__) / "scenario.yaml"
# Directories a scenario's jobs may ship (`workdir: NAME`); each runs `python ENTRY` in its copy.
WORKDIRS: Traversable = resources.files(__package__) / "workdirs"
ENTRY = "train.py"
CLASSES = ("reserved", "on_demand", "spot")  # tenants' classes; internal demand has its own section
DEFAULT_LOAD = {"internal": 0.9, "reserved": 0.8, "on_demand": 0.75, "spot": 0.7}
MAX_GPUS = 4096
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_PERCENT = re.compile(r"\s*(\d+(?:\.\d*)?)\s*%\s*")

# The demo's name for a config error (file, line, field); an InvalidArgumentError like the rate card's.
ScenarioError = ConfigError


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
    workdir: Path | None  # the directory it ships and runs ENTRY in; None: the demo's script inline
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
                raise ScenarioError(self.source, level.line, "", f"internal demand {level.gpus} exceeds the fleet's "
                                    f"{fleet_gpus} GPUs (more --nodes?)")  # fmt: skip
        for job in self.jobs:
            if job.gpus > fleet_gpus:
                raise ScenarioError(self.source, job.line, "", f"a {job.gpus}-GPU job cannot fit the fleet's "
                                    f"{fleet_gpus} GPUs (more --nodes?)")  # fmt: skip


def load(path: str | Traversable) -> Scenario:
    return parse(config.read_text(path), str(path))


def parse(text: str, source: str = "<scenario>") -> Scenario:
    doc = config.parse(text, source)
    f = config.validate(_ScenarioFile, doc)
    tenants = tuple(_tenant(doc, name, entry or _Tenant()) for name, entry in f.tenants.items())
    by_name = {t.name: t for t in tenants}
    internal = tuple(
        InternalLevel(lvl.at, lvl.gpus, lvl.note, doc.line(("internal", i))) for i, lvl in enumerate(f.internal)
    )
    for i, (before, after) in enumerate(itertools.pairwise(internal), start=1):
        if after.at <= before.at:
            raise doc.error(("internal", i, "at"), f"internal levels must be in time order (minute {after.at:g} "
                            f"comes after minute {before.at:g})")  # fmt: skip
    jobs = tuple(_submission(doc, i, job, by_name) for i, job in enumerate(f.jobs))
    sections: dict[str, tuple[InternalLevel | Submission, ...]] = {"internal": internal, "jobs": jobs}
    for section, events in sections.items():
        for i, event in enumerate(events):
            if event.at > f.minutes:
                raise doc.error((section, i, "at"), f"minute {event.at:g} is after the end ({f.minutes:g})")
    return Scenario(source, f.minutes, f.speed, Site(**dict(f.site)), tenants, internal, jobs)


# --- relations between fields, checked as the file's values become the types above -------------


def _tenant(doc: config.Document, name: str, entry: _Tenant) -> Tenant:
    where: config.Loc = ("tenants", name, "contract")
    c = entry.contract
    if c is not None and (c.power_w is None) == (c.gpus is None):
        raise doc.error(where, "a contract has exactly one of power_w (watts) and gpus")
    if c is not None and c.end is not None and c.end <= c.start:
        raise doc.error((*where, "end"), f"the contract must end after it starts (minute {c.start:g})")
    contract = None if c is None else Contract(c.power_w, c.gpus, c.start, c.end, c.id)
    return Tenant(name, entry.weight, contract, doc.line(("tenants", name)))


def _submission(doc: config.Document, i: int, job: _Job, tenants: dict[str, Tenant]) -> Submission:
    if job.tenant not in tenants:
        raise doc.error(("jobs", i, "tenant"), f"unknown tenant {job.tenant!r}: declare it under tenants")
    if job.job_class == "reserved" and tenants[job.tenant].contract is None:
        raise doc.error(("jobs", i, "class"), f"tenant {job.tenant} has no contract to run reserved work against")
    if job.gpus_per_node is None and job.gpus > 8 and job.gpus % 8:
        raise doc.error(("jobs", i, "gpus"), f"{job.gpus} GPUs do not split into whole 8-GPU nodes: give gpus_per_node")
    if job.gpus_per_node is not None and job.gpus % job.gpus_per_node:
        raise doc.error(("jobs", i, "gpus_per_node"), f"must divide gpus ({job.gpus})")
    load = DEFAULT_LOAD[job.job_class] if job.load is None else job.load
    workdir = None if job.workdir is None else _workdir(doc, i, job.workdir)
    return Submission(**{**dict(job), "load": load, "workdir": workdir}, line=doc.line(("jobs", i)))


def _workdir(doc: config.Document, i: int, name: str) -> Path:
    # A real directory (an installed wheel is unpacked), so the client can pack it as a tenant's.
    path = Path(str(WORKDIRS / name))
    if not (path / ENTRY).is_file():
        known = sorted(p.name for p in WORKDIRS.iterdir() if (p / ENTRY).is_file())
        raise doc.error(("jobs", i, "workdir"), f"no workdir {name!r} with a {ENTRY} in {path.parent} "
                        f"(there: {', '.join(known) or 'none'})")  # fmt: skip
    return path


# --- the file's schema (pydantic, at the edge only: parse converts it once to the types above) -----


def _gpus(value: Any) -> Gpus:
    if isinstance(value, str) and (match := _PERCENT.fullmatch(value)):
        percent = float(match.group(1))
        if percent > 100.0:
            raise ValueError(f"a share of the fleet is at most 100%, not {VALUE}")
        return Gpus(percent=percent)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_GPUS:
        return Gpus(count=value)
    raise ValueError(f"must be a number of GPUs (0-{MAX_GPUS}) or a share of the fleet like '50%', not {VALUE}")


_ABOVE_ZERO = number(0.0, above=True)


def _power_budget(value: Any) -> float:
    if isinstance(value, str) and value.strip().lower() in ("inf", "none", "unlimited"):
        return math.inf
    return float(_ABOVE_ZERO.func(value))  # type: ignore[call-arg]


def _tenant_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name == "internal":
        raise ValueError(f"tenant name {name!r} must be 1-63 of [a-z0-9-] and not 'internal'")
    return name


def _workdir_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"workdir {name!r} must be 1-63 of [a-z0-9-]: a folder of the demo's workdirs")
    return name


def _contract_id(contract_id: str) -> str:
    if not _NAME.fullmatch(contract_id):
        raise ValueError(f"contract id {contract_id!r} must be 1-63 of [a-z0-9-]")
    return contract_id


GpusValue = Annotated[Gpus, PlainValidator(_gpus)]
Positive = Annotated[float, _ABOVE_ZERO]
NotNegative = Annotated[float, number(0.0)]
Share = Annotated[float, number(0.0, 1.0)]


class _Site(Schema):
    power_budget_w: Annotated[float, PlainValidator(_power_budget)] = math.inf
    internal_floor: GpusValue = Field(default=Gpus(0), alias="internal_floor_gpus")
    min_runtime: NotNegative = 0.0
    internal_load: Share = DEFAULT_LOAD["internal"]


class _Contract(Schema):
    id: Annotated[Text, AfterValidator(_contract_id)]
    power_w: Positive | None = None
    gpus: Annotated[int, whole(1, MAX_GPUS)] | None = None
    start: NotNegative = 0.0
    end: NotNegative | None = None  # None: to the end of the demo


class _Tenant(Schema):
    weight: Positive = 1.0
    contract: _Contract | None = None


class _Level(Schema):
    at: NotNegative
    gpus: GpusValue
    note: Text = ""


class _Job(Schema):
    at: NotNegative
    tenant: Text
    job_class: Literal["reserved", "on_demand", "spot"] = Field(alias="class")
    gpus: Annotated[int, whole(1, MAX_GPUS)]
    gpus_per_node: Annotated[int, whole(1, 8)] | None = None
    count: Annotated[int, whole(1, 1000)] = 1
    duration: Positive | None = None
    grace: NotNegative = 0.5
    checkpoint: Positive | None = None
    load: Share | None = None  # None: the class's DEFAULT_LOAD
    workdir: Annotated[Text, AfterValidator(_workdir_name)] | None = None  # a folder of WORKDIRS to ship
    note: Text = ""


class _ScenarioFile(Schema):
    minutes: Positive = 60.0
    speed: Positive = 40.0
    site: _Site = Field(default_factory=_Site)
    tenants: dict[Annotated[str, AfterValidator(_tenant_name)], _Tenant | None] = Field(default_factory=dict)
    internal: list[_Level]
    jobs: list[_Job] = Field(default_factory=list)
