"""The layer contracts in .importlinter hold, and a violation fails naming its contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e .[dev])"
)


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=package_parent,
        env={"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_package(tmp_path: Path) -> Path:
    """The package as the wheel has it: the symlinked agent/ and scheduler/ become real folders."""
    shutil.copytree(
        ROOT / "neocloud", tmp_path / "neocloud", symlinks=False, ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_the_checkout_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(copy_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("scheduler/policy/engine.py", "import neocloud.scheduler.store.db", "The policy imports neither the store"),
        ("scheduler/policy/engine.py", "import grpc", "The policy imports neither the store"),
        ("agent/sampler.py", "import neocloud.scheduler.ingest.fleet", "The agent imports nothing of the scheduler"),
        ("scheduler/billing/books.py", "import neocloud.scheduler.executor.types", "Billing never imports"),
        ("scheduler/store/jobs.py", "import neocloud.scheduler.ingest.fleet", "Scheduler layers"),
        ("domain/hours.py", "import neocloud.scheduler.store.db", "The shared domain imports nothing"),
        ("scheduler/api/jobs.py", "import ray", "Only the executor imports Ray"),
        ("demo/main.py", "import neocloud.scheduler.store.jobs", "The demo and the benchmarks use the product only"),
        ("bench/meter.py", "import neocloud.agent.gpu.nvml", "The demo and the benchmarks use the product only"),
    ],
)
def test_a_violation_fails_naming_the_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    root = copy_package(tmp_path)
    path = root / "neocloud" / module
    path.write_text(path.read_text() + f"\n{line}  # the violation under test\n")
    result = lint_imports(root)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
