"""What operators manage: tenants, API tokens (stored as SHA-256 only),
reserved contracts, site settings, node cordons and GPU ownership, and the
audit trail of what they did."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass

from neocloud.domain.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from neocloud.scheduler.policy.types import PolicyConfig
from neocloud.scheduler.store import settings as site_settings
from neocloud.scheduler.store import validate
from neocloud.scheduler.store.audit import AdminEvent, audit
from neocloud.scheduler.store.contracts import ContractStore
from neocloud.scheduler.store.records import (
    CordonRecord,
    Principal,
    Role,
    TenantRecord,
    TokenRecord,
)
from neocloud.wire import tls

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "nct_"
# What ingest accepts as an NVML UUID (scheduler/ingest/validate.py), printable and without spaces.
_GPU_UUID = re.compile(r"(GPU|MIG)-[\x21-\x7e]{1,92}")
MAX_AUDIT_LIST = 1000


@dataclass(frozen=True, slots=True)
class GpuMove:
    uuid: str
    from_node: str
    to_node: str
    energy_total_mj: int  # what the GPU earned on from_node (the ledger keeps it there)
    event: AdminEvent


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _node_id(field: str, value: str) -> str:
    try:
        return tls.validate_node_id(value)
    except ValueError as e:
        raise InvalidArgumentError(f"{field}: {e}") from e


class AdminStore(ContractStore):
    # --- tenants ------------------------------------------------------------------------------------

    def create_tenant(self, name: str, weight: float = 1.0, now: float | None = None) -> TenantRecord:
        validate.tenant_name(name)
        if validate.finite("weight", weight) <= 0:
            raise InvalidArgumentError(f"weight must be more than 0, not {weight:g}")
        record = TenantRecord(name, float(weight), self._now(now))
        with self._write() as db:
            if db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise AlreadyExistsError(f"tenant {name!r} exists already")
            db.execute(
                "INSERT INTO tenants (name, weight, created_at) VALUES (?, ?, ?)", (name, weight, record.created_at)
            )
        logger.info("tenant %s created (weight %g)", name, weight)
        return record

    def list_tenants(self) -> list[TenantRecord]:
        with self._read() as db:
            rows = db.execute("SELECT name, weight, created_at FROM tenants ORDER BY name").fetchall()
        return [TenantRecord(*row) for row in rows]

    def tenant_exists(self, name: str) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone() is not None

    # --- API tokens ---------------------------------------------------------------------------------

    def create_token(self, role: Role, name: str, tenant: str | None = None, now: float | None = None) -> str:
        """Create a token and return its plaintext, the only time it is ever seen: only its hash is kept."""
        validate.name("name", name)
        if not isinstance(role, Role):
            raise InvalidArgumentError(f"role {role!r} is unknown: use operator, internal or tenant")
        if (role is Role.TENANT) != (tenant is not None):
            raise InvalidArgumentError("tenant is required for role tenant and not allowed for operator or internal")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write() as db:
            if tenant is not None and not db.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone():
                raise NotFoundError(f"tenant {tenant!r} does not exist: create it first")
            if db.execute("SELECT 1 FROM api_tokens WHERE name = ? AND revoked_at IS NULL", (name,)).fetchone():
                raise AlreadyExistsError(f"a token named {name!r} exists already: revoke it or pick another name")
            db.execute(
                "INSERT INTO api_tokens (token_hash, tenant, role, name, created_at) VALUES (?, ?, ?, ?, ?)",
                (token_hash(token), tenant, role.value, name, self._now(now)),
            )
        logger.info("API token %s created (role %s, tenant %s)", name, role.value, tenant)
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The principal a live token stands for, or None for an unknown or revoked one."""
        if not token:
            return None
        with self._read() as db:
            row = db.execute(
                "SELECT role, tenant, name FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash(token),),
            ).fetchone()
        return None if row is None else Principal(Role(row[0]), row[1], row[2])

    def revoke_token(self, name: str, now: float | None = None) -> None:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (self._now(now), name)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no live token named {name!r}")
        logger.info("API token %s revoked", name)

    def list_tokens(self, include_revoked: bool = False) -> list[TokenRecord]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._read() as db:
            rows = db.execute(
                f"SELECT name, role, tenant, created_at, revoked_at FROM api_tokens{where} ORDER BY created_at, name"
            ).fetchall()
        return [TokenRecord(r[0], Role(r[1]), r[2], r[3], r[4]) for r in rows]

    def bootstrap_operator_token(self, name: str = "bootstrap", now: float | None = None) -> str | None:
        """Create a first operator token if no live one exists; None if one does (the check and the
        insert are one transaction, so two schedulers starting at once make at most one)."""
        validate.name("name", name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write() as db:
            if db.execute("SELECT 1 FROM api_tokens WHERE role = 'operator' AND revoked_at IS NULL").fetchone():
                return None
            if db.execute("SELECT 1 FROM api_tokens WHERE name = ? AND revoked_at IS NULL", (name,)).fetchone():
                raise AlreadyExistsError(f"a token named {name!r} exists already; pick another bootstrap name")
            db.execute(
                "INSERT INTO api_tokens (token_hash, tenant, role, name, created_at)"
                " VALUES (?, NULL, 'operator', ?, ?)",
                (token_hash(token), name, self._now(now)),
            )
        logger.info("bootstrap operator token %s created", name)
        return token

    # --- settings -----------------------------------------------------------------------------------

    def set_setting(self, key: str, value: str) -> site_settings.SettingValue:
        """Parse, check and store one setting; returns the typed value."""
        typed = site_settings.parse(key, value)
        with self._write() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, site_settings.render(typed)),
            )
        logger.info("setting %s = %s", key, site_settings.render(typed))
        return typed

    def stored_settings(self) -> dict[str, str]:
        """Only the settings an operator set, as stored."""
        with self._read() as db:
            return {k: v for k, v in db.execute("SELECT key, value FROM settings ORDER BY key")}

    def get_settings(self) -> dict[str, site_settings.SettingValue]:
        """Every known setting with its effective value (stored, else the default)."""
        stored = self.stored_settings()
        return site_settings.effective({k: v for k, v in stored.items() if k in site_settings.SETTINGS})

    def policy_config(self) -> PolicyConfig:
        """The policy's configuration from the settings and the tenants' weights."""
        stored = {k: v for k, v in self.stored_settings().items() if k in site_settings.SETTINGS}
        weights = {t.name: t.weight for t in self.list_tenants()}
        return site_settings.policy_config(stored, weights)

    # --- cordons ------------------------------------------------------------------------------------

    def cordon(self, node_id: str, reason: str, now: float | None = None) -> CordonRecord:
        """Stop placing new work on a node (running work stays); cordoning again updates the reason."""
        _node_id("node_id", node_id)
        validate.text("reason", reason, validate.MAX_REASON)
        at = self._now(now)
        with self._write() as db:
            db.execute(
                "INSERT INTO node_cordons (node_id, reason, at) VALUES (?, ?, ?)"
                " ON CONFLICT (node_id) DO UPDATE SET reason = excluded.reason",
                (node_id, reason, at),
            )
            row = db.execute("SELECT node_id, reason, at FROM node_cordons WHERE node_id = ?", (node_id,)).fetchone()
        logger.info("node %s cordoned: %s", node_id, reason)
        return CordonRecord(*row)

    def uncordon(self, node_id: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM node_cordons WHERE node_id = ?", (node_id,)).rowcount == 0:
                raise NotFoundError(f"node {node_id!r} is not cordoned")
        logger.info("node %s uncordoned", node_id)

    def cordoned(self) -> frozenset[str]:
        with self._read() as db:
            return frozenset(row[0] for row in db.execute("SELECT node_id FROM node_cordons"))

    def list_cordons(self) -> list[CordonRecord]:
        with self._read() as db:
            rows = db.execute("SELECT node_id, reason, at FROM node_cordons ORDER BY node_id").fetchall()
        return [CordonRecord(*row) for row in rows]

    # --- GPU ownership ------------------------------------------------------------------------------

    def move_gpu(self, uuid: str, to_node: str, reason: str, actor: str, now: float | None = None) -> GpuMove:
        """Give a GPU to another known node, audited. Refused while a job holds it, and while energy
        it reported is not yet attributed (metering catches up within a controller pass or two).
        The energy it earned stays with the node it was earned on: the ledger has it, by
        allocation and idle time, and keeps it as it is; the audit event records the total. On
        the new node the GPU starts afresh, with no counter baseline (the new host's counter is
        another count and its clock another clock, and the time the GPU was away is no one's),
        a total of 0 and no attribution watermark, so a restart attributes nothing twice."""
        if not _GPU_UUID.fullmatch(uuid):
            raise InvalidArgumentError(f"gpu_uuid {uuid[:96]!r} is not an NVML UUID (GPU-... or MIG-...)")
        _node_id("to_node", to_node)
        validate.text("reason", reason, validate.MAX_REASON, required=False)
        at = self._now(now)
        with self._write() as db:
            row = db.execute(
                "SELECT g.node_id, g.energy_total_mj, COALESCE(w.attributed_total_mj, 0) FROM gpus g"
                " LEFT JOIN meter_watermarks w ON w.uuid = g.uuid WHERE g.uuid = ?",
                (uuid,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no GPU {uuid!r}: no node ever registered it")
            from_node, energy_mj, attributed_mj = str(row[0]), int(row[1]), float(row[2])
            if not db.execute("SELECT 1 FROM nodes WHERE node_id = ?", (to_node,)).fetchone():
                raise NotFoundError(f"no node {to_node!r}: a node is known once its agent has connected")
            if from_node == to_node:
                raise FailedPreconditionError(f"GPU {uuid} belongs to node {to_node} already")
            held = db.execute(
                "SELECT a.job_id FROM allocations a, json_each(a.gpu_uuids) g WHERE a.end IS NULL AND g.value = ?",
                (uuid,),
            ).fetchone()
            if held:
                raise FailedPreconditionError(
                    f"job {held[0]} holds GPU {uuid}: cancel it or let it finish before moving the GPU"
                )
            if energy_mj - attributed_mj > 0.5:
                raise FailedPreconditionError(
                    f"{(energy_mj - attributed_mj) / 1e3:.3f} J of GPU {uuid} are not metered yet: retry in a minute"
                )
            db.execute(
                "UPDATE gpus SET node_id = ?, energy_last_mj = NULL, energy_last_us = 0, energy_total_mj = 0"
                " WHERE uuid = ?",
                (to_node, uuid),
            )
            db.execute("DELETE FROM meter_watermarks WHERE uuid = ?", (uuid,))
            detail = {"from": from_node, "to": to_node, "energy_total_mj": energy_mj}
            event = audit(db, at, actor, "move-gpu", uuid, detail, reason)
        logger.warning("GPU %s moved from node %s to node %s by %s: %s", uuid, from_node, to_node, actor, reason)
        return GpuMove(uuid, from_node, to_node, energy_mj, event)

    def audit_events(self, subject: str | None = None, limit: int = MAX_AUDIT_LIST) -> list[AdminEvent]:
        """The newest `limit` audit events (of one subject, if given), oldest first."""
        where, params = ("", ()) if not subject else (" WHERE subject = ?", (subject,))
        with self._read() as db:
            rows = db.execute(
                "SELECT event_id, at, actor, action, subject, detail, reason FROM admin_events"
                f"{where} ORDER BY event_id DESC LIMIT ?",
                (*params, max(1, min(limit, MAX_AUDIT_LIST))),
            ).fetchall()
        return [AdminEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in reversed(rows)]
