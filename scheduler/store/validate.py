"""Field checks for everything a person writes into the store: job specs,
names, contracts. Each failure is an InvalidArgumentError whose message names
the field and says what would be accepted."""

from __future__ import annotations

import math
import re

from neocloud.domain.errors import InvalidArgumentError
from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass
from neocloud.scheduler.store import arrays, deps
from neocloud.scheduler.store.records import JobSpec

MAX_GPUS = 4096
MAX_GPUS_PER_NODE = 8
MAX_GRACE_S = 3600.0
MAX_ENV = 64
MAX_ENV_VALUE = 4096
MAX_COMMAND_ARGS = 256
MAX_COMMAND_ARG = 4096
MAX_REQUEST_ID = 128
MAX_GPU_MODEL = 96
MAX_ENTRYPOINT = 256
MAX_NAME = 63
MAX_REASON = 1024
MAX_CPUS = 1024  # per node
MAX_MEMORY_BYTES = 16 * 2**40  # per node: 16 TiB

_ENV_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_ENTRYPOINT = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def finite(field: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidArgumentError(f"{field} must be a finite number, not {value!r}")
    return float(value)


def text(field: str, value: str, max_len: int, required: bool = True) -> str:
    """A printable string of at most `max_len` characters (no control characters)."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{field} must be a string")
    if required and not value:
        raise InvalidArgumentError(f"{field} is required")
    if len(value) > max_len:
        raise InvalidArgumentError(f"{field} is {len(value)} characters long; the limit is {max_len}")
    if _CONTROL.search(value):
        raise InvalidArgumentError(f"{field} must not contain control characters")
    return value


def name(field: str, value: str) -> str:
    """Tenant and token names: 1-63 of [a-z0-9-], starting with a letter or digit."""
    text(field, value, MAX_NAME)
    if not _NAME.fullmatch(value):
        raise InvalidArgumentError(
            f"{field} {value!r} is not a valid name: use lower-case letters, digits and '-', "
            "starting with a letter or digit"
        )
    return value


def tenant_name(value: str) -> str:
    name("tenant", value)
    if value == INTERNAL_TENANT:
        raise InvalidArgumentError(f"tenant name {INTERNAL_TENANT!r} is reserved for the lab's own work")
    return value


def job_spec(spec: JobSpec) -> None:
    """Raise InvalidArgumentError naming the first bad field of `spec`."""
    text("client_request_id", spec.client_request_id, MAX_REQUEST_ID)
    if not isinstance(spec.job_class, JobClass):
        raise InvalidArgumentError(
            f"job_class {spec.job_class!r} is unknown: use internal, reserved, on_demand or spot"
        )
    _gpus(spec.gpus, spec.gpus_per_node)
    if spec.gpu_model is not None:
        text("gpu_model", spec.gpu_model, MAX_GPU_MODEL)
    _program(spec.command, spec.entrypoint)
    _env(spec.env)
    grace = finite("grace_s", spec.grace_s)
    if not 0 <= grace <= MAX_GRACE_S:
        raise InvalidArgumentError(f"grace_s must be between 0 and {MAX_GRACE_S:g} seconds, not {grace:g}")
    if spec.max_runtime_s is not None and finite("max_runtime_s", spec.max_runtime_s) <= 0:
        raise InvalidArgumentError(f"max_runtime_s must be more than 0 seconds, not {spec.max_runtime_s:g}")
    if spec.job_class is JobClass.RESERVED and not spec.contract_id:
        raise InvalidArgumentError("contract_id is required for class reserved: name one of your contracts")
    if spec.job_class is not JobClass.RESERVED and spec.contract_id:
        raise InvalidArgumentError("contract_id is only for class reserved")
    if spec.contract_id is not None:
        text("contract_id", spec.contract_id, MAX_NAME)
    # Class internal for another tenant: the store checks that it is an internal team.
    if spec.tenant == INTERNAL_TENANT and spec.job_class is not JobClass.INTERNAL:
        raise InvalidArgumentError(f"tenant {INTERNAL_TENANT!r} (the lab's own work) has job_class internal only")
    _resources(spec)
    deps.validate(spec.after_ok)
    if spec.array:
        arrays.indices(spec.array)


def job_name(value: str) -> str:
    """A job's name: empty, or 1-63 of [A-Za-z0-9._-] starting with a letter or digit."""
    if value and not (len(value) <= MAX_NAME and _JOB_NAME.fullmatch(value)):
        raise InvalidArgumentError(
            f"name {value[: MAX_NAME + 1]!r} is not a job name: at most {MAX_NAME} of letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    return value


def _resources(spec: JobSpec) -> None:
    job_name(spec.name)
    if isinstance(spec.cpus, bool) or not isinstance(spec.cpus, int) or not 0 <= spec.cpus <= MAX_CPUS:
        raise InvalidArgumentError(f"cpus must be between 0 and {MAX_CPUS} (on each node), not {spec.cpus!r}")
    memory = spec.memory_bytes
    if isinstance(memory, bool) or not isinstance(memory, int) or not 0 <= memory <= MAX_MEMORY_BYTES:
        raise InvalidArgumentError(
            f"memory_bytes must be between 0 and {MAX_MEMORY_BYTES} (16 TiB, on each node), not {memory!r}"
        )


def _gpus(gpus: int, per_node: int) -> None:
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS:
        raise InvalidArgumentError(f"gpus must be between 1 and {MAX_GPUS}, not {gpus!r}")
    if isinstance(per_node, bool) or not isinstance(per_node, int) or not 1 <= per_node <= MAX_GPUS_PER_NODE:
        raise InvalidArgumentError(f"gpus_per_node must be between 1 and {MAX_GPUS_PER_NODE}, not {per_node!r}")
    if gpus % per_node:
        raise InvalidArgumentError(
            f"gpus_per_node ({per_node}) must divide gpus ({gpus}): a gang runs the same number of GPUs on each node"
        )


def _program(command: tuple[str, ...] | None, entrypoint: str | None) -> None:
    if (command is None) == (entrypoint is None):
        raise InvalidArgumentError("give exactly one of command (a list of arguments) and entrypoint (pkg.mod:func)")
    if command is not None:
        if not command:
            raise InvalidArgumentError("command must have at least one argument")
        if len(command) > MAX_COMMAND_ARGS:
            raise InvalidArgumentError(f"command has {len(command)} arguments; the limit is {MAX_COMMAND_ARGS}")
        if not command[0]:
            raise InvalidArgumentError("command[0], the program to run, must not be empty")
        for i, arg in enumerate(command):
            if not isinstance(arg, str) or len(arg) > MAX_COMMAND_ARG or "\x00" in arg:
                raise InvalidArgumentError(
                    f"command[{i}] must be a string of at most {MAX_COMMAND_ARG} characters without NUL"
                )
    if entrypoint is not None:
        text("entrypoint", entrypoint, MAX_ENTRYPOINT)
        if not _ENTRYPOINT.fullmatch(entrypoint):
            raise InvalidArgumentError(f"entrypoint {entrypoint!r} must look like package.module:function")


def _env(env: dict[str, str]) -> None:
    if len(env) > MAX_ENV:
        raise InvalidArgumentError(f"env has {len(env)} entries; the limit is {MAX_ENV}")
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise InvalidArgumentError(f"env key {key!r} is not a valid name: use [A-Z_][A-Z0-9_]*")
        if not isinstance(value, str) or len(value) > MAX_ENV_VALUE or "\x00" in value:
            raise InvalidArgumentError(
                f"env value of {key} must be a string of at most {MAX_ENV_VALUE} characters without NUL"
            )


def contract_terms(gpus: int, power_w: float, gpu_model: str | None, start: float, end: float) -> None:
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= 1_000_000:
        raise InvalidArgumentError(f"gpus must be a whole number between 0 and 1000000, not {gpus!r}")
    power = finite("power_w", power_w)
    if power < 0:
        raise InvalidArgumentError(f"power_w must not be negative, not {power:g}")
    if (gpus > 0) == (power > 0):
        raise InvalidArgumentError("give exactly one of gpus > 0 and power_w > 0: a contract is for GPUs or for power")
    if gpu_model is not None:
        text("gpu_model", gpu_model, MAX_GPU_MODEL)
    if finite("start", start) >= finite("end", end):
        raise InvalidArgumentError(f"start ({start:.0f}) must be before end ({end:.0f})")


def tenant_class(spec: JobSpec, internal_team: bool) -> None:
    """An internal team's work is class internal (the policy's internal capacity), and only its is."""
    if internal_team and spec.job_class is not JobClass.INTERNAL:
        raise InvalidArgumentError(f"tenant {spec.tenant} is an internal team: its job_class is internal only")
    if not internal_team and spec.job_class is JobClass.INTERNAL:
        raise InvalidArgumentError(f"job_class internal is for the lab's own teams, not tenant {spec.tenant}")
