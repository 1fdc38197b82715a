"""The demo's scenario file: the shipped example loads, and hostile files are
refused with the file, the line and the field."""

from __future__ import annotations

import io
import math
import shutil
import tarfile
from pathlib import Path

import pytest

from neocloud.config import ConfigError
from neocloud.demo.scenario import DEFAULT_FILE, ENTRY, WORKDIRS, Gpus, ScenarioError, load, parse
from neocloud.domain.archive import ArchiveLimits, pack
from neocloud.domain.errors import InvalidArgumentError

GOOD = """\
minutes: 30
speed: 60
site:
  power_budget_w: 20000
  internal_floor_gpus: 8
  min_runtime: 0.5
tenants:
  globex:
    contract: {id: globex-demo, power_w: 5600, start: 1}
  acme:
    weight: 2
internal:
  - {at: 0, gpus: 100%}
  - {at: 5, gpus: 4, note: quiet}
jobs:
  - {at: 2, tenant: globex, class: reserved, gpus: 8}
  - {at: 3, tenant: acme, class: spot, gpus: 4, count: 3, duration: 10, grace: 1, checkpoint: 2, load: 0.5}
"""


def test_the_shipped_scenario_tells_the_whole_story() -> None:
    s = load(DEFAULT_FILE)
    s.check_fleet(32)
    assert s.minutes > 0 and s.speed > 0
    levels = [lvl.gpus.resolve(32) for lvl in s.internal]
    low = levels.index(min(levels))
    assert levels[0] == 32 and max(levels[low:]) > levels[low]  # declines, then a spike
    contracts = [t.contract for t in s.tenants if t.contract is not None]
    assert len(contracts) == 1 and contracts[0].power_w  # one reserved tenant, power-denominated
    assert {j.job_class for j in s.jobs} == {"reserved", "on_demand", "spot"}
    assert len({j.tenant for j in s.jobs if j.job_class == "spot"}) >= 2
    (shipped,) = [j for j in s.jobs if j.workdir is not None]  # a gang across two nodes, running its own code
    assert shipped.gpus == 16 and shipped.gpus_per_node == 8 and shipped.workdir == Path(str(WORKDIRS / "trainer"))


def test_the_trainer_workdir_packs_its_code_and_data_not_its_bytecode(tmp_path: Path) -> None:
    """What the demo uploads: the package's copy, less what its .neocloudignore names."""
    trainer = shutil.copytree(Path(str(WORKDIRS / "trainer")), tmp_path / "trainer")
    (trainer / "__pycache__").mkdir()  # what running train.py beside itself leaves
    (trainer / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"bytecode")
    archive = io.BytesIO()
    info = pack(trainer, archive, ArchiveLimits())
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="r:gz") as tar:
        files = {m.name for m in tar.getmembers() if m.isfile()}
    assert files == {ENTRY, "data/corpus.txt", ".neocloudignore"}, files
    assert info.files == 3


def test_a_good_file_loads_into_frozen_values() -> None:
    s = parse(GOOD, "good.yaml")
    assert (s.minutes, s.speed, s.site.power_budget_w, s.site.min_runtime) == (30, 60, 20000, 0.5)
    assert s.site.internal_floor == Gpus(count=8)
    globex, acme = s.tenants
    assert globex.contract is not None and globex.contract.power_w == 5600 and globex.contract.end is None
    assert acme.weight == 2 and acme.contract is None and acme.line == 10
    assert [lvl.gpus.resolve(16) for lvl in s.internal] == [16, 4]
    spot = s.jobs[1]
    assert (spot.count, spot.duration, spot.grace, spot.checkpoint, spot.load, spot.line) == (3, 10, 1, 2, 0.5, 17)
    assert s.jobs[0].load == 0.8 and s.jobs[0].duration is None  # the class's default load; runs to the end
    with pytest.raises(AttributeError):
        s.minutes = 1  # type: ignore[misc]


