"""TelemetryService.commit() as a barrier: when it returns, everything applied
before the call is in the store, even what a commit already under way took."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from neocloud.scheduler.ingest import service
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.metering.book import AllocationBook
from neocloud.scheduler.store import telemetry
from neocloud.scheduler.store.db import open_db
from tests.unit.test_ledger import HOUR, batch, open_site


def test_a_commit_waits_for_the_one_under_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, db, fleet = open_site(tmp_path / "scheduler.db")
    fleet.attributor.book = AllocationBook()  # all idle, final: every delta is attributed at the snapshot
    fleet.apply_batch(fleet.nodes["node-1"], batch(1, HOUR, 60), round((HOUR + 60) * 1e6))
    writing, release, written = threading.Event(), threading.Event(), threading.Event()
    write = telemetry.write

    def slow_write(conn: sqlite3.Connection, snap: telemetry.Snapshot) -> None:
        writing.set()
        release.wait(10)  # the periodic commit's write, still on the store thread
        write(conn, snap)
        written.set()

    monkeypatch.setattr(service.store, "write", slow_write)
    svc = TelemetryService(fleet, db, require_peer_identity=False)
    done_after_write: list[bool] = []

    async def scenario() -> None:
        periodic = asyncio.create_task(svc.commit())  # takes the energy just attributed
        await asyncio.get_running_loop().run_in_executor(None, writing.wait, 10)
        explicit = asyncio.create_task(svc.commit())  # nothing left to take: returned at once
        explicit.add_done_callback(lambda _: done_after_write.append(written.is_set()))
        for _ in range(5):
            await asyncio.sleep(0)  # whatever the explicit commit does without waiting, it has done
        release.set()
        await asyncio.gather(periodic, explicit)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        svc.close()
    assert done_after_write == [True]
    with closing(open_db(tmp_path / "scheduler.db")) as check:
        (stored,) = check.execute("SELECT SUM(attributed_total_mj) FROM meter_watermarks").fetchone()
    assert stored == pytest.approx(2 * 500 * 60 * 1000)  # two GPUs, 500 W, 60 s
