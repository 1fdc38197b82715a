"""requirements/ci.lock fits pyproject.toml: every dependency, of the base and of every extra, is
pinned there (with hashes) at a version its range admits. CI installs from the lock, so a
dependency added to pyproject.toml without `make lock` would otherwise show up as an ImportError."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "ci.lock"


def lock_pins() -> dict[str, str]:
    text = LOCK.read_text()
    pins = {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", text, re.M)}
    assert pins, "no pins with hashes in the lock"
    return pins


def test_every_dependency_is_locked_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    pins = lock_pins()
    wrong = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name == "neocloud":  # an extra naming others (neocloud[agent,scheduler])
            continue
        if name not in pins or not req.specifier.contains(pins[name], prereleases=True):
            wrong.append(f"{req} (lock: {pins.get(name, 'absent')})")
    assert not wrong, f"requirements/ci.lock does not fit pyproject.toml, run `make lock`: {wrong}"


def test_every_locked_package_has_hashes() -> None:
    text = LOCK.read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+==\S+)((?: \\\n    --hash=sha256:[0-9a-f]{64})*)", text, re.M)
    assert entries and all(hashes for _, hashes in entries), [pin for pin, hashes in entries if not hashes]
    assert "neocloud" not in lock_pins(), "the project itself is installed from the checkout"
