"""Reserved contracts and the rate-card versions that price them.

A contract is ended, never deleted: usage, shortfalls and invoices name it, so
removing it would leave the tenant's past impossible to bill. Only a contract
that has not started and that no job names may be deleted (a mistake caught in
time: nothing was ever billed under it). Rate-card versions are checked against
the contracts in the same transaction that stores them, so a contract and the
card in force always agree: every contract has terms in the current card."""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from neocloud.domain.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from neocloud.scheduler.store import ratecards, validate
from neocloud.scheduler.store.audit import audit
from neocloud.scheduler.store.base import StoreBase
from neocloud.scheduler.store.ratecards import StoredRateCard
from neocloud.scheduler.store.records import ContractRecord

logger = logging.getLogger(__name__)

_CONTRACT_COLUMNS = "contract_id, tenant, start, end, gpus, power_w, gpu_model, created_at"
_BUSY = ("queued", "running", "preempting")


def _contract(row: Sequence[Any]) -> ContractRecord:
    cid, tenant, start, end, gpus, power_w, model, created = row
    return ContractRecord(cid, tenant, float(start), float(end), int(gpus), float(power_w), model, float(created))


def _unpriced(db: sqlite3.Connection, priced: Collection[str]) -> list[str]:
    return [
        str(r[0]) for r in db.execute("SELECT contract_id FROM contracts ORDER BY contract_id") if r[0] not in priced
    ]


