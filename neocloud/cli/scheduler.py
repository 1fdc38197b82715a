"""`neocloud scheduler`: the control plane's options. The daemon (`neocloud.scheduler.server`:
grpcio-health-checking, prometheus-client, and Ray where jobs run) is imported only when it runs,
so `--help` works without the scheduler extra."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from neocloud.cli.metrics_options import add_scheduler_metrics_options, scheduler_metrics_settings
from neocloud.cli.options import (
    add_api_options,
    add_metrics_options,
    add_mtls_options,
    api_settings,
    metrics_settings,
    mtls_settings,
)

if TYPE_CHECKING:
    from neocloud.scheduler.executor.types import Executor
    from neocloud.scheduler.server import SchedulerConfig

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scheduler",
        help="run the scheduler: telemetry ingest, job and admin API, the policy, jobs on Ray",
        description="Run the control plane: accept node agents' telemetry streams over mTLS, keep the fleet's "
        "live state, jobs and allocations in SQLite, serve the job and admin API (bearer tokens; the first "
        "start writes an operator token beside the store), place and preempt jobs by policy and run them on "
        "Ray, and serve Prometheus metrics and gRPC health checks. Needs the scheduler extra: "
        "pip install 'neocloud[scheduler]'.",
    )
    p.add_argument("--listen", default="0.0.0.0:7443", help="gRPC address (default: %(default)s)")
    p.add_argument(
        "--db",
        default="/var/lib/neocloud/scheduler.db",
        help="SQLite store; it must exist unless --init is given (default: %(default)s)",
    )
    init = p.add_mutually_exclusive_group()
    init.add_argument(
        "--init",
        action="store_true",
        help="create the store if --db does not exist (a new, empty site with a new operator token); "
        "on an existing store it does nothing more than a plain start",
    )
    init.add_argument(
        "--init-only",
        action="store_true",
        help="create the store and the first operator token if --db does not exist, then exit (for a first "
        "start under systemd or in an init container)",
    )
    p.add_argument(
        "--commit-interval",
        type=float,
        default=0.1,
        help="seconds between durable commits; acks follow them (default: %(default)s)",
    )
    p.add_argument(
        "--ray-address",
        default="embedded",
        help="Ray cluster to run jobs on: an address (e.g. auto, ray://head:10001), 'embedded' for a head on this "
        "host, or 'none' for telemetry and the API only (default: %(default)s). The embedded head is a process of "
        "its own (`ray start --head --block`, Ray's files in the store's directory under ray/, its address in "
        "DB.ray-head, its log in DB.ray-head.log, Ray's auth token in DB.ray-token): it outlives a scheduler "
        "restart, and its jobs with it; stop it with --stop-ray-head. GPU nodes join with `ray start --address HEAD "
        "--labels neocloud.io/node-id=NODE_ID` (for the embedded head with RAY_AUTH_MODE=token and "
        "RAY_AUTH_TOKEN_PATH naming a copy of DB.ray-token in their environment).",
    )
    p.add_argument(
        "--ray-head-port",
        type=int,
        default=6379,
        help="the embedded Ray head's port, which GPU nodes join (default: %(default)s)",
    )
    p.add_argument(
        "--allow-unsandboxed-tenants",
        action="store_true",
        help="let tenant jobs run on nodes that cannot sandbox their ranks (no bubblewrap, no uid switch or no "
        "cgroups; each rank's record says so): for a laptop demo only. Logged at start and exported as "
        "neocloud_scheduler_unsandboxed_tenants_allowed 1",
    )
    p.add_argument(
        "--stop-ray-head",
        action="store_true",
        help="stop the embedded Ray head of --db, and every job still running on it, then exit",
    )
    p.add_argument(
        "--rate-card",
        help="rate card YAML (see deploy/config/ratecard.example.yaml): exports what each tenant is billed so far "
        "this month as neocloud_tenant_billed_amount",
    )
    add_metrics_options(p, port=9401)
    add_scheduler_metrics_options(p)
    add_mtls_options(
        p, ca="the nodes' certificates", own="the scheduler's", insecure="on a loopback address (--listen)"
    )
    add_api_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.stop_ray_head:
        from neocloud.scheduler.executor.embedded_head import stop_head

        if not stop_head(args.db):
            logger.warning("no embedded Ray head of %s is running", args.db)
        return 0
    from neocloud.domain.errors import NeocloudError
    from neocloud.scheduler.billing.ratecard import load_ratecard
    from neocloud.scheduler.server import SchedulerConfig
    from neocloud.scheduler.store.db import StoreError, open_db

    db_path = Path(args.db).absolute()
    if (args.init or args.init_only) and db_path.exists():
        logger.info("the store at %s exists: --init has nothing to create", db_path)
    config = SchedulerConfig(
        listen=args.listen,
        db_path=args.db,
        **metrics_settings(args),
        **scheduler_metrics_settings(args),
        **mtls_settings(args),
        **api_settings(args),
        commit_interval_s=args.commit_interval,
        rate_card_path=args.rate_card,
        init=args.init,
        allow_unsandboxed_tenants=args.allow_unsandboxed_tenants,
    )
    try:
        if args.init_only:
            return _init_only(config.db_path)
        open_db(config.db_path, create=config.init).close()  # a store it cannot use stops it before Ray starts
        if config.rate_card_path:
            load_ratecard(config.rate_card_path)  # and so does a rate card with an error in it
    except (StoreError, NeocloudError) as e:
        logger.error("scheduler cannot start: %s", e)
        return 2
    executor = None
    if args.ray_address != "none":
        from neocloud.scheduler.executor.embedded_head import EmbeddedHeadError, ensure_head

        address = args.ray_address
        if address == "embedded":
            try:
                address = ensure_head(args.db, args.ray_head_port)  # before Ray is imported: it sets Ray's auth
            except EmbeddedHeadError as e:
                logger.error("scheduler cannot start the embedded Ray head: %s", e)
                return 2
        from neocloud.scheduler.artifacts import read_bytes, root_beside
        from neocloud.scheduler.executor.ray_executor import RayExecutor  # Ray only where jobs run

        log_dir = Path(args.db).with_name("job-logs")
        workdirs = functools.partial(read_bytes, root_beside(args.db))  # where the API stores them
        try:
            executor = RayExecutor(
                address=address,
                log_dir=log_dir,
                allow_unsandboxed_tenants=args.allow_unsandboxed_tenants,
                read_workdir=workdirs,
            )
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the operator needs the message
            logger.error("scheduler cannot reach Ray at %s: %s", args.ray_address, e)
            return 2
    try:
        return asyncio.run(_serve(config, executor))
    finally:
        if executor is not None:
            executor.shutdown()


def _init_only(db_path: str) -> int:
    from neocloud.scheduler.server import write_bootstrap_token
    from neocloud.scheduler.store import JobStore, open_db

    store = JobStore(open_db(db_path, create=True))
    try:
        token_file = write_bootstrap_token(store, db_path)
    finally:
        store.close()
    where = Path(db_path).absolute()
    print(f"store ready at {where}" + (f"; operator token in {token_file}" if token_file else ""))
    return 0


async def _serve(config: SchedulerConfig, executor: Executor | None) -> int:
    from neocloud.scheduler.server import Scheduler
    from neocloud.scheduler.store.db import StoreError
    from neocloud.wire.tls import TlsConfigError

    try:
        scheduler = Scheduler(config, executor)
        await scheduler.start()
    except (StoreError, ValueError, OSError, TlsConfigError) as e:
        logger.error("scheduler cannot start: %s", e)
        return 2
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    logger.info("stopping scheduler")
    await scheduler.stop()
    return 0
