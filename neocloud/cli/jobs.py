"""`neocloud submit | jobs | job | cancel | logs` (and, through cli/admin.py,
`neocloud admin ...`): the tenant's and operator's command line over gRPC."""

from __future__ import annotations

import argparse
import re
import sys
import uuid

from neocloud.cli import admin as admin_cli
from neocloud.cli import jobspec
from neocloud.cli.common import (
    UsageError,
    command,
    connection_options,
    enum_word,
    fmt_time,
    print_fields,
    print_json,
    print_json_line,
    show,
    show_list,
)
from neocloud.cli.logs import print_logs
from neocloud.client import CALL_TIMEOUT_S, Client
from neocloud.v1 import jobs_pb2 as pb

CLASSES = {
    "internal": pb.JOB_CLASS_INTERNAL,
    "reserved": pb.JOB_CLASS_RESERVED,
    "on_demand": pb.JOB_CLASS_ON_DEMAND,
    "spot": pb.JOB_CLASS_SPOT,
}
STATES = {enum_word(name, "JOB_STATE_"): name for name, value in pb.JobState.items() if value}
_ENV_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")

_SUBMIT_EPILOG = """\
examples:
  neocloud submit --gpus 16 --gpus-per-node 8 --class spot -- python train.py --lr 3e-4
  neocloud submit --gpus 8 --class reserved --contract c-1a2b3c4d5e6f --entrypoint mylab.train:main
The command goes after `--`, so its own options are not read as neocloud's. The job is submitted under
--request-id (a fresh UUID by default): submitting again with the same id and spec returns the same job,
so a retry after a network error never queues a job twice."""

