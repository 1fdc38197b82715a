"""A multi-node Ray cluster on one machine, for demos, benchmarks and tests:
a head without GPUs and one labelled worker node per neocloud node, each with
as many (fake) GPUs as asked. The same shape as a real cluster started with
`ray start --head --num-gpus=0` plus `ray start --labels=neocloud.io/node-id=<id>`
on every GPU node.

Ray's token authentication is on, as on a real site: the token is a file
readable by this process's user only, named to Ray through RAY_AUTH_MODE and
RAY_AUTH_TOKEN_PATH in this process's environment, which the head and worker
nodes (subprocesses) inherit and this process's own ray.init() then uses. Jobs
never see it: runners pass no RAY_* variable to a job (procs.INHERITED_ENV).
Left unset, Ray turns authentication on or off by whether ~/.ray/auth_token
happens to exist."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # compiled, no stub
from ray.cluster_utils import Cluster

from neocloud.scheduler.executor.embedded_head import ensure_token, token_env
from neocloud.scheduler.executor.types import NODE_LABEL, valid_node_id

logger = logging.getLogger(__name__)


class LocalCluster:
    def __init__(
        self,
        gpus_per_node: Mapping[str, int],
        cpus_per_node: int = 2,
        head_cpus: int = 1,
        token_path: Path | None = None,
    ) -> None:
        """`token_path`: Ray's token file (made 0600 if missing); default, one private to this process."""
        for node_id in gpus_per_node:
            if not valid_node_id(node_id):
                raise ValueError(f"node id {node_id!r} cannot be a Ray node label value")
        self.token_path = _use_token(token_path or _process_token())
        self._cluster: Any = _start_head(head_cpus)
        self._nodes: dict[str, Any] = {}
        try:
            for node_id, gpus in gpus_per_node.items():
                self._nodes[node_id] = self._cluster.add_node(
                    num_cpus=cpus_per_node, num_gpus=gpus, labels={NODE_LABEL: node_id}
                )
        except BaseException:
            self._cluster.shutdown()
            raise
        logger.info("local Ray cluster at %s with nodes %s", self.address, dict(gpus_per_node))

    @property
    def address(self) -> str:
        return str(self._cluster.address)

    def remove_node(self, node_id: str) -> None:
        """Kill a worker node's raylet and workers, as a node failure would."""
        self._cluster.remove_node(self._nodes.pop(node_id))

    def shutdown(self) -> None:
        self._cluster.shutdown()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def _use_token(path: Path) -> Path:
    """Make `path` hold a token (0600) if it does not, and turn token authentication on for this
    process and its children; Ray caches its settings, so the cache is refreshed too."""
    ensure_token(path)
    os.environ.pop("RAY_AUTH_TOKEN", None)  # a token in the environment would win over the file
    os.environ.update(token_env(path))
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    return path


_token_dir: Path | None = None


def _process_token() -> Path:
    """One token per process, in a 0700 directory removed at exit."""
    global _token_dir
    if _token_dir is None:
        _token_dir = Path(tempfile.mkdtemp(prefix="neocloud-ray-"))
        atexit.register(shutil.rmtree, _token_dir, True)
    return _token_dir / "ray-token"


def _start_head(cpus: int) -> Any:
    """The head node. On a loaded machine Ray's GCS now and then never reports its port
    (RuntimeError "Timed out waiting for file ...") or its raylet never registers (Exception "The
    current node timed out during startup"); one more try is then worth it."""
    args = {"num_cpus": cpus, "num_gpus": 0}
    try:
        return Cluster(initialize_head=True, head_node_args=args)
    except Exception as e:  # Ray raises a bare Exception for the second
        if "timed out" not in str(e).lower():
            raise
        logger.warning("the local Ray head did not start (%s); trying again", e)
    return Cluster(initialize_head=True, head_node_args=args)
