"""Which allocation held each GPU when: what ingest attributes energy by.

The controller publishes a new book after each pass, built from the store; a
book is immutable, so ingest (on the event loop) reads it while the next one is
built on the controller's thread. `complete_to` is the time up to which the
book is known to be final: energy after it waits, so a job that starts or ends
a moment before the controller records it is not billed to the wrong owner.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from neocloud.scheduler.store.records import Allocation

IDLE_OWNER = ""


@dataclass(frozen=True, slots=True)
class Held:
    start: float
    end: float  # math.inf while open
    allocation_id: str


class AllocationBook:
    __slots__ = ("_by_gpu", "_starts", "complete_to")

    def __init__(self, allocations: Iterable[Allocation] = (), complete_to: float = math.inf) -> None:
        by_gpu: dict[str, list[Held]] = defaultdict(list)
        for a in allocations:
            end = math.inf if a.end is None else a.end
            if end > a.start:
                for uuid in a.gpu_uuids:
                    by_gpu[uuid].append(Held(a.start, end, a.allocation_id))
        for held in by_gpu.values():
            held.sort(key=lambda h: h.start)
        self._by_gpu = dict(by_gpu)
        self._starts = {uuid: [h.start for h in held] for uuid, held in self._by_gpu.items()}
        self.complete_to = complete_to

    def final_to(self, complete_to: float) -> AllocationBook:
        """The same allocations, known final up to `complete_to` (shares this book's indexes)."""
        book = AllocationBook.__new__(AllocationBook)
        book._by_gpu, book._starts, book.complete_to = self._by_gpu, self._starts, complete_to
        return book

    def owner(self, uuid: str, t0: float, t1: float) -> str | None:
        """The one owner of the GPU over all of [t0, t1] (IDLE_OWNER if none), or
        None when the span crosses an allocation boundary."""
        held = self._by_gpu.get(uuid)
        if not held:
            return IDLE_OWNER
        k = bisect.bisect_right(self._starts[uuid], t0) - 1
        if k >= 0 and held[k].end > t0:  # t0 inside held[k]
            return held[k].allocation_id if held[k].end >= t1 else None
        nxt = held[k + 1].start if k + 1 < len(held) else math.inf
        return IDLE_OWNER if nxt >= t1 else None

    def boundaries(self, uuid: str, t0: float, t1: float) -> list[float]:
        """Allocation starts and ends strictly inside (t0, t1)."""
        return sorted({t for h in self._by_gpu.get(uuid, ()) for t in (h.start, h.end) if t0 < t < t1})

    def owner_at(self, uuid: str, t: float) -> str:
        held = self._by_gpu.get(uuid)
        if not held:
            return IDLE_OWNER
        k = bisect.bisect_right(self._starts[uuid], t) - 1
        return held[k].allocation_id if k >= 0 and held[k].end > t else IDLE_OWNER

    def holding(self, uuid: str, t: float) -> tuple[str, float, float]:
        """Who holds the GPU at t, and the interval [from, to) over which that stays so."""
        held = self._by_gpu.get(uuid)
        if not held:
            return IDLE_OWNER, -math.inf, math.inf
        k = bisect.bisect_right(self._starts[uuid], t) - 1
        if k >= 0 and held[k].end > t:
            return held[k].allocation_id, held[k].start, held[k].end
        after = held[k + 1].start if k + 1 < len(held) else math.inf
        return IDLE_OWNER, held[k].end if k >= 0 else -math.inf, after
