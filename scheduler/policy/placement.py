"""Gang placement over per-pass node indexes.

Nodes with free placeable GPUs sit in pools keyed by (GPU model, owner,
reservation): `owner` is the isolation owner of the work already on the node
(None: empty; always None when isolation is off) and `reservation` the
contract whose unused GPUs the node is carved out for (None: general
capacity). Inside a pool nodes are bucketed by free count, so a gang of n
slices of g GPUs is found by looking at a handful of bucket counters, never by
scanning nodes:

- a job sees its own pools in preference order (its own nodes, then empty
  ones; a contract holder its carve-out first; spot may also borrow carve-outs);
- best fit: within a pool, the nodes whose free count is the smallest that
  fits come first, so an 8-per-node gang takes whole free nodes and small jobs
  fill partly used nodes instead of breaking whole ones;
- all or nothing: the counters are checked before any node is taken.

Nodes carved out for a contract (carveouts.py) are pooled under it: only the
holder and spot see them.

A node that cannot sandbox tenant ranks (NodeView.sandboxed false) is pooled
under its model with the UNSANDBOXED prefix, pools only internal work sees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import filterfalse

from neocloud.scheduler.policy.carveouts import carve
from neocloud.scheduler.policy.contracts import ContractBook
from neocloud.scheduler.policy.fleet import FleetState, may_run_on
from neocloud.scheduler.policy.types import NodeView, PolicyInput

logger = logging.getLogger(__name__)

PoolKey = tuple[str, str | None, str | None]  # (model, owner, reservation)
UNSANDBOXED = "unsandboxed:"  # pool-model prefix of the nodes only internal work may use


class Pool:
    """Nodes of one (model, owner, reservation) with free GPUs, bucketed by free count.

    `stacks[c]` may hold stale entries for nodes claimed since they were
    pushed; `cnt[c]` and `gpus` are exact.
    """

    __slots__ = ("carved", "cnt", "gpus", "key", "stacks")

    def __init__(self, key: PoolKey, size: int) -> None:
        self.key = key
        self.carved = key[2] is not None  # carved out for a contract
        self.stacks: list[list[int]] = [[] for _ in range(size + 1)]
        self.cnt = [0] * (size + 1)
        self.gpus = 0


class Placer:
    """Free capacity of one pass: pools, carve-outs, claims, and gang placement."""

    def __init__(self, inp: PolicyInput, fleet: FleetState, book: ContractBook) -> None:
        self.nodes: tuple[NodeView, ...] = inp.nodes
        self.iso = inp.config.one_tenant_per_node
        self.fleet = fleet
        self.free = fleet.free
        self.owner = fleet.owner
        self.size = fleet.max_size
        self.unsandboxed = not all(n.sandboxed for n in self.nodes)
        self.model = [n.gpu_model if n.sandboxed else UNSANDBOXED + n.gpu_model for n in self.nodes]
        self.pools: dict[PoolKey, Pool] = {}
        cut = carve(fleet, book, inp.config.reclaim_warning_s, self.iso)
        self.resv = cut.resv  # node -> contract it is carved out for
        self.carved = cut.carved  # model -> contracts with carve-outs in it
        self.claimed: set[int] = set()  # held this pass for a waiting job: nobody else places there
        self.fresh: dict[int, str] = {}  # node -> isolation owner of work placed on it this pass
        self._ids: dict[int, list[str]] = {}  # free GPUs of nodes this pass has placed on
        self._lists: dict[tuple[object, ...], list[Pool]] = {}
        # _at_least[g]: the free counts a slice of g GPUs fits in, smallest first (no range() per lookup)
        self._at_least = [tuple(range(g, self.size + 1)) for g in range(self.size + 1)]
        self._fill(cut.cursors)

    # --- building

    def pool(self, model: str, owner: str | None, resv: str | None) -> Pool:
        key = (model, owner, resv)
        p = self.pools.get(key)
        if p is None:
            p = self.pools[key] = Pool(key, self.size)
        return p

    def _push(self, i: int) -> None:
        f = self.free[i]
        p = self.pool(self.model[i], self.owner[i] if self.iso else None, self.resv.get(i))
        p.stacks[f].append(i)
        p.cnt[f] += 1
        p.gpus += f

    def _fill(self, cursors: dict[tuple[str, int], int]) -> None:
        for (m, f), lst in self.fleet.empties.items():
            cur = cursors.get((m, f), 0)
            for i in reversed(lst[:cur]):
                self._push(i)  # carved out
            rest = lst[cur:]
            if self.unsandboxed:  # (in bulk too: those that cannot sandbox tenant work to their own pool)
                nodes = self.nodes
                barred = [i for i in rest if not nodes[i].sandboxed]
                if barred:
                    rest = [i for i in rest if nodes[i].sandboxed]
                    p = self.pool(UNSANDBOXED + m, None, None)
                    p.stacks[f].extend(reversed(barred))
                    p.cnt[f] += len(barred)
                    p.gpus += f * len(barred)
            p = self.pool(m, None, None)
            p.stacks[f].extend(reversed(rest))
            p.cnt[f] += len(rest)
            p.gpus += f * len(rest)
        # _push, inline (a few thousand nodes): partly used nodes go to the pool of their model, owner, carve-out.
        model, free, owner, resv, iso, pool = self.model, self.free, self.owner, self.resv, self.iso, self.pool
        for i in reversed(self.fleet.partial):
            f = free[i]
            p = pool(model[i], owner[i] if iso else None, resv.get(i))
            p.stacks[f].append(i)
            p.cnt[f] += 1
            p.gpus += f

    # --- which pools a job sees, in preference order

    def _pools(self, model: str, key: str, resvs: tuple[str | None, ...]) -> list[Pool]:
        out: list[Pool] = []
        # Internal work takes the nodes tenants cannot use first, keeping sandboxed ones for tenants.
        models = (UNSANDBOXED + model, model) if self.unsandboxed and may_run_on(False, key) else (model,)
        for m in models:
            for r in resvs:
                if self.iso:
                    out.append(self.pool(m, key, r))
                out.append(self.pool(m, None, r))
        return out

    def general(self, model: str, key: str) -> list[Pool]:
        """Capacity any class may use: not carved out for a contract."""
        ck = ("g", model, key)
        lst = self._lists.get(ck)
        if lst is None:
            lst = self._lists[ck] = self._pools(model, key, (None,))
        return lst

    def holder(self, model: str, key: str, contract_id: str) -> list[Pool]:
        """A contract's own carve-out first, then general capacity."""
        ck = ("h", model, key, contract_id)
        lst = self._lists.get(ck)
        if lst is None:
            lst = self._lists[ck] = self._pools(model, key, (contract_id, None))
        return lst

    def spot(self, model: str, key: str) -> list[Pool]:
        """General capacity, then (lent) every carve-out of the model."""
        ck = ("s", model, key)
        lst = self._lists.get(ck)
        if lst is None:
            lst = self._lists[ck] = self._pools(model, key, (None, *self.carved.get(model, ())))
        return lst

    # --- counting and taking

    @staticmethod
    def gpus(pools: list[Pool]) -> int:
        return sum(p.gpus for p in pools)

    @staticmethod
    def ready(pools: list[Pool], g: int, cap: int = 1 << 30) -> int:
        """Nodes with at least g free GPUs (counting stops at `cap`)."""
        have = 0
        for p in pools:
            if p.gpus < g:
                continue
            have += sum(p.cnt[g:])
            if have >= cap:
                break
        return have

    def barred(self, model: str, key: str, g: int, n: int, ready: int) -> int:
        """The free GPUs on nodes that cannot sandbox work of owner `key`, if with the `ready` nodes it may
        use they would fit its gang of n slices of g (it waits for want of a sandbox only); else 0."""
        if may_run_on(False, key):
            return 0
        pools = self.general(UNSANDBOXED + model, key)  # (those nodes, as if they could sandbox it)
        return self.gpus(pools) if ready + self.ready(pools, g, n) >= n else 0

    def ready_nodes(self, pools: list[Pool], g: int) -> Iterator[int]:
        claimed = self.claimed
        for p in pools:
            for c in range(g, len(p.cnt)):
                if p.cnt[c]:
                    for i in reversed(p.stacks[c]):
                        if i not in claimed and self.free[i] == c:
                            yield i

    def _pop(self, p: Pool, c: int) -> int:
        stack, claimed = p.stacks[c], self.claimed
        while True:
            i = stack.pop()
            if i not in claimed:
                p.cnt[c] -= 1
                p.gpus -= c
                return i

    def _take(self, p: Pool, c: int, k: int) -> list[int]:
        """Pop k nodes from stack c of pool p (there are at least k not claimed), top first."""
        stack = p.stacks[c]
        out = stack[-k:]
        del stack[-k:]
        out.reverse()
        claimed = self.claimed
        if claimed and not claimed.isdisjoint(out):  # stale entries: drop them and take more
            out = list(filterfalse(claimed.__contains__, out))
            while len(out) < k:
                i = stack.pop()
                if i not in claimed:
                    out.append(i)
        p.cnt[c] -= k
        p.gpus -= c * k
        return out

    def place(
        self, pools: list[Pool], g: int, n: int, key: str
    ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], bool] | None:
        """Give a gang of n slices of g GPUs to a job of owner `key`: best fit
        over `pools` in order, all or nothing. Returns the (node id, GPUs)
        entries and whether any node is carved out for a contract, or None."""
        if g > self.size:
            return None  # no node is that large
        if n == 1:  # the common case, inline
            claimed = self.claimed
            for p in pools:
                if p.gpus < g:
                    continue
                cnt = p.cnt
                for c in self._at_least[g]:
                    if cnt[c]:
                        stack = p.stacks[c]
                        i = stack.pop()
                        while i in claimed:
                            i = stack.pop()
                        cnt[c] -= 1
                        p.gpus -= c
                        nd = self.nodes[i]
                        if c == g == len(nd.gpus):  # a whole free node: the common case, inline
                            self.free[i] = 0
                            if self.iso:
                                self.owner[i] = key
                            self.fresh[i] = key
                            return ((nd.node_id, nd.gpus),), p.carved
                        return ((nd.node_id, self._give(i, g, key, p)),), p.carved
            return None
        if self.ready(pools, g, n) < n:
            return None
        # All nodes are taken before any is given: a remainder going back must not serve the same gang twice.
        got: list[int] = []
        src: list[Pool] = []  # the pool each node came from
        carved = False
        for p in pools:
            cnt = p.cnt
            for c in self._at_least[g]:
                k = min(cnt[c], n - len(got))
                if k:
                    got += self._take(p, c, k)
                    src += [p] * k
                    carved = carved or p.carved
            if len(got) == n:
                break
        entries = []
        nodes, free, iso, owner, fresh = self.nodes, self.free, self.iso, self.owner, self.fresh
        for i, p in zip(got, src, strict=True):
            nd = nodes[i]
            if free[i] == g == len(nd.gpus):  # a whole free node: the common case, inline
                free[i] = 0
                if iso:
                    owner[i] = key
                fresh[i] = key
                entries.append((nd.node_id, nd.gpus))
            else:
                entries.append((nd.node_id, self._give(i, g, key, p)))
        if self.fleet.min_size != self.fleet.max_size:
            entries = self._whole_first(got, entries, g)
        return tuple(entries), carved

    def _whole_first(
        self, got: list[int], entries: list[tuple[str, tuple[str, ...]]], g: int
    ) -> list[tuple[str, tuple[str, ...]]]:
        """A gang's entries with the nodes it takes whole first (in a fleet of mixed node sizes)."""
        whole = [g == len(self.nodes[i].gpus) for i in got]
        return [e for _, e in sorted(zip(whole, entries, strict=True), key=lambda x: not x[0])]

    def _give(self, i: int, g: int, key: str, p: Pool) -> tuple[str, ...]:
        """g free GPUs of node i (just taken out of pool p) to owner `key`; the rest goes back."""
        if self.iso:
            self.owner[i] = key
        self.fresh[i] = key
        free = self.free
        f = free[i] - g
        ids = self._ids.get(i)
        if ids is None:
            gpus = self.nodes[i].gpus
            if free[i] == len(gpus) and f == 0:
                free[i] = 0
                return gpus  # a whole free node: nothing to track
            ids = self.free_ids(i)
        give = tuple(ids[:g])
        del ids[:g]
        free[i] = f
        if f > 0:  # the rest goes back: same model and reservation as p, owned by `key` now under isolation
            owner = key if self.iso else None
            if p.key[1] != owner:
                p = self.pool(p.key[0], owner, p.key[2])
            p.stacks[f].append(i)
            p.cnt[f] += 1
            p.gpus += f
        return give

    def free_ids(self, i: int) -> list[str]:
        """The free GPUs of node i not given yet in this pass (the caller takes from the front)."""
        ids = self._ids.get(i)
        if ids is None:
            gpus = self.nodes[i].gpus
            # (every GPU free and placeable: no need to ask which)
            ids = self._ids[i] = list(gpus) if self.free[i] == len(gpus) else self.fleet.free_gpus(i)
        return ids

    def hold(self, pools: list[Pool], g: int, n: int) -> int:
        """Claim, for a job that does not fit, the nodes closest to fitting it:
        every node with g free, then the fullest others, up to n nodes."""
        held = 0
        for p in pools:
            for c in range(g, len(p.cnt)):
                while p.cnt[c] and held < n:
                    self.claimed.add(self._pop(p, c))
                    held += 1
        for c in range(min(g, self.size + 1) - 1, 0, -1):
            for p in pools:
                while p.cnt[c] and held < n:
                    self.claimed.add(self._pop(p, c))
                    held += 1
        return held

    def claim(self, i: int) -> None:
        """Hold node i for a job this pass (it leaves its pool if it had free GPUs)."""
        if i in self.claimed:
            return
        self.claimed.add(i)
        f = self.free[i]
        n = self.nodes[i]
        if f > 0 and not n.cordoned:
            p = self.pool(self.model[i], self.owner[i] if self.iso else None, self.resv.get(i))
            p.cnt[f] -= 1
            p.gpus -= f
