"""Runs jobs on Ray: placement groups pinned to the chosen nodes, one runner actor per rank, signals and logs.
The only package that imports ray; imports neocloud.domain and nothing else of the scheduler."""

from typing import TYPE_CHECKING, Any

from neocloud.scheduler.executor.sandbox import node_capabilities
from neocloud.scheduler.executor.types import ExecJob, Executor, ExecutorEvent, Exited, Released, Started

if TYPE_CHECKING:
    from neocloud.scheduler.executor.local_cluster import LocalCluster
    from neocloud.scheduler.executor.ray_executor import RayExecutor

__all__ = [
    "ExecJob",
    "Executor",
    "ExecutorEvent",
    "Exited",
    "LocalCluster",
    "RayExecutor",
    "Released",
    "Started",
    "node_capabilities",
]


def __getattr__(name: str) -> Any:
    # Importing Ray costs seconds: only where jobs run, on first use of a Ray-backed name.
    if name == "RayExecutor":
        from neocloud.scheduler.executor.ray_executor import RayExecutor

        return RayExecutor
    if name == "LocalCluster":
        from neocloud.scheduler.executor.local_cluster import LocalCluster

        return LocalCluster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
