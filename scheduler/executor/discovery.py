"""What is on the Ray cluster already: the Ray nodes labelled as neocloud nodes,
and the runners and placement groups an earlier executor left for its jobs
(found by name, for a restarted scheduler to reattach)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, cast

import ray
from ray.util.placement_group import get_placement_group

from neocloud.scheduler.executor.rank import RankStatus
from neocloud.scheduler.executor.tracking import JobRecord, RankRecord
from neocloud.scheduler.executor.types import NODE_LABEL, ExecJob, RayNodeInfo, pg_name, runner_name

logger = logging.getLogger(__name__)

CALL_S = 30.0
_PREFIX = "neocloud-"


def labelled_nodes() -> dict[str, RayNodeInfo]:
    """Every neocloud node that has (or had) a labelled Ray node; an alive one wins."""
    out: dict[str, RayNodeInfo] = {}
    for n in ray.nodes():
        node_id = (n.get("Labels") or {}).get(NODE_LABEL)
        if not node_id:
            continue
        resources = n.get("Resources") or {}
        info = RayNodeInfo(
            alive=bool(n.get("Alive")),
            gpus=int(resources.get("GPU", 0)),
            ray_node_id=n["NodeID"],
            cpus=float(resources["CPU"]) if "CPU" in resources else None,
            memory_bytes=float(resources["memory"]) if "memory" in resources else None,
        )
        if node_id not in out or (info.alive and not out[node_id].alive):
            out[node_id] = info
    return out


def job_ids_on_cluster() -> set[str]:
    """Job ids with a runner (in this driver's namespace) or a live placement group."""
    out = set()
    for name in ray.util.list_named_actors():
        job_id, _, rank = name.removeprefix(_PREFIX).rpartition("-")
        if name.startswith(_PREFIX) and job_id and rank.isdigit():
            out.add(job_id)
    for pg in ray.util.placement_group_table().values():
        name = pg.get("name") or ""
        if name.startswith(_PREFIX) and pg.get("state") != "REMOVED":
            out.add(name.removeprefix(_PREFIX))
    return out


def _find_runner(job_id: str, rank: int, namespace: str) -> tuple[Any, RankStatus | None]:
    try:
        actor = ray.get_actor(runner_name(job_id, rank), namespace=namespace)
        status = cast(RankStatus, ray.get(actor.status.remote(), timeout=CALL_S))
        return actor, status
    except (ValueError, ray.exceptions.RayError) as e:
        logger.warning("job %s: no answer from the runner of rank %d (%s)", job_id, rank, type(e).__name__)
        return None, None


def find_job(job_id: str, namespace: str) -> JobRecord | None:
    """The job's record rebuilt from its runners (their status names its spec,
    world size and nodes) and placement group; None if neither exists. Ranks
    whose runner is gone come back `dead` (the caller reports them lost).
    Ranks have no status yet, so the first watch reports everything afresh."""
    pg: Any = None
    bundles = 0
    with contextlib.suppress(ValueError):
        pg = get_placement_group(pg_name(job_id))
        bundles = len(ray.util.placement_group_table(pg).get("bundles") or {})
    head, st0 = _find_runner(job_id, 0, namespace)
    world = st0.world_size if st0 is not None else bundles
    if world == 0:
        return None
    runners = [(head, st0)] + [_find_runner(job_id, rank, namespace) for rank in range(1, world)]
    spec = next((st.job for _, st in runners if st is not None), None)
    if spec is None:  # only the placement group is left: release() removes it
        spec = ExecJob(job_id, command=["<unknown>"], grace_s=0.0)
    ranks = [
        RankRecord(rank=k, node_id=st.node_id if st else "", actor=actor, dead=st is None)
        for k, (actor, st) in enumerate(runners)
    ]
    return JobRecord(job=spec, pg=pg, ranks=ranks)
