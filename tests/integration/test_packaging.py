"""The wheel as a user gets it: built from a copy of the source, installed in fresh virtualenvs,
run from a folder outside the checkout so that only the installed copy can be imported.

- Without extras (a tenant's `pip install neocloud`; its dependencies from the package index at the
  versions in requirements/ci.lock): the version, the client commands, and the daemons' commands
  saying which extra they need.
- With the extras (their packages borrowed from this virtualenv through a .pth file rather than
  downloaded again; neocloud itself is the wheel's): the demo reads its scenario and rate card from
  the installed package.
- The wheel holds every package of the source tree (agent/ and scheduler/ as real folders under
  neocloud/), the package data and the type information.

Marked `wheel`: about 12 s here (a wheel build, two virtualenvs, three pip runs), with pip's cache
empty too."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import neocloud

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "ci.lock"
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "neocloud", "agent", "scheduler")
EXTRA_MODULES = ("ray", "pynvml", "prometheus_client", "grpc_health")
PACKAGE_DATA = (
    "neocloud/py.typed",
    "neocloud/demo/scenario.yaml",
    "neocloud/demo/ratecard.yaml",
    # The workdir the demo's scenario ships, dotfile included (a plain `*` glob would miss it).
    "neocloud/demo/workdirs/trainer/train.py",
    "neocloud/demo/workdirs/trainer/data/corpus.txt",
    "neocloud/demo/workdirs/trainer/.neocloudignore",
)


def run(cmd: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A command with this environment less anything that would put the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def neocloud(self) -> Path:
        return self.root / "bin" / "neocloud"

    def site_packages(self) -> Path:
        (path,) = self.root.glob("lib/python3*/site-packages")
        return path


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory for the installed commands: not the checkout."""
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A copy, so that no stale build/ folder of the checkout can leak into the wheel, and the
    # symlinks neocloud/agent and neocloud/scheduler stay symlinks, as in a clone.
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=skip)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    ok(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, src], cwd=src))
    (built,) = out.glob("neocloud-*.whl")
    return built


