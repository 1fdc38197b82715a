"""Fixtures for integration tests: a scheduler on loopback and agents."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neocloud.agent.gpu.types import GpuBackend
from neocloud.agent.main import Agent, AgentConfig
from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig


@pytest.fixture
def scheduler_factory(tmp_path: Path) -> Iterator[Callable[..., BackgroundScheduler]]:
    started: list[BackgroundScheduler] = []

    def start(port: int = 0, **overrides: object) -> BackgroundScheduler:
        fields: dict[str, object] = {
            "listen": f"127.0.0.1:{port}",
            "db_path": str(tmp_path / "scheduler.db"),
            "metrics_port": None,
            "insecure": True,
            "commit_interval_s": 0.05,
            "init": True,  # a new site in tmp_path; a restart on the same path finds it
        }
        executor = overrides.pop("executor", None)
        fields.update(overrides)
        s = BackgroundScheduler(SchedulerConfig(**fields), executor)  # type: ignore[arg-type]
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(port: int, backend: GpuBackend | None = None, run: bool = True, **overrides: object) -> Agent:
        fields: dict[str, object] = {
            "node_id": "node-1",
            "scheduler": f"127.0.0.1:{port}",
            "backend": "sim",
            "tick_s": 0.05,
            "energy_interval_s": 0.2,
            "batch_ticks": 1,
            "spool_path": str(tmp_path / "spool-node-1.db"),
            "metrics_port": None,
            "insecure": True,
            "backoff_max_s": 0.5,
        }
        fields.update(overrides)
        agent = Agent(AgentConfig(**fields), backend=backend)  # type: ignore[arg-type]
        if run:
            agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