# How `job --watch` and `logs -f` exit once the job has ended (scripts tell outcomes apart by it).
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1  # its program failed, it could not start or it was stopped at --max-runtime (or the call failed)
EXIT_CANCELLED = 3
EXIT_PREEMPTED = 4  # preempted (or its node lost) and not requeued: --no-requeue, or out of requeues
_EXIT_EPILOG = """\
exit status once the job has ended (with --watch, or logs --follow):
  0  succeeded
  1  failed: its program exited non-zero, could not start, ran past --max-runtime
     (also: the call itself failed, e.g. no such job)
  2  usage error (bad options, config file or certificate)
  3  cancelled
  4  preempted (or its node lost) and not requeued
Without --watch/--follow, or while the job still runs, the status is 0."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register submit, jobs, job, cancel, logs and admin on the `neocloud` command."""
    conn = connection_options()
    p = subparsers.add_parser(
        "submit",
        parents=[conn],
        help="submit a job",
        description="Queue a job on the scheduler; prints its id.",
        epilog=_SUBMIT_EPILOG + "\n" + jobspec.SUBMIT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gpus", type=int, default=1, help="GPUs in all (1-4096; default: %(default)s)")
    p.add_argument("--gpus-per-node", type=int, help="GPUs on each node, dividing --gpus (default: --gpus up to 8)")
    p.add_argument("--gpu-model", help="only this GPU model, e.g. 'NVIDIA H200' (default: any)")
    p.add_argument(
        "--class",
        dest="job_class",
        choices=sorted(CLASSES),
        default="on_demand",
        help="capacity class (default: %(default)s)",
    )
    p.add_argument("--grace", type=float, help="seconds between the preemption notice and the kill (default: 30)")
    p.add_argument("--contract", help="the contract a reserved job runs against")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_env_pair,
        help="environment variable for the job (repeatable)",
    )
    p.add_argument("--max-runtime", type=float, metavar="SECONDS", help="stop the job after this long")
    p.add_argument("--no-requeue", action="store_true", help="do not requeue the job when it is preempted")
    p.add_argument("--request-id", help="idempotency key (default: a fresh UUID)")
    p.add_argument("--entrypoint", metavar="PKG.MOD:FUNC", help="run this Python function instead of a command")
    jobspec.add_submit_options(p)
    p.add_argument("cmd", nargs="*", metavar="-- CMD ARGS", help="the command to run")
    p.set_defaults(func=command(_submit))

    p = subparsers.add_parser(
        "jobs",
        parents=[conn],
        help="list jobs",
        description="List jobs, newest first: your own, or (operators) a tenant's or all.",
    )
    p.add_argument("--all", action="store_true", help="every tenant's jobs (operators)")
    p.add_argument("--tenant", help="one tenant's jobs (operators; 'internal' for the lab's own)")
    p.add_argument("--state", action="append", choices=sorted(STATES), help="only jobs in this state (repeatable)")
    p.add_argument("--limit", type=int, default=100, help="at most this many (1-1000; default: %(default)s)")
    jobspec.list_options(p)
    p.set_defaults(func=command(_jobs))

    p = subparsers.add_parser(
        "job",
        parents=[conn],
        help="show one job",
        description="Show a job: its spec, state, allocations and events.",
        epilog=_EXIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument(
        "--watch",
        action="store_true",
        help="then print its events as they happen, until it ends, and exit as it did (--json: one object a line)",
    )
    p.set_defaults(func=command(_job))

    p = subparsers.add_parser(
        "cancel",
        parents=[conn],
        help="cancel a job",
        description="Cancel a job: a queued one at once, a running one is stopped.",
    )
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--array", action="store_true", help="cancel every unfinished task of the job's array")
    p.set_defaults(func=command(_cancel))

    p = subparsers.add_parser(
        "logs",
        parents=[conn],
        help="print a job's output",
        description="Print a job's output (stdout and stderr as the executor keeps it): every rank's,\n"
        "interleaved line by line with a '[rank N] ' prefix, or one rank's as it is with --rank.",
        epilog=_EXIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends, then exit as it did")
    p.add_argument("--rank", type=int, help="only this rank's output, unprefixed (0..ranks-1)")
    p.add_argument(
        "--offset", type=int, default=0, help="skip this many bytes of the rank's output (default: %(default)s)"
    )
    p.set_defaults(func=command(_logs))

    admin_cli.add_parser(subparsers, conn)


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not _ENV_KEY.fullmatch(key):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with KEY in [A-Z_][A-Z0-9_]*")
    return key, value


def _submit(args: argparse.Namespace, client: Client) -> None:
    if bool(args.cmd) == bool(args.entrypoint):
        raise UsageError("give a command after `--` or --entrypoint PKG.MOD:FUNC (one of them)")
    spec = pb.JobSpec(
        job_class=CLASSES[args.job_class],
        gpus=args.gpus,
        gpus_per_node=args.gpus_per_node or 0,
        gpu_model=args.gpu_model or "",
        command=args.cmd,
        entrypoint=args.entrypoint or "",
        env=dict(args.env),
        contract_id=args.contract or "",
    )
    if args.grace is not None:
        spec.grace_s = args.grace
    if args.max_runtime is not None:
        spec.max_runtime_s = args.max_runtime
    if args.no_requeue:
        spec.requeue_on_preempt = False
    jobspec.apply_submit_options(args, spec, client)
    request = pb.SubmitJobRequest(spec=spec, client_request_id=args.request_id or str(uuid.uuid4()))
    job = client.jobs.Submit(request, metadata=client.metadata, timeout=CALL_TIMEOUT_S)
    show(args, job, f"{job.job_id} {_state(job)}")


def _state(job: pb.Job) -> str:
    word = enum_word(pb.JobState.Name(job.state), "JOB_STATE_")
    return word + " (cancel requested)" if job.cancel_requested and not job.HasField("ended_at") else word


def _jobs(args: argparse.Namespace, client: Client) -> None:
    request = pb.ListJobsRequest(
        states=[STATES[s] for s in args.state or ()],
        limit=args.limit,
        tenant=args.tenant or "",
        all_tenants=args.all,
        name=args.name,
        array_job_id=args.array,
    )
    jobs = client.jobs.List(request, metadata=client.metadata, timeout=CALL_TIMEOUT_S).jobs
    show_list(
        args, jobs, ("JOB", "NAME", "TENANT", "CLASS", "GPUS", "STATE", "SUBMITTED", "REQUEUES", "MESSAGE"), _job_row
    )


def _job_row(j: pb.Job) -> tuple[object, ...]:
    job_class = enum_word(pb.JobClass.Name(j.spec.job_class), "JOB_CLASS_")
    return (
        j.job_id,
        jobspec.short_name(j),
        j.tenant,
        job_class,
        j.spec.gpus,
        _state(j),
        fmt_time(j.submitted_at),
        j.requeues,
        j.message[:60],
    )


def exit_status(job: pb.Job) -> int:
    """The exit status that follows an ended job (EXIT_*); 0 for one that has not ended."""
    if job.state == pb.JOB_STATE_CANCELLED:
        return EXIT_CANCELLED
    if job.state != pb.JOB_STATE_FAILED:
        return EXIT_SUCCEEDED
    # The scheduler ends a preempted job it may not requeue as failed, with the notice's
    # time kept and no exit code of its own (scheduler/control/settle.py).
    if job.HasField("preemption_notice_at") and not job.HasField("exit_code"):
        return EXIT_PREEMPTED
    return EXIT_FAILED


def _get(client: Client, job_id: str) -> pb.Job:
    return client.jobs.Get(pb.GetJobRequest(job_id=job_id), metadata=client.metadata, timeout=CALL_TIMEOUT_S)


def _job(args: argparse.Namespace, client: Client) -> int:
    job = _get(client, args.job_id)
    if not args.watch:
        if args.json:
            print_json(job)
        else:
            _print_job(job)
        return 0
    if args.json:
        print_json_line(job)  # JSON Lines: the job, then one event a line
    else:
        _print_job(job)
    for event in client.jobs.Watch(pb.WatchJobRequest(job_id=args.job_id), metadata=client.metadata):
        if args.json:
            print_json_line(event)
        else:
            state = enum_word(pb.JobState.Name(event.state), "JOB_STATE_")
            print(f"{fmt_time(event.at)}  {event.kind:<18} {state:<10} {event.message}", flush=True)
    # The stream ends after the event that finishes the job: its final record says how.
    return exit_status(_get(client, args.job_id))


def _print_job(job: pb.Job) -> None:
    spec = job.spec
    program = " ".join(spec.command) if spec.command else spec.entrypoint
    print_fields(
        [
            ("job", job.job_id),
            ("tenant", job.tenant),
            ("class", enum_word(pb.JobClass.Name(spec.job_class), "JOB_CLASS_")),
            ("state", _state(job)),
            ("gpus", f"{spec.gpus} ({spec.gpus_per_node} per node{', ' + spec.gpu_model if spec.gpu_model else ''})"),
            ("program", program),
            ("env", " ".join(f"{k}={v}" for k, v in sorted(spec.env.items())) or "-"),
            ("contract", spec.contract_id or "-"),
            ("grace", f"{spec.grace_s:g} s"),
            ("max runtime", f"{spec.max_runtime_s:g} s" if spec.HasField("max_runtime_s") else "-"),
            ("requeue", "yes" if spec.requeue_on_preempt else "no"),
            *jobspec.job_fields(job),
            ("request id", job.client_request_id),
            ("submitted", fmt_time(job.submitted_at)),
            ("started", fmt_time(job.started_at) if job.HasField("started_at") else "-"),
            ("ended", fmt_time(job.ended_at) if job.HasField("ended_at") else "-"),
            ("requeues", job.requeues),
            ("exit code", job.exit_code if job.HasField("exit_code") else "-"),
            ("message", job.message or "-"),
        ]
    )
    for a in job.allocations:
        print(f"  on {a.node_id}: {', '.join(a.gpu_uuids)} since {fmt_time(a.start)}")
        if a.sandbox:
            print(f"    sandbox: {a.sandbox}")


def _cancel(args: argparse.Namespace, client: Client) -> None:
    job = client.jobs.Cancel(
        pb.CancelJobRequest(job_id=args.job_id, array=args.array), metadata=client.metadata, timeout=CALL_TIMEOUT_S
    )
    show(args, job, f"{job.job_id} {_state(job)}")


def _logs(args: argparse.Namespace, client: Client) -> int:
    sys.stdout.flush()
    print_logs(client, _get(client, args.job_id), args.rank, args.offset, args.follow, sys.stdout.buffer)
    return exit_status(_get(client, args.job_id)) if args.follow else 0
