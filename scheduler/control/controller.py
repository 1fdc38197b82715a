"""The control loop: executor events -> store, then one policy pass -> store and
executor. The store is the truth; the executor is told what the store says.

Each step:
1. GPUs whose last job was released and whose node's NVML shows none of its
   processes any more become placeable again (Ray's cancel leaves processes
   behind, ray-project/ray#23638; we do not hand such GPUs on);
2. executor events are applied: starts, exits (succeeded / failed / preempted
   -> requeued or failed / cancelled / lost -> requeued), checkpoints, releases;
3. cancellations the API recorded are carried out;
4. the policy decides on (inventory, health, power, contracts, running, queue,
   usage); preemptions are noted in the store, then signalled; placements are
   recorded in the store, then started.

Steps 1-3 are reconcile.py, the decision policy_pass.py, carrying it out enact.py;
what the pass leaves for metering and the exporter, publish.py. Every multi-step
action is written as an intent first (store/intents.py); repair.py finishes or
rolls back what a crash cut short, at start, and removes orphans from Ray every
so often.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from neocloud.scheduler.control.enact import Enactor
from neocloud.scheduler.control.policy_pass import decide, placeable, policy_input
from neocloud.scheduler.control.publish import BookPublisher, ControllerView, ShortfallRecorder, view_of
from neocloud.scheduler.control.reconcile import Reconciler
from neocloud.scheduler.control.repair import Repairer
from neocloud.scheduler.control.state import Cleanup, ControllerStats, ControlState
from neocloud.scheduler.executor.types import Executor
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.liveness import NO_RESTART, Heartbeat, Liveness, last_sign_of_life
from neocloud.scheduler.metering.shortfall import undelivered_gpus
from neocloud.scheduler.policy.types import Decision
from neocloud.scheduler.store.intents import IntentStore
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.shortfalls import ShortfallStore

logger = logging.getLogger(__name__)

__all__ = ["Controller", "ControllerStats", "ControllerView"]


class Controller:
    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        executor: Executor,
        clock: Callable[[], float] = time.time,
        interval_s: float = 0.5,
        shortfalls: ShortfallStore | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.executor = executor
        self.clock = clock
        self.interval_s = interval_s
        self.stats = ControllerStats()
        self.heartbeat = heartbeat
        self.liveness = NO_RESTART  # until recover() sets the restart's grace
        self.view = ControllerView()
        self._state = ControlState(store, IntentStore.beside(store))
        self.cleanups: dict[str, Cleanup] = self._state.cleanups  # the same dict, for the exporter and demo
        self._reconciler = Reconciler(store, fleet, executor, self._state, self.stats, clock)
        self._enactor = Enactor(store, executor, self._state, self.stats)
        self._repairer = Repairer(store, executor, self._state, self.stats, clock)
        self._book = BookPublisher(store, fleet)
        self._shortfalls = ShortfallRecorder(shortfalls)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="neocloud-controller")

    @property
    def pending(self) -> dict[str, str]:
        """Job id -> why it waits (from the last pass)."""
        return self._enactor.pending

    @property
    def warned(self) -> dict[str, str]:
        """Job id -> reclaim warning (from the last pass)."""
        return self._enactor.warned

    @property
    def shortfalls(self) -> ShortfallStore | None:
        return self._shortfalls.shortfalls

    @shortfalls.setter
    def shortfalls(self, shortfalls: ShortfallStore | None) -> None:
        self._shortfalls.shortfalls = shortfalls

    def recover(self) -> None:
        """After a restart: re-attach to the jobs still running on Ray; the ones
        gone while we were down are requeued; nodes get a grace to reconnect."""
        now = self.clock()
        last_alive = last_sign_of_life(self.heartbeat, list(self.fleet.nodes.values()))
        self.liveness = Liveness.after_restart(last_alive, now)
        self._repairer.at_start()  # first: a half-done start must not be re-attached
        self._reconciler.recover(self.liveness.stopped_by(now))

    async def run(self) -> None:
        """Step forever; each step runs on the controller's own thread (store and
        executor calls block). Telemetry is read there too, through copies that
        the GIL makes atomic (sorted(), list()), never by iterating live dicts."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self.recover)
        while True:
            try:
                await loop.run_in_executor(self._thread, self.step)
            except Exception:
                # A failing pass must not end the scheduler: log it, try again.
                self.stats.step_errors += 1
                logger.exception("controller step failed")
            await asyncio.sleep(self.interval_s)

    def step(self) -> Decision:
        started = time.monotonic()
        now = self.clock()
        if self.heartbeat is not None:
            self.heartbeat.beat(now)
        self._reconciler.free_cleaned_gpus()
        self._repairer.periodic()
        self._reconciler.apply_events()
        running = self.store.running()
        self._reconciler.carry_out_cancellations(running)
        self._reconciler.observe_nodes(now)
        views = placeable(self.fleet, self._state, now, running, self.liveness)
        logger.debug("placeable GPUs: %s", {v.node_id: len(v.placeable) for v in views})
        inp = policy_input(self.store, self._state, now, views, running, self._enactor.rooms)
        decision = decide(inp)
        self._enactor.enact(decision, now, views)
        self._book.publish(now)
        missing = undelivered_gpus(inp.contracts, inp.nodes, inp.running, now)
        self._shortfalls.record(inp, missing, now)
        self.view = view_of(inp, missing)
        self.stats.steps += 1
        self.stats.step_seconds.observe(time.monotonic() - started)
        return decision

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self.shortfalls is not None:
            self.shortfalls.close()