@pytest.fixture(scope="module")
def base(wheel: Path, outside: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtualenv with the wheel and no extras; dependencies from the index, at the locked versions."""
    venv = Venv(tmp_path_factory.mktemp("base") / "venv")
    ok(run([sys.executable, "-m", "venv", venv.root], cwd=outside))
    pins = venv.root / "constraints.txt"  # the lock without its hashes (pip takes no hashes in a constraints file)
    pins.write_text("".join(f"{m[1]}\n" for m in re.finditer(r"^([A-Za-z0-9_.\-]+==\S+)", LOCK.read_text(), re.M)))
    ok(run([venv.python, "-m", "pip", "install", "--quiet", "-c", pins, wheel], cwd=outside))
    return venv


@pytest.fixture(scope="module")
def full(wheel: Path, outside: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """A fresh virtualenv with the wheel (no dependencies) that sees this virtualenv's third-party
    packages through a .pth file. A .pth line that is a folder adds the folder to sys.path without
    running the .pth files in it, so this checkout's editable install stays out."""
    venv = Venv(tmp_path_factory.mktemp("full") / "venv")
    ok(run([sys.executable, "-m", "venv", "--without-pip", venv.root], cwd=outside))
    borrowed = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (venv.site_packages() / "borrowed-dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    ok(run([sys.executable, "-m", "pip", "--python", venv.python, "install", "--quiet", "--no-deps", wheel], outside))
    yield venv


# --- the wheel's contents -------------------------------------------------------------------------


def source_packages() -> dict[str, Path]:
    """Every package folder of the source tree by its name in the wheel; agent/ and scheduler/
    are walked from the top of the repository, not through the symlinks."""
    roots = {"neocloud": ROOT / "neocloud", "neocloud/agent": ROOT / "agent", "neocloud/scheduler": ROOT / "scheduler"}
    packages: dict[str, Path] = {}
    for prefix, top in roots.items():
        for init in top.rglob("__init__.py"):
            rel = init.parent.relative_to(top)
            if prefix == "neocloud" and rel.parts[:1] in (("agent",), ("scheduler",)):
                continue  # through the symlinks (where rglob follows them): counted from the real folders
            packages[f"{prefix}/{rel.as_posix()}".removesuffix("/.")] = init.parent
    return packages


def test_the_wheel_holds_every_package_and_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = source_packages()
    assert {"neocloud/agent/gpu", "neocloud/scheduler/metering", "neocloud/v1", "neocloud/cli"} <= packages.keys()
    missing = []
    for name, folder in packages.items():
        for f in folder.iterdir():
            if f.suffix in (".py", ".pyi") and f"{name}/{f.name}" not in names:
                missing.append(f"{name}/{f.name}")
    assert not missing, f"not in the wheel: {missing}"
    in_wheel = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert in_wheel == set(packages), "the wheel's packages are the source tree's"
    # Real files, not links: the agent's modules are the top-level folder's.
    assert zipfile.ZipFile(wheel).read("neocloud/agent/main.py") == (ROOT / "agent" / "main.py").read_bytes()


def test_the_wheel_holds_the_package_data_and_type_information(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names
    assert {f"neocloud/v1/{p.name}" for p in (ROOT / "neocloud" / "v1").glob("*.pyi")} <= names
    assert not [n for n in names if n.startswith(("tests/", "deploy/", "proto/")) or "__pycache__" in n]


def test_the_wheel_declares_the_extras_and_a_base_without_them(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(z.read(meta))
    assert metadata["Version"] == neocloud.__version__
    assert {"agent", "scheduler", "demo", "all", "dev"} <= set(metadata.get_all("Provides-Extra") or [])
    requires = metadata.get_all("Requires-Dist") or []
    base = {re.split(r"[<>=;\[ ]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert base == {"grpcio", "protobuf", "cryptography", "pyyaml", "pydantic"}
    assert all("==" not in r.split(";")[0] for r in requires), "ranges, not pins"


def test_the_packaged_demo_files_are_the_ones_deploy_documents() -> None:
    assert (ROOT / "neocloud/demo/scenario.yaml").read_bytes() == (
        ROOT / "deploy/config/demo-scenario.yaml"
    ).read_bytes()
    assert (ROOT / "neocloud/demo/ratecard.yaml").read_bytes() == (
        ROOT / "deploy/config/ratecard.example.yaml"
    ).read_bytes()


# --- installed without extras ---------------------------------------------------------------------


def test_the_base_install_has_no_extra(base: Venv, outside: Path) -> None:
    found = ok(
        run(
            [base.python, "-c", f"import importlib.util as u; print([m for m in {EXTRA_MODULES!r} if u.find_spec(m)])"],
            outside,
        )
    )
    assert found.strip() == "[]"
    where = ok(run([base.python, "-c", "import neocloud; print(neocloud.__file__)"], outside))
    assert Path(where.strip()).is_relative_to(base.site_packages())


def test_version_from_the_one_source(base: Venv, outside: Path) -> None:
    assert ok(run([base.python, "-m", "neocloud", "--version"], outside)).strip() == f"neocloud {neocloud.__version__}"
    assert ok(run([base.neocloud, "--version"], outside)).strip() == f"neocloud {neocloud.__version__}"
    metadata = ok(run([base.python, "-c", "import importlib.metadata as m; print(m.version('neocloud'))"], outside))
    assert metadata.strip() == neocloud.__version__


@pytest.mark.parametrize(
    "words",
    [
        ["--help"],
        ["submit", "--help"],
        ["jobs", "--help"],
        ["invoice", "--help"],
        ["certs", "ca", "--help"],
        ["scheduler", "--help"],
    ],
)
def test_the_client_commands_and_every_help_work_without_extras(base: Venv, outside: Path, words: list[str]) -> None:
    assert ok(run([base.neocloud, *words], outside)).startswith("usage: neocloud")


def test_certificates_are_made_without_extras(base: Venv, outside: Path) -> None:
    ok(run([base.neocloud, "certs", "ca", "--dir", outside / "pki"], outside))
    assert (outside / "pki" / "ca.pem").exists()


@pytest.mark.parametrize(
    ("words", "extra"),
    [
        (["scheduler", "--insecure", "--listen", "127.0.0.1:0", "--db", "s.db", "--ray-address", "none"], "scheduler"),
        (["agent", "--backend", "sim", "--insecure", "--spool", "a.db"], "agent"),
        (["demo"], "demo"),
    ],
)
def test_a_daemon_without_its_extra_says_what_to_install(
    base: Venv, outside: Path, words: list[str], extra: str
) -> None:
    done = run([base.neocloud, *words], outside)
    assert done.returncode == 2
    assert done.stderr.startswith(f"neocloud {words[0]} needs the {extra} extra (")
    assert done.stderr.strip().endswith(f"pip install 'neocloud[{extra}]'") and len(done.stderr.splitlines()) == 1
    assert not (outside / "s.db").exists() and not (outside / "a.db").exists()


# --- installed with the extras: the demo ----------------------------------------------------------


def test_neocloud_is_the_wheels_copy(full: Venv, outside: Path) -> None:
    where = ok(run([full.python, "-c", "import neocloud.demo.main as m; print(m.__file__)"], outside))
    assert Path(where.strip()).is_relative_to(full.site_packages())


def test_the_demo_reads_its_scenario_and_rate_card_from_the_installed_package(full: Venv, outside: Path) -> None:
    assert ok(run([full.neocloud, "demo", "--help"], outside)).startswith("usage: neocloud demo")
    script = (
        "from neocloud.demo import billing, scenario\n"
        "s = scenario.load(scenario.DEFAULT_FILE)\n"
        "s.check_fleet(32)\n"
        "card = billing.demo_ratecard()\n"
        "(workdir,) = {j.workdir for j in s.jobs if j.workdir}\n"
        "print(scenario.DEFAULT_FILE, billing.EXAMPLE_RATECARD, len(s.jobs), card.currency, workdir, sep='\\n')\n"
    )
    scenario_file, ratecard_file, jobs, currency, workdir = ok(run([full.python, "-c", script], outside)).split()
    assert Path(scenario_file).is_relative_to(full.site_packages())
    assert Path(ratecard_file).is_relative_to(full.site_packages())
    assert Path(workdir).is_relative_to(full.site_packages())  # the shipped trainer, as the tenant uploads it
    assert int(jobs) > 0 and currency
    # The command itself, as far as it goes without starting anything.
    done = run([full.neocloud, "demo", "--minutes", "0"], outside)
    assert done.returncode == 2 and done.stderr.startswith("neocloud demo: --minutes must be more than 0"), done.stderr
