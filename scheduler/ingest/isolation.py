"""Finding the node whose data the store refuses, so that it stalls no one else.

A commit carries every node's changes in one transaction. When it fails with
an error about the data (a value the store cannot hold, a constraint) rather
than about the store (locked, disk full, I/O), the snapshot is split by node
and written in halves, bisecting down to the nodes whose part fails on its
own: everything else is committed, and those nodes alone are refused. Runs on
the store's thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from neocloud.domain.fleet import Cell, CellKey, NodeState
from neocloud.scheduler.store import telemetry as store
from neocloud.scheduler.store.telemetry import Snapshot

# Errors that say something about the rows being written. Anything else (above all
# sqlite3.OperationalError: locked, full, I/O) is the store's, and is retried whole.
DATA_ERRORS: tuple[type[Exception], ...] = (
    OverflowError,
    ValueError,
    TypeError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
)
NO_NODE = ""  # rows of a GPU no node owns any more


def split_by_node(snap: Snapshot, gpu_owner: Mapping[str, str]) -> dict[str, Snapshot]:
    """One snapshot per node: its row, its GPUs' rows, cells and watermarks."""
    nodes: dict[str, list[tuple[object, ...]]] = {}
    gpus: dict[str, list[tuple[object, ...]]] = {}
    seqs: dict[str, dict[str, tuple[int, int]]] = {}
    cells: dict[str, dict[CellKey, Cell]] = {}
    marks: dict[str, dict[str, tuple[int, float]]] = {}
    for row in snap.nodes:
        nodes.setdefault(str(row[0]), []).append(row)
    for row in snap.gpus:
        gpus.setdefault(str(row[1]), []).append(row)
    for node_id, seq in snap.seqs.items():
        seqs.setdefault(node_id, {})[node_id] = seq
    for key, cell in snap.cells.items():
        cells.setdefault(gpu_owner.get(key[0], NO_NODE), {})[key] = cell
    for uuid, mark in snap.watermarks.items():
        marks.setdefault(gpu_owner.get(uuid, NO_NODE), {})[uuid] = mark
    ids = set(nodes) | set(gpus) | set(seqs) | set(cells) | set(marks)
    return {
        node_id: Snapshot(
            nodes.get(node_id, []),
            gpus.get(node_id, []),
            seqs.get(node_id, {}),
            cells.get(node_id, {}),
            marks.get(node_id, {}),
        )
        for node_id in sorted(ids)
    }


def merge(parts: Sequence[Snapshot]) -> Snapshot:
    nodes: list[tuple[object, ...]] = []
    gpus: list[tuple[object, ...]] = []
    merged = Snapshot(nodes, gpus, {}, {}, {})
    for part in parts:
        nodes.extend(part.nodes)
        gpus.extend(part.gpus)
        merged.seqs.update(part.seqs)
        merged.cells.update(part.cells)
        merged.watermarks.update(part.watermarks)
    return merged


@dataclass(slots=True)
class Isolated:
    written: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # node -> what the store said
    unwritten: list[str] = field(default_factory=list)  # the store itself failed: retry these
    # Each refused node as last committed (None: never), to go back to.
    committed: dict[str, tuple[NodeState | None, dict[str, tuple[int, float]]]] = field(default_factory=dict)


class _StoreFailed(Exception):
    pass


def write_isolating(db: sqlite3.Connection, parts: Mapping[str, Snapshot]) -> Isolated:
    """Write what can be written, bisecting the nodes; see the module docstring."""
    out = Isolated()

    def bisect(ids: list[str]) -> None:
        try:
            store.write(db, merge([parts[i] for i in ids]))
        except DATA_ERRORS as e:
            if len(ids) == 1:
                out.refused[ids[0]] = f"{type(e).__name__}: {e}"[:200]
                return
            half = len(ids) // 2
            bisect(ids[:half])
            bisect(ids[half:])
        except Exception as e:
            raise _StoreFailed from e
        else:
            out.written.extend(ids)

    ids = list(parts)
    half = max(1, len(ids) // 2)
    try:
        # The whole set has failed already: start with its halves.
        for group in (ids[:half], ids[half:]):
            if group:
                bisect(group)
    except _StoreFailed:
        # No blame while the store itself fails: whatever is not written is retried.
        written = set(out.written)
        out.unwritten = [i for i in ids if i not in written]
        out.refused.clear()
        return out
    for node_id in list(out.refused):
        if node_id == NO_NODE:
            continue
        try:
            nodes, marks = store.load(db, node_id)
        except Exception:  # noqa: BLE001 (the store failed: retry, blame no one)
            del out.refused[node_id]
            out.unwritten.append(node_id)
        else:
            out.committed[node_id] = (nodes.get(node_id), marks)
    return out
