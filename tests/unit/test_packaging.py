"""Every package folder is listed in pyproject.toml, or a real install would miss it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"neocloud": "neocloud", "agent": "neocloud.agent", "scheduler": "neocloud.scheduler"}


def test_every_package_folder_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *relative.parts]))
    assert found == set(config["packages"])
    assert config["package-dir"] == {
        "neocloud": "neocloud",
        "neocloud.agent": "agent",
        "neocloud.scheduler": "scheduler",
    }
