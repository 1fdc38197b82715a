"""Plays a demo scenario against a running scheduler through its real gRPC API,
as the people in it would: the operator sets up tenants, tokens, the contract
and the site settings; the lab's teams follow the internal demand level by
submitting and cancelling internal jobs; tenants submit their jobs on time.

Scenario time is minutes of demo time; the scheduler lives in wall seconds, so
every duration (job work, grace, checkpoints, minimum run time) is converted
with the speed (demo minutes per wall minute).
"""

from __future__ import annotations

import logging
import math
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from neocloud.client import CALL_TIMEOUT_S
from neocloud.demo.scenario import ENTRY, WORKDIRS, Scenario, Submission
from neocloud.v1 import admin_pb2, admin_pb2_grpc, jobs_pb2, jobs_pb2_grpc

logger = logging.getLogger(__name__)

INTERNAL = "internal"
INTERNAL_GRACE_S = 2.0  # the lab's own jobs leave quickly when their team cancels them
CLASSES = {
    INTERNAL: jobs_pb2.JOB_CLASS_INTERNAL,
    "reserved": jobs_pb2.JOB_CLASS_RESERVED,
    "on_demand": jobs_pb2.JOB_CLASS_ON_DEMAND,
    "spot": jobs_pb2.JOB_CLASS_SPOT,
}

# Every demo job runs the trainer's script (checkpoints, resumes, leaves on notice): inline from the
# package, or, for a submission that ships a workdir, as the file in its copy of that directory.
JOB_SCRIPT = (WORKDIRS / "trainer" / ENTRY).read_text(encoding="utf-8")


@dataclass
class _Internal:
    job_id: str
    gpus: int