class ContractStore(StoreBase):
    def create_contract(
        self,
        tenant: str,
        start: float,
        end: float,
        gpus: int = 0,
        power_w: float = 0.0,
        gpu_model: str | None = None,
        now: float | None = None,
        *,
        contract_id: str | None = None,
        card_sequence: int | None = None,
        actor: str = "",
    ) -> ContractRecord:
        """`contract_id`: the operator's name for it (None: one is made). `card_sequence`: the
        rate-card version the caller found its terms in; refused if another is in force by now.
        `actor`: the token's name, for the audit trail."""
        validate.contract_terms(gpus, power_w, gpu_model, start, end)
        if contract_id is not None:
            validate.name("contract_id", contract_id)
        cid = contract_id or "c-" + secrets.token_hex(6)
        record = ContractRecord(cid, tenant, float(start), float(end), gpus, float(power_w), gpu_model, self._now(now))
        with self._write() as db:
            if not db.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone():
                raise NotFoundError(f"tenant {tenant!r} does not exist: create it first")
            if db.execute("SELECT 1 FROM contracts WHERE contract_id = ?", (cid,)).fetchone():
                raise AlreadyExistsError(f"contract {cid} exists already (contracts are ended, never reused)")
            if card_sequence is not None and ratecards.latest_sequence(db) != card_sequence:
                raise FailedPreconditionError("the rate card changed while the contract was checked: try again")
            db.execute(
                f"INSERT INTO contracts ({_CONTRACT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, tenant, record.start, record.end, gpus, record.power_w, gpu_model, record.created_at),
            )
            terms = {"tenant": tenant, "start": record.start, "end": record.end, "gpus": gpus, "power_w": power_w}
            audit(db, record.created_at, actor, "create-contract", cid, {**terms, "gpu_model": gpu_model}, "")
        logger.info("contract %s created for tenant %s", cid, tenant)
        return record

    def get_contract(self, contract_id: str) -> ContractRecord:
        with self._read() as db:
            row = db.execute(
                f"SELECT {_CONTRACT_COLUMNS} FROM contracts WHERE contract_id = ?", (contract_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no contract {contract_id!r}")
        return _contract(row)

    def list_contracts(self, tenant: str | None = None) -> list[ContractRecord]:
        query = f"SELECT {_CONTRACT_COLUMNS} FROM contracts"
        params: tuple[str, ...] = ()
        if tenant is not None:
            query, params = query + " WHERE tenant = ?", (tenant,)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY start, contract_id", params).fetchall()
        return [_contract(row) for row in rows]

    def end_contract(self, contract_id: str, at: float, now: float | None = None, actor: str = "") -> ContractRecord:
        """End a contract at `at`: not in the past (what was billed stays billed), after its
        start, and not after the end it has. The policy winds its reserved work down then."""
        now = self._now(now)
        validate.finite("at", at)
        with self._write() as db:
            row = db.execute(f"SELECT {_CONTRACT_COLUMNS} FROM contracts WHERE contract_id = ?", (contract_id,))
            found = row.fetchone()
            if found is None:
                raise NotFoundError(f"no contract {contract_id!r}")
            c = _contract(found)
            if at < now:
                raise FailedPreconditionError(
                    f"cannot end contract {contract_id} in the past ({at:.0f} < now {now:.0f})"
                )
            if at <= c.start:
                raise FailedPreconditionError(
                    f"contract {contract_id} starts at {c.start:.0f}: end it after that, or delete it before it starts"
                )
            if at > c.end:
                raise FailedPreconditionError(f"contract {contract_id} ends at {c.end:.0f} already, before {at:.0f}")
            db.execute("UPDATE contracts SET end = ? WHERE contract_id = ?", (at, contract_id))
            audit(db, now, actor, "end-contract", contract_id, {"end_was": c.end, "end": at}, "")
        logger.info("contract %s ended at %.0f (was %.0f)", contract_id, at, c.end)
        return ContractRecord(c.contract_id, c.tenant, c.start, at, c.gpus, c.power_w, c.gpu_model, c.created_at)

    def delete_contract(self, contract_id: str, now: float | None = None, actor: str = "") -> None:
        """Delete a contract only while nothing can have been billed under it: before its start,
        with no job naming it. Any other contract is ended (end_contract)."""
        now = self._now(now)
        with self._write() as db:
            row = db.execute("SELECT start FROM contracts WHERE contract_id = ?", (contract_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no contract {contract_id!r}")
            named = db.execute("SELECT COUNT(*) FROM jobs WHERE contract_id = ?", (contract_id,)).fetchone()[0]
            if float(row[0]) <= now or named:
                raise FailedPreconditionError(
                    f"contract {contract_id} has started or jobs name it: its past stays billable, so it is ended,"
                    f" not deleted (neocloud admin contract end {contract_id} --at now)"
                )
            db.execute("DELETE FROM contracts WHERE contract_id = ?", (contract_id,))
            audit(db, now, actor, "delete-contract", contract_id, {"start": float(row[0])}, "")
        logger.info("contract %s deleted before it started", contract_id)

    # --- what contracts are checked against ---------------------------------------------------------

    def fleet_gpus(self) -> dict[str, int]:
        """GPUs the scheduler knows, by model (every GPU an agent ever registered)."""
        with self._read() as db:
            return {str(m): int(n) for m, n in db.execute("SELECT model, COUNT(*) FROM gpus GROUP BY model")}

    def node_known(self, node_id: str) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM nodes WHERE node_id = ?", (node_id,)).fetchone() is not None

    # --- rate-card versions -------------------------------------------------------------------------

    def latest_ratecard(self) -> StoredRateCard | None:
        with self._read() as db:
            return ratecards.latest(db)

    def ratecard_versions(self) -> list[StoredRateCard]:
        with self._read() as db:
            return ratecards.history(db)

    def apply_ratecard(
        self,
        text: str,
        source: str,
        actor: str,
        priced: Collection[str],
        expect_sequence: int,
        now: float | None = None,
    ) -> tuple[StoredRateCard, bool]:
        """Store `text` as the card in force, given the contract ids it prices and the version
        the caller compared it with. Returns the version in force and whether it is new (the
        same text as the current one is not stored twice)."""
        if len(text.encode("utf-8")) > ratecards.MAX_RATECARD_BYTES:
            raise InvalidArgumentError(f"the rate card is over {ratecards.MAX_RATECARD_BYTES} bytes")
        with self._write() as db:
            current = ratecards.latest(db)
            if (current.sequence if current else 0) != expect_sequence:
                raise FailedPreconditionError("another rate card was applied meanwhile: compare again and retry")
            if current is not None and current.sha256 == ratecards.text_sha256(text):
                return current, False
            missing = _unpriced(db, priced)
            if missing:
                raise FailedPreconditionError(
                    f"{len(missing)} contract(s) would have no terms: add contracts.{missing[0]} (commitment_per_month,"
                    f" overage_per_gpu_hour, sla_credit_per_gpu_hour); missing: {', '.join(missing[:10])}"
                )
            stored = ratecards.insert(db, text, source, actor, self._now(now))
            detail = {"version": stored.version, "sha256": stored.sha256, "source": source}
            audit(db, stored.applied_at, actor, "apply-ratecard", "ratecard", detail, "")
            return stored, True

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot of the store, for billing's what-if rating (a dry run)."""
        with self._read() as db:
            yield db
