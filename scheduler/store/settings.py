"""The operator's site settings: which keys exist, their types, defaults and
limits, and how they become the policy's PolicyConfig. Values are stored as
text in the canonical form `render` gives them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from neocloud.domain.errors import InvalidArgumentError
from neocloud.scheduler.policy.types import PolicyConfig

SettingValue = int | float | bool


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    parse: Callable[[str], SettingValue]
    default: SettingValue
    help: str


def _int(low: int, high: int) -> Callable[[str], SettingValue]:
    def parse(text: str) -> SettingValue:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"must be a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        return value

    return parse


def _number(low: float, allow_inf: bool = False, above: bool = False) -> Callable[[str], SettingValue]:
    def parse(text: str) -> SettingValue:
        word = text.strip().lower()
        if allow_inf and word in ("inf", "infinity", "none", "unlimited"):
            return math.inf
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"must be a number, not {text!r}") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number" + (" (or 'inf' for no limit)" if allow_inf else ""))
        if value < low or (above and value == low):
            raise ValueError(f"must be {'more than' if above else 'at least'} {low:g}, not {value:g}")
        return value

    return parse


def _bool(text: str) -> SettingValue:
    word = text.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"must be true or false, not {text!r}")


_DEFAULTS = PolicyConfig()
SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting(
            "internal_floor_gpus",
            _int(0, 10_000_000),
            _DEFAULTS.internal_floor_gpus,
            "GPUs internal work may always reclaim from tenants",
        ),
        Setting(
            "site_power_budget_w",
            _number(0.0, allow_inf=True, above=True),
            _DEFAULTS.site_power_budget_w,
            "the site's power budget in watts ('inf': no limit)",
        ),
        Setting(
            "one_tenant_per_node",
            _bool,
            _DEFAULTS.one_tenant_per_node,
            "never place two tenants, or a tenant beside internal work, on one node",
        ),
        Setting(
            "min_runtime_s",
            _number(0.0),
            _DEFAULTS.min_runtime_s,
            "seconds a job runs before it may be preempted",
        ),
        Setting(
            "max_requeues",
            _int(0, 1000),
            _DEFAULTS.max_requeues,
            "preemptions after which a job is no longer requeued",
        ),
        Setting(
            "fair_share_half_life_s",
            _number(0.0, above=True),
            _DEFAULTS.fair_share_half_life_s,
            "half-life of past usage in fair share, seconds",
        ),
        Setting(
            "reclaim_warning_s",
            _number(0.0),
            _DEFAULTS.reclaim_warning_s,
            "horizon of the early reclaim warning, seconds",
        ),
        # Uploaded workdirs (ArtifactService; scheduler/artifacts): what one tenant may store.
        Setting("workdir_max_archive_bytes", _int(1, 1 << 40), 1 << 30, "bytes of one uploaded workdir archive"),
        Setting("workdir_max_tenant_bytes", _int(1, 1 << 50), 10 << 30, "bytes of workdir archives per tenant"),
        Setting("workdir_max_tenant_archives", _int(1, 10_000_000), 1000, "workdir archives per tenant"),
        # At least an hour: a submit marks its workdir used a moment before the job is committed.
        Setting(
            "workdir_retention_s",
            _int(3600, 10 * 365 * 86400),
            7 * 86400,
            "seconds a workdir no active job names is kept after its last upload or submit",
        ),
    )
}


def parse(key: str, text: str) -> SettingValue:
    """The typed value of `text` for `key`; InvalidArgumentError names the key and the rule."""
    setting = SETTINGS.get(key)
    if setting is None:
        raise InvalidArgumentError(f"unknown setting {key!r}: choose one of {', '.join(sorted(SETTINGS))}")
    try:
        return setting.parse(text)
    except ValueError as e:
        raise InvalidArgumentError(f"setting {key} {e}") from e


def render(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return repr(value) if isinstance(value, float) else str(value)


def effective(stored: Mapping[str, str]) -> dict[str, SettingValue]:
    """Every known setting: the stored value where there is one, else the default."""
    return {key: parse(key, stored[key]) if key in stored else s.default for key, s in SETTINGS.items()}


def policy_config(stored: Mapping[str, str], tenant_weights: Mapping[str, float]) -> PolicyConfig:
    values = effective(stored)
    return PolicyConfig(
        internal_floor_gpus=int(values["internal_floor_gpus"]),
        site_power_budget_w=float(values["site_power_budget_w"]),
        one_tenant_per_node=bool(values["one_tenant_per_node"]),
        min_runtime_s=float(values["min_runtime_s"]),
        max_requeues=int(values["max_requeues"]),
        fair_share_half_life_s=float(values["fair_share_half_life_s"]),
        reclaim_warning_s=float(values["reclaim_warning_s"]),
        tenant_weights=dict(tenant_weights),
    )
