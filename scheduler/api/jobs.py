"""neocloud.v1.JobService: thin handlers over the JobStore.

Each handler authenticates, converts the request, checks what the caller's
role allows, and calls the store on a worker thread (SQLite commits wait on
the disk; the event loop must not). Submits are committed in groups (see
GroupSubmitter). Errors are raised, never caught here: scheduler/api/errors.py
maps them to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from neocloud.domain.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from neocloud.scheduler.api import convert
from neocloud.scheduler.api.admission import Admission
from neocloud.scheduler.api.auth import Authenticator, own_tenant, visible
from neocloud.scheduler.api.logs import LogSource
from neocloud.scheduler.artifacts import ArtifactStore, parse_digest
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store import validate
from neocloud.scheduler.store.jobs import MAX_LIST, JobStore
from neocloud.scheduler.store.records import Job, JobSpec, Principal, Role
from neocloud.v1 import jobs_pb2 as pb
from neocloud.v1 import jobs_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

DEFAULT_LIST = 100
LOG_CHUNK_BYTES = 256 * 1024
_MAX_REQUEST_ID = 128
MAX_GROUP = 256


class GroupSubmitter:
    """Group commit for Submit. The first call starts a group at once; calls that arrive while a group
    commits wait, and go together into the next one: one transaction and one fsync for all of them
    (JobStore.submit_many), so admissions per second grow with the load instead of stopping at the
    disk's fsyncs per second. A call returns only once its group has committed, with its own outcome:
    its job, or the error that refused it alone; if the group's transaction fails, every call in it
    fails (an internal error, with the cause in the log) and none of the group is written."""

    def __init__(self, store: JobStore, max_group: int = MAX_GROUP) -> None:
        self._store = store
        self._max_group = max_group
        self._waiting: list[tuple[JobSpec, float, asyncio.Future[Job]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def submit(self, spec: JobSpec, now: float) -> Job:
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiting.append((spec, now, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_groups(), name="neocloud-submit-groups")
        return await future

    async def _commit_groups(self) -> None:
        group: list[tuple[JobSpec, float, asyncio.Future[Job]]] = []
        try:
            while self._waiting:
                group = [w for w in self._waiting[: self._max_group] if not w[2].done()]  # done: caller gone
                del self._waiting[: self._max_group]
                if not group:
                    continue
                try:
                    outcomes = await asyncio.to_thread(self._store.submit_many, [(s, now) for s, now, _ in group])
                except Exception as e:  # noqa: BLE001 - the group failed: each of its callers hears why
                    logger.warning("a group of %d submits failed, none of them written: %r", len(group), e)
                    outcomes = [_group_failed(e, len(group)) for _ in group]
                for (_, _, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():  # the caller went away during the commit; its job stands
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                group = []
        finally:
            self._committer = None
            for _, _, future in group + self._waiting:  # only when cancelled: nobody is left hanging
                future.cancel()
            self._waiting.clear()


def _group_failed(cause: Exception, size: int) -> Exception:
    """One error per caller (an exception raised in many places would pile up their tracebacks)."""
    error = RuntimeError(f"the group commit of {size} submit(s) failed; none of them was written")
    error.__cause__ = cause
    return error


class JobService(pb_grpc.JobServiceServicer):
    def __init__(
        self,
        store: JobStore,
        logs: LogSource,
        poll_interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        fleet: Fleet | None = None,
        artifacts: ArtifactStore | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        """`poll_interval_s`: how often Watch and Logs look for news while a job runs; `fleet`: the
        inventory a Submit is checked against (admission.py; None: nothing is refused for its size);
        `artifacts`: the workdirs a job may name (None: a job naming one is refused)."""
        self._store = store
        self._logs = logs
        self._auth = auth or Authenticator(store)
        self._submits = GroupSubmitter(store)
        self._poll_s = poll_interval_s
        self._clock = clock
        self._admission = Admission(fleet)
        self._artifacts = artifacts

    async def _job(self, principal: Principal, job_id: str) -> Job:
        job = await asyncio.to_thread(self._store.get, convert.job_id(job_id))
        return visible(principal, job)

    async def Submit(self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:  # noqa: N802
        principal = await self._auth.principal(context)
        if len(request.client_request_id) > _MAX_REQUEST_ID:
            raise InvalidArgumentError(f"client_request_id is longer than {_MAX_REQUEST_ID} characters")
        tenant = own_tenant(principal)
        if tenant is None:
            raise PermissionDeniedError("operators do not submit jobs: use a tenant or internal token")
        spec = convert.spec(request.spec, tenant, request.client_request_id)
        if principal.role is Role.INTERNAL and spec.job_class is not JobClass.INTERNAL:
            raise PermissionDeniedError("internal tokens submit class internal only")
        # An internal team's token submits class internal (the store refuses its other classes).
        if (
            principal.role is Role.TENANT
            and spec.job_class is JobClass.INTERNAL
            and not await asyncio.to_thread(self._store.internal_team, tenant)
        ):
            raise PermissionDeniedError("class internal is for the lab's own teams: submit reserved, on_demand or spot")
        self._admission.check(spec)  # FAILED_PRECONDITION for a job that can never fit the fleet
        if spec.workdir_digest:
            await self._check_workdir(tenant, spec.workdir_digest)
        job = await self._submits.submit(spec, self._clock())
        return convert.job_to_proto(job)

    async def _check_workdir(self, tenant: str, digest: str) -> None:
        """Only the tenant's own uploads: another tenant's digest, or one released after its retention,
        is NOT_FOUND, as one never uploaded. Naming it counts as a use (its retention starts again)."""
        parse_digest(digest)  # INVALID_ARGUMENT for what is not a digest
        if self._artifacts is None or not await asyncio.to_thread(self._artifacts.use, tenant, digest):
            raise NotFoundError(f"workdir {digest} not found: upload it first (neocloud submit --workdir DIR)")

    async def Get(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:  # noqa: N802
        principal = await self._auth.principal(context)
        job = await self._job(principal, request.job_id)
        allocations = await asyncio.to_thread(self._store.allocations, job.job_id, True)
        return convert.job_to_proto(job, allocations)

    async def List(  # noqa: N802
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        principal = await self._auth.principal(context)
        own = own_tenant(principal)
        if principal.role is Role.OPERATOR:
            if request.all_tenants == bool(request.tenant):
                raise InvalidArgumentError(
                    "tenant: an operator lists one tenant's jobs (tenant; neocloud jobs --tenant T) or every "
                    "tenant's (all_tenants; neocloud jobs --all), one of the two"
                )
            tenant = None if request.all_tenants else request.tenant
        elif request.all_tenants or request.tenant not in ("", own):
            raise PermissionDeniedError("only operators list other tenants' jobs")
        else:
            tenant = own
        if request.limit > MAX_LIST:
            raise InvalidArgumentError(f"limit must be at most {MAX_LIST}, not {request.limit}")
        states = [convert.job_state(s) for s in request.states]
        jobs = await asyncio.to_thread(
            self._store.list_jobs,
            tenant,
            states,
            request.limit or DEFAULT_LIST,
            validate.job_name(request.name),
            request.array_job_id and convert.job_id(request.array_job_id),
        )
        return pb.ListJobsResponse(jobs=[convert.job_to_proto(j) for j in jobs])

    async def Cancel(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:  # noqa: N802
        principal = await self._auth.principal(context)
        job = await self._job(principal, request.job_id)
        job = await asyncio.to_thread(self._store.request_cancel, job.job_id, self._clock(), request.array)
        what = f"array {job.array_job_id}" if request.array and job.array_job_id else f"job {job.job_id}"
        logger.info("%s: cancel requested by %s", what, principal.token_name)
        return convert.job_to_proto(job)

    async def Watch(  # noqa: N802
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobEvent]:
        principal = await self._auth.principal(context)
        job = await self._job(principal, request.job_id)
        after = request.after_event_id
        while True:
            # The state first: if the job had ended by then, the events read next include its last one.
            ended = (await asyncio.to_thread(self._store.get, job.job_id)).state.terminal
            events = await asyncio.to_thread(self._store.events_since, job.job_id, after)
            for event in events:
                yield convert.event_to_proto(event)
                after = event.event_id
                if event.state.terminal and event.kind == event.state.value:
                    return
            if not events:
                if ended:
                    return  # the finishing event was at or before after_event_id
                await asyncio.sleep(self._poll_s)
                await self._auth.principal(context)  # a token revoked or expired meanwhile ends the stream

    async def Logs(  # noqa: N802
        self, request: pb.JobLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LogChunk]:
        principal = await self._auth.principal(context)
        job = await self._job(principal, request.job_id)
        if request.offset < 0:
            raise InvalidArgumentError(f"offset must not be negative, not {request.offset}")
        rank = request.rank if request.HasField("rank") else 0
        ranks = job.spec.gpus // job.spec.gpus_per_node  # one rank per node of the gang
        if not 0 <= rank < ranks:
            raise InvalidArgumentError(f"rank must be 0..{ranks - 1} (job {job.job_id} has {ranks}), not {rank}")
        offset = request.offset
        ended = False  # seen the job finished, then read once more
        while True:
            data, eof = await asyncio.to_thread(self._logs.read, job.job_id, offset, rank)
            for start in range(0, len(data), LOG_CHUNK_BYTES):
                piece = data[start : start + LOG_CHUNK_BYTES]
                yield pb.LogChunk(offset=offset, data=piece)
                offset += len(piece)
            if eof:
                yield pb.LogChunk(offset=offset, eof=True)
                return
            if data:
                continue
            if not request.follow or ended:
                return
            job = await asyncio.to_thread(self._store.get, job.job_id)
            ended = job.state.terminal
            if not ended:
                await asyncio.sleep(self._poll_s)
                await self._auth.principal(context)  # a token revoked or expired meanwhile ends the stream