def test_defaults_without_site_or_jobs() -> None:
    s = parse("internal:\n  - {at: 0, gpus: 50%}\n")
    assert math.isinf(s.site.power_budget_w) and s.jobs == () and s.tenants == ()
    assert s.internal[0].gpus.resolve(24) == 12


def _error(text: str) -> str:
    with pytest.raises(ScenarioError) as e:
        parse(text, "bad.yaml")
    return str(e.value)


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "bad.yaml: the file is empty"),
        ("minutes: [1\n", "bad.yaml line 2: not valid YAML"),
        ("- 1\n- 2\n", "bad.yaml line 1: must be a mapping, not a list"),
        (
            _replace("speed: 60", "sped: 60"),
            "bad.yaml line 2: sped: unknown key (expected one of: internal, jobs, minutes,",
        ),
        (_replace("speed: 60", "minutes: 60"), "bad.yaml line 2: duplicate key 'minutes' (first at line 1)"),
        (_replace("speed: 60", "speed: fast"), "bad.yaml line 2: speed: must be a number, not 'fast'"),
        (_replace("speed: 60", "speed: 0"), "bad.yaml line 2: speed: must be more than 0, not '0'"),
        (_replace("speed: 60", "speed: .nan"), "bad.yaml line 2: speed: must be a number"),
        (_replace("minutes: 30", "minutes: true"), "bad.yaml line 1: minutes: must be a number, not 'true'"),
        (_replace("power_budget_w: 20000", "power_budget_w: -5"), "line 4: site.power_budget_w: must be more than 0"),
        (_replace("internal_floor_gpus: 8", "internal_floor_gpus: 120%"), "line 5: site.internal_floor_gpus: a share"),
        (_replace("  acme:\n", "  Acme!:\n"), "line 10: tenants.'Acme!': tenant name 'Acme!' must be 1-63"),
        (_replace("  acme:\n", "  internal:\n"), "line 10: tenants.internal: tenant name 'internal'"),
        (
            _replace("{id: globex-demo, power_w: 5600, start: 1}", "{id: globex-demo, power_w: 5600, gpus: 8}"),
            "line 9: tenants.globex.contract: a contract has exactly one of power_w",
        ),
        (_replace("start: 1}", "start: 5, end: 2}"), "line 9: tenants.globex.contract.end: the contract must end"),
        # The rate card prices a contract by its id, so the scenario names it (no terms in the scenario).
        (_replace("id: globex-demo, ", ""), "line 9: tenants.globex.contract: missing required key 'id'"),
        (_replace("id: globex-demo", "id: Globex!"), "line 9: tenants.globex.contract.id: contract id 'Globex!'"),
        (
            _replace("start: 1}", 'start: 1, commitment_per_month: "1.00"}'),
            "line 9: tenants.globex.contract.commitment_per_month",
        ),
        (_replace("weight: 2", "weight: 0"), "line 11: tenants.acme.weight: must be more than 0"),
        (
            _replace("{at: 5, gpus: 4, note: quiet}", "{at: 0, gpus: 4}"),
            "line 14: internal[1].at: internal levels must be in time",
        ),
        (_replace("gpus: 100%", "gpus: lots"), "line 13: internal[0].gpus: must be a number of GPUs"),
        (_replace("gpus: 100%", "gpus: -1"), "line 13: internal[0].gpus: must be a number of GPUs"),
        (_replace("{at: 0, gpus: 100%}", "[0, 100%]"), "line 13: internal[0]: must be a mapping, not a list"),
        (
            _replace("internal:\n  - {at: 0, gpus: 100%}\n  - {at: 5, gpus: 4, note: quiet}\n", "internal: 8\n"),
            "line 12: internal: must be a list, not '8'",
        ),
        (
            _replace("tenant: globex, class", "tenant: initech, class"),
            "line 16: jobs[0].tenant: unknown tenant 'initech': declare it under tenants",
        ),
        (
            _replace("class: spot", "class: internal"),
            "line 17: jobs[1].class: must be one of 'reserved', 'on_demand' or 'spot', not 'internal'",
        ),
        (
            _replace("tenant: globex, class: reserved", "tenant: acme, class: reserved"),
            "line 16: jobs[0].class: tenant acme has no contract",
        ),
        (_replace("gpus: 4, count: 3", "gpus: 4.5, count: 3"), "line 17: jobs[1].gpus: must be a whole number"),
        (_replace("gpus: 4, count: 3", "gpus: 12, count: 3"), "line 17: jobs[1].gpus: 12 GPUs do not split"),
        (
            _replace("gpus: 4, count: 3", "gpus: 4, gpus_per_node: 3, count: 3"),
            "line 17: jobs[1].gpus_per_node: must divide gpus (4)",
        ),
        (_replace("count: 3", "count: 0"), "line 17: jobs[1].count: must be a whole number from 1 to 1000, not '0'"),
        (_replace("load: 0.5", "load: 1.5"), "line 17: jobs[1].load: must be at least 0 and at most 1, not '1.5'"),
        (_replace("grace: 1", "grace: -1"), "line 17: jobs[1].grace: must be at least 0, not '-1'"),
        (_replace("{at: 2, tenant", "{at: 31, tenant"), "line 16: jobs[0].at: minute 31 is after the end (30)"),
        (
            _replace("{at: 2, tenant: globex, class: reserved, gpus: 8}", "{at: 2, tenant: globex}"),
            "line 16: jobs[0]: missing required key 'class'",
        ),
        (_replace("note: quiet", "note: [a]"), "line 14: internal[1].note: must be a string, not a list"),
        # A workdir is a folder of the package's workdirs by name: never a path, never one that is not there.
        (_replace("load: 0.5}", "load: 0.5, workdir: nope}"), "line 17: jobs[1].workdir: no workdir 'nope' with a"),
        (_replace("load: 0.5}", "load: 0.5, workdir: ../demo}"), "line 17: jobs[1].workdir: workdir '../demo' must"),
        (_replace("load: 0.5}", "load: 0.5, workdir: /etc}"), "line 17: jobs[1].workdir: workdir '/etc' must be"),
        (_replace("load: 0.5}", f"load: 0.5, workdir: {'a' * 64}}}"), "line 17: jobs[1].workdir: workdir 'aaaa"),
        (_replace("load: 0.5}", "load: 0.5, workdir: [trainer]}"), "line 17: jobs[1].workdir: must be a string"),
        (
            _replace("  acme:\n    weight: 2\n", "  acme:\n    weight: 2\n  acme: {}\n"),
            "line 12: tenants: duplicate key 'acme' (first at line 10)",
        ),
    ],
)
def test_hostile_files_name_the_line_and_the_field(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_the_fleet_must_be_big_enough() -> None:
    s = parse(_replace("gpus: 4, note", "gpus: 40, note"), "bad.yaml")
    with pytest.raises(ScenarioError, match=r"bad.yaml line 14: internal demand 40 GPUs exceeds the fleet's 32"):
        s.check_fleet(32)
    s = parse(_replace("gpus: 4, count: 3", "gpus: 24, count: 3"), "bad.yaml")
    s.check_fleet(24)
    with pytest.raises(ScenarioError, match=r"line 17: a 24-GPU job cannot fit the fleet's 16 GPUs \(more --nodes\?\)"):
        s.check_fleet(16)


def test_the_scenario_is_a_config_error_and_a_domain_error() -> None:
    """One loader for every config: the demo's errors are the rate card's kind (file, line, field)."""
    with pytest.raises(ConfigError) as e:
        parse("minutes: !!python/name:os.system ''\ninternal: []\n", "bad.yaml")
    assert isinstance(e.value, InvalidArgumentError) and (e.value.line, e.value.field) == (1, "minutes")
    assert "the tag 'tag:yaml.org,2002:python/name:os.system' is not supported" in str(e.value)


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing.yaml: cannot read: "):
        load(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScenarioError, match=r"bin.yaml: cannot read: .*utf-8"):
        load(tmp_path / "bin.yaml")