@dataclass
class Player:
    """The scenario's actors. Call setup() once, advance(minute) as demo time
    passes, and finish() at the end; `events` says what happened, in words."""

    scenario: Scenario  # with the run's minutes and speed
    fleet_gpus: int
    channel: grpc.Channel
    operator_token: str
    # Packs and uploads a directory with a tenant's token, as the tenant's client does; gives its digest.
    upload: Callable[[str, Path], str]
    events: list[str] = field(default_factory=list)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # tenant (or "internal") -> job ids
    shipped: dict[str, str] = field(default_factory=dict)  # job id -> the digest of the workdir it runs in
    internal_demand: int = 0
    contract_ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self._tokens: dict[str, str] = {}
        self._digests: dict[tuple[str, Path], str] = {}  # (tenant, workdir) -> digest: each uploaded once
        self._internal: list[_Internal] = []
        self._next_level = 0
        self._next_job = 0
        self._t0 = 0.0

    def wall_s(self, minutes: float) -> float:
        """Wall seconds of `minutes` of demo time."""
        return minutes * 60.0 / self.scenario.speed

    # --- the operator -------------------------------------------------------------------------------

    def setup(self, t0: float, ratecard: str) -> None:
        """The rate card (its text), tenants, tokens, contracts and settings; `t0` is the wall
        time of minute 0. The card goes first: a contract it cannot price is refused."""
        self._t0 = t0
        self._admin_call("ApplyRateCard", admin_pb2.ApplyRateCardRequest(yaml=ratecard, source="ratecard.yaml"))
        site = self.scenario.site
        budget = "inf" if math.isinf(site.power_budget_w) else repr(site.power_budget_w)
        for key, value in (
            ("site_power_budget_w", budget),
            ("internal_floor_gpus", str(site.internal_floor.resolve(self.fleet_gpus))),
            ("min_runtime_s", repr(self.wall_s(site.min_runtime))),
        ):
            self._admin_call("SetSetting", admin_pb2.SetSettingRequest(key=key, value=value))
        made = self._admin_call(
            "CreateToken", admin_pb2.CreateTokenRequest(name="demo-lab", role=admin_pb2.ROLE_INTERNAL)
        )
        self._tokens[INTERNAL] = made.token
        # A contract with no end runs past the demo, so stopping the demo never races its end.
        open_end = self.scenario.minutes + 60.0 * self.scenario.speed
        for tenant in self.scenario.tenants:
            self._admin_call("CreateTenant", admin_pb2.CreateTenantRequest(name=tenant.name, weight=tenant.weight))
            request = admin_pb2.CreateTokenRequest(
                name=f"{tenant.name}-demo", role=admin_pb2.ROLE_TENANT, tenant=tenant.name
            )
            self._tokens[tenant.name] = self._admin_call("CreateToken", request).token
            c = tenant.contract
            if c is not None:
                contract = self._admin_call(
                    "CreateContract",
                    admin_pb2.CreateContractRequest(
                        tenant=tenant.name,
                        power_w=c.power_w or 0.0,
                        gpus=c.gpus or 0,
                        start=t0 + self.wall_s(c.start),
                        end=t0 + self.wall_s(c.end if c.end is not None else open_end),
                        contract_id=c.contract_id,
                    ),
                )
                self.contract_ids[tenant.name] = contract.contract_id
                size = f"{c.power_w:g} W" if c.power_w else f"{c.gpus} GPUs"
                self._event(c.start, f"{tenant.name} holds a reserved contract for {size}")

    # --- the timeline -------------------------------------------------------------------------------

    def advance(self, minute: float) -> None:
        """Everything the scenario has due by `minute`, in file order."""
        levels, jobs = self.scenario.internal, self.scenario.jobs
        while self._next_level < len(levels) and levels[self._next_level].at <= minute:
            level = levels[self._next_level]
            self._next_level += 1
            target = level.gpus.resolve(self.fleet_gpus)
            note = f": {level.note}" if level.note else ""
            self._event(level.at, f"internal demand {self.internal_demand} -> {target} GPUs{note}")
            self._set_internal(target)
        while self._next_job < len(jobs) and jobs[self._next_job].at <= minute:
            sub = jobs[self._next_job]
            self._next_job += 1
            ids = [self._submit_tenant_job(sub) for _ in range(sub.count)]
            note = f": {sub.note}" if sub.note else ""
            what = f"{sub.count} {sub.job_class.replace('_', '-')} job{'s' if sub.count > 1 else ''}"
            self._event(sub.at, f"{sub.tenant} submits {what} of {sub.gpus} GPUs{note} ({', '.join(ids)})")

    def skipped(self) -> int:
        """Scenario events after the run's end (a shorter --minutes than the file's)."""
        late = [e.at for e in self.scenario.internal] + [e.at for e in self.scenario.jobs]
        return sum(1 for at in late if at > self.scenario.minutes)

    def finish(self) -> None:
        """The demo is over: every owner cancels its jobs that have not ended."""
        for owner, ids in self.jobs.items():
            for job_id in ids:
                self._cancel(owner, job_id)

    # --- the lab and the tenants --------------------------------------------------------------------

    def _set_internal(self, target: int) -> None:
        """Cancel the newest internal jobs down to the target, then submit up to it (8-GPU jobs)."""
        while self._internal and sum(j.gpus for j in self._internal) > target:
            self._cancel(INTERNAL, self._internal.pop().job_id)
        missing = target - sum(j.gpus for j in self._internal)
        while missing > 0:
            gpus = min(8, missing)
            env = {"NEOCLOUD_SIM_LOAD": repr(self.scenario.site.internal_load)}
            job_id = self._submit(INTERNAL, INTERNAL, gpus, gpus, env, INTERNAL_GRACE_S)
            self._internal.append(_Internal(job_id, gpus))
            missing -= gpus
        self.internal_demand = target

    def _submit_tenant_job(self, sub: Submission) -> str:
        env = {"NEOCLOUD_SIM_LOAD": repr(sub.load)}
        if sub.duration is not None:
            env["DEMO_WORK_S"] = repr(self.wall_s(sub.duration))
        if sub.checkpoint is not None:
            env["DEMO_CHECKPOINT_S"] = repr(self.wall_s(sub.checkpoint))
        per_node = sub.gpus_per_node or min(sub.gpus, 8)
        digest = "" if sub.workdir is None else self._digest(sub.tenant, sub.workdir, sub.at)
        return self._submit(sub.tenant, sub.job_class, sub.gpus, per_node, env, self.wall_s(sub.grace), digest)

    def _submit(
        self, owner: str, job_class: str, gpus: int, per_node: int, env: dict[str, str], grace_s: float,
        digest: str = "",
    ) -> str:  # fmt: skip
        spec = jobs_pb2.JobSpec(
            job_class=CLASSES[job_class],
            gpus=gpus,
            gpus_per_node=per_node,
            # Shipped code runs as the file, relative to the rank's copy of the workdir.
            command=[sys.executable, ENTRY] if digest else [sys.executable, "-c", JOB_SCRIPT],
            env=env,
            grace_s=grace_s,
            contract_id=self.contract_ids.get(owner, "") if job_class == "reserved" else "",
            workdir_digest=digest,
        )
        request = jobs_pb2.SubmitJobRequest(spec=spec, client_request_id=str(uuid.uuid4()))
        job = self._jobs.Submit(request, metadata=self._auth(owner), timeout=CALL_TIMEOUT_S)
        self.jobs.setdefault(owner, []).append(job.job_id)
        if digest:
            self.shipped[job.job_id] = digest
        return str(job.job_id)

    def _digest(self, owner: str, workdir: Path, minute: float) -> str:
        """Upload the tenant's workdir the first time it ships it; the store is content-addressed anyway,
        but a tenant's client need not send the same bytes twice."""
        key = (owner, workdir)
        if key not in self._digests:
            self._digests[key] = self.upload(self._tokens[owner], workdir)
            self._event(minute, f"{owner} uploads its {workdir.name} workdir ({self._digests[key][:19]}…)")
        return self._digests[key]

    # --- plumbing -----------------------------------------------------------------------------------

    def _cancel(self, owner: str, job_id: str) -> None:
        try:
            self._jobs.Cancel(
                jobs_pb2.CancelJobRequest(job_id=job_id), metadata=self._auth(owner), timeout=CALL_TIMEOUT_S
            )
        except grpc.RpcError as e:
            if getattr(e, "code", lambda: None)() is not grpc.StatusCode.FAILED_PRECONDITION:
                raise  # FAILED_PRECONDITION: it has ended already, nothing to cancel

    def _auth(self, owner: str) -> Sequence[tuple[str, str]]:
        return (("authorization", f"Bearer {self._tokens[owner]}"),)

    def _admin_call(self, method: str, request: object) -> Any:
        call = getattr(self._admin, method)
        return call(request, metadata=(("authorization", f"Bearer {self.operator_token}"),), timeout=CALL_TIMEOUT_S)

    def _event(self, minute: float, text: str) -> None:
        self.events.append(f"min {minute:4.1f}  {text}")
        logger.info("demo minute %.1f: %s (wall %.1f s)", minute, text, time.time() - self._t0)
