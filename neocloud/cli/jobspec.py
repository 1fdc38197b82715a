"""The submit options for a job's name, CPU and memory requests, dependencies,
array and workdir (`neocloud submit --name --cpus --memory --after-ok --array
--workdir`), and how `neocloud job` and `neocloud jobs` show them. The server
checks every bound; this module only turns words into fields (and uploads the
workdir, whose digest is the field)."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from neocloud.cli.common import UsageError
from neocloud.client import Client
from neocloud.domain.errors import InvalidArgumentError
from neocloud.v1 import jobs_pb2 as pb

logger = logging.getLogger(__name__)

# Binary like Slurm's --mem (16G is 16 GiB); "GB" and friends are decimal.
_UNITS = {
    "": 1, "b": 1,
    "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30, "t": 2**40, "tib": 2**40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}  # fmt: skip
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
UPLOAD_TIMEOUT_S = 3600.0  # a 1 GiB workdir over a slow link

SUBMIT_EXAMPLES = """\
  neocloud submit --name sweep --array 0-99 --cpus 8 --memory 64GiB -- python eval.py
  neocloud submit --after-ok j-1a2b3c4d5e6f --name report -- python report.py
  neocloud submit --workdir ./train --gpus 16 -- python run.py --data data/shard-0
Each task of an array is a job of its own, with NEOCLOUD_ARRAY_JOB_ID (the array's id, its first
task's) and NEOCLOUD_ARRAY_TASK_ID (its index) in its environment; `neocloud jobs --array ID` lists
them, `neocloud cancel --array ID` cancels them all. A job --after-ok other jobs (your own) waits,
queued, until each has succeeded, and is cancelled if one fails or is cancelled; --after-ok with an
array's id waits for every task of the array. --workdir DIR packs DIR (minus what its
.neocloudignore names, in .gitignore syntax), uploads it once per content, and each rank runs in
its own copy: relative paths in the command resolve there."""


def memory_bytes(text: str) -> int:
    """The bytes of "16GiB", "16G" (GiB, as Slurm's --mem), "500MB", "1TiB" or a plain number."""
    match = _MEMORY.fullmatch(text.strip())
    unit = match[2].lower() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of memory such as 16GiB, 512MiB or 1TiB")
    value = int(float(match[1]) * _UNITS[unit])
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is more memory than any node has (the limit is 16TiB)")
    return value


def cpu_count(text: str) -> int:
    """A whole number of CPU cores; the server holds the upper bound."""
    if not text.isdigit() or len(text) > 9:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of CPU cores (0-1024)")
    return int(text)


def add_submit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="", help="a name for the job, shown in `jobs` (letters, digits, . _ -)")
    p.add_argument(
        "--cpus", type=cpu_count, default=0, help="CPU cores on each node of the job (0-1024; default: none)"
    )
    p.add_argument(
        "--memory", type=memory_bytes, default=0, metavar="SIZE", help="memory on each node, e.g. 64GiB (up to 16TiB)"
    )
    p.add_argument(
        "--after-ok",
        action="append",
        default=[],
        metavar="JOB_ID",
        help="start only after this job (an array's id: all its tasks) succeeded; cancelled if it fails (repeatable)",
    )
    p.add_argument("--array", default="", metavar="INDICES", help="one job per index: 0-99, 0-15:4, 1,3,5 (<= 10,000)")
    p.add_argument(
        "--workdir", metavar="DIR", help="upload DIR; each rank runs in a copy of it (honours .neocloudignore)"
    )
    p.add_argument(
        "--ray",
        action="store_true",
        help="the program uses Ray: a private Ray spans the job's ranks and the command runs once, on rank 0, "
        "as its driver (ray.init() finds it)",
    )


def apply_submit_options(args: argparse.Namespace, spec: pb.JobSpec, client: Client) -> None:
    spec.name = args.name
    spec.cpus = args.cpus
    spec.memory_bytes = args.memory
    spec.after_ok.extend(args.after_ok)
    spec.array = args.array
    spec.ray = args.ray
    if args.workdir:
        spec.workdir_digest = upload_workdir(client, Path(args.workdir))


def upload_workdir(client: Client, directory: Path) -> str:
    """Pack and upload `directory`; its digest. What cannot be packed is a usage error."""
    if not directory.is_dir():
        raise UsageError(f"--workdir {directory}: not a directory")
    try:
        artifact = client.upload_workdir(directory, timeout=UPLOAD_TIMEOUT_S)
    except InvalidArgumentError as e:
        raise UsageError(f"--workdir {directory}: {e}") from e
    print(
        f"workdir {directory}: {artifact.digest} ({fmt_bytes(artifact.size)}, {artifact.files} files)", file=sys.stderr
    )
    return artifact.digest


def fmt_bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def job_fields(job: pb.Job) -> list[tuple[str, object]]:
    """The lines `neocloud job` shows for these options."""
    spec = job.spec
    array = f"{job.array_job_id} task {job.array_task_id} (of {spec.array})" if job.array_job_id else "-"
    return [
        ("name", spec.name or "-"),
        ("cpus", f"{spec.cpus} per node" if spec.cpus else "-"),
        ("memory", f"{fmt_bytes(spec.memory_bytes)} per node" if spec.memory_bytes else "-"),
        ("after ok", " ".join(spec.after_ok) or "-"),
        ("array", array),
        ("workdir", spec.workdir_digest or "-"),
        ("ray", "private, rank 0 is the driver" if spec.ray else "-"),
    ]


def list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="", help="only jobs of this name")
    p.add_argument("--array", default="", metavar="ARRAY_ID", help="only the tasks of this array, in index order")


def short_name(job: pb.Job) -> str:
    """The NAME column of `neocloud jobs`: the name, and an array task's index."""
    name = job.spec.name or "-"
    return f"{name}[{job.array_task_id}]" if job.array_job_id else name
