"""What operators manage: tenants, API tokens (stored as SHA-256 only),
reserved contracts, site settings, node cordons and GPU ownership, and the
audit trail of what they did."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from neocloud.domain.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from neocloud.scheduler.policy.types import PolicyConfig
from neocloud.scheduler.store import settings as site_settings
from neocloud.scheduler.store import uids, validate
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
TOKEN_DEFAULT_LIFETIME_S = 90 * 86400.0  # tenant and internal tokens, unless asked otherwise
MAX_TOKEN_LIFETIME_S = 366 * 86400.0  # the most any expiry may be ahead: a token is rotated at least yearly
DEFAULT_ROTATE_GRACE_S = 3600.0  # the old token keeps working this long after a rotation...
MAX_ROTATE_GRACE_S = 7 * 86400.0  # ...at most this long


@dataclass(frozen=True, slots=True)
class GpuMove:
    uuid: str
    from_node: str
    to_node: str
    energy_total_mj: int  # what the GPU earned on from_node (the ledger keeps it there)
    event: AdminEvent


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def default_expiry(role: Role, now: float) -> float | None:
    """Tenant and internal tokens live TOKEN_DEFAULT_LIFETIME_S unless asked otherwise; operator
    tokens never expire by default (the site's break-glass; a restart bootstraps one if none is live)."""
    return None if role is Role.OPERATOR else now + TOKEN_DEFAULT_LIFETIME_S


def check_expiry(expires_at: float | None, now: float) -> None:
    if expires_at is None:
        return
    validate.finite("expires_at", expires_at)
    if expires_at <= now:
        raise InvalidArgumentError(f"expires_at {fmt_utc(expires_at)} is not in the future (now {fmt_utc(now)})")
    if expires_at - now > MAX_TOKEN_LIFETIME_S:
        raise InvalidArgumentError(
            f"expires_at {fmt_utc(expires_at)} is more than {MAX_TOKEN_LIFETIME_S / 86400:.0f} days away, the most"
            " a token may live: rotate it instead (neocloud admin token rotate)"
        )


def fmt_utc(t: float) -> str:
    """RFC 3339, UTC, to the second; Unix seconds for a time no calendar holds."""
    try:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{t:g} (Unix seconds)"


# A token that is neither revoked nor superseded: at most one per name (the unique index).
_CURRENT = "revoked_at IS NULL AND superseded_at IS NULL"
_TOKEN_COLUMNS = (
    "SELECT name, role, tenant, created_at, revoked_at, expires_at, substr(token_hash, 1, 12), superseded_at"
    " FROM api_tokens"
)


def _token_record(r: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(r[0], Role(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])


def _insert_token(
    db: sqlite3.Connection, token: str, role: Role, tenant: str | None, name: str, at: float, expires: float | None
) -> str:
    """Store a token's hash; returns its id (the hash's first 12 hex)."""
    digest = token_hash(token)
    db.execute(
        "INSERT INTO api_tokens (token_hash, tenant, role, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (digest, tenant, role.value, name, at, expires),
    )
    return digest[:12]


def _current_token(db: sqlite3.Connection, name_or_id: str) -> TokenRecord:
    """The current token of a name, else the one current token whose id it is."""
    row = db.execute(f"{_TOKEN_COLUMNS} WHERE name = ? AND {_CURRENT}", (name_or_id,)).fetchone()
    if row is None and re.fullmatch(r"[0-9a-f]{12}", name_or_id):
        row = db.execute(
            f"{_TOKEN_COLUMNS} WHERE substr(token_hash, 1, 12) = ? AND {_CURRENT}", (name_or_id,)
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no current token named {name_or_id[:64]!r} or with that id (neocloud admin token list)")
    return _token_record(row)


def _node_id(field: str, value: str) -> str:
    try:
        return tls.validate_node_id(value)
    except ValueError as e:
        raise InvalidArgumentError(f"{field}: {e}") from e


class AdminStore(ContractStore):
    # --- tenants ------------------------------------------------------------------------------------

    def create_tenant(
        self, name: str, weight: float = 1.0, now: float | None = None, internal: bool = False
    ) -> TenantRecord:
        """`internal`: one of the lab's own teams (class internal work, reported apart)."""
        validate.tenant_name(name)
        if validate.finite("weight", weight) <= 0:
            raise InvalidArgumentError(f"weight must be more than 0, not {weight:g}")
        with self._write() as db:
            if db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise AlreadyExistsError(f"tenant {name!r} exists already")
            record = TenantRecord(name, float(weight), self._now(now), bool(internal), uids.assign(db))
            db.execute(
                "INSERT INTO tenants (name, weight, created_at, internal, uid_offset) VALUES (?, ?, ?, ?, ?)",
                (name, weight, record.created_at, int(record.internal), record.uid_offset),
            )
        logger.info("tenant %s created (weight %g%s)", name, weight, ", internal team" if internal else "")
        return record

    def list_tenants(self) -> list[TenantRecord]:
        with self._read() as db:
            rows = db.execute("SELECT name, weight, created_at, internal, uid_offset FROM tenants ORDER BY name")
            return [TenantRecord(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows.fetchall()]

    def uid_offset(self, tenant: str) -> int:
        """The tenant's own sandbox uid, as an offset in the nodes' range (0: the lab's own work)."""
        with self._read() as db:
            found = uids.offset(db, tenant)
        if found is None:
            raise NotFoundError(f"no tenant {tenant!r}")
        return found

    def internal_team(self, name: str) -> bool:
        """Whether the tenant is one of the lab's own teams (False for one that does not exist)."""
        with self._read() as db:
            row = db.execute("SELECT internal FROM tenants WHERE name = ?", (name,)).fetchone()
        return bool(row and row[0])

    def tenant_exists(self, name: str) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone() is not None

    # --- API tokens ---------------------------------------------------------------------------------

    def create_token(
        self,
        role: Role,
        name: str,
        tenant: str | None = None,
        now: float | None = None,
        expires_at: float | None = None,
    ) -> str:
        """Create a token and return its plaintext, the only time it is ever seen: only its hash is kept.
        `expires_at`: None for never (the API applies the role's default, default_expiry)."""
        validate.name("name", name)
        if not isinstance(role, Role):
            raise InvalidArgumentError(f"role {role!r} is unknown: use operator, internal or tenant")
        if (role is Role.TENANT) != (tenant is not None):
            raise InvalidArgumentError("tenant is required for role tenant and not allowed for operator or internal")
        at = self._now(now)
        check_expiry(expires_at, at)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write() as db:
            if tenant is not None and not db.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone():
                raise NotFoundError(f"tenant {tenant!r} does not exist: create it first")
            if db.execute(f"SELECT 1 FROM api_tokens WHERE name = ? AND {_CURRENT}", (name,)).fetchone():
                raise AlreadyExistsError(f"a token named {name!r} exists already: revoke it or pick another name")
            _insert_token(db, token, role, tenant, name, at, expires_at)
        logger.info("API token %s created (role %s, tenant %s)", name, role.value, tenant)
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a token that is not revoked, or None. An expired one is returned too,
        with its expires_at: the caller says when it expired rather than "unknown"."""
        if not token:
            return None
        with self._read() as db:
            row = db.execute(
                "SELECT role, tenant, name, expires_at FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash(token),),
            ).fetchone()
        return None if row is None else Principal(Role(row[0]), row[1], row[2], row[3])

    def revoke_token(self, name: str, now: float | None = None) -> None:
        """Revoke every token of that name, those a rotation superseded (still in their grace) too."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (self._now(now), name)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no live token named {name!r}")
        logger.info("API token %s revoked", name)

    def rotate_token(
        self, name_or_id: str, grace_s: float, expires_at: float | None, actor: str, now: float | None = None
    ) -> tuple[str, TokenRecord, TokenRecord]:
        """Issue a new token of the same name, role and tenant, and let the old one expire after
        `grace_s` (sooner if it expires sooner); audited. `expires_at`: the new token's expiry; None:
        the old token's lifetime again (never, if it had none). Returns (new token, new, old)."""
        at = self._now(now)
        if not 0 <= validate.finite("grace_s", grace_s) <= MAX_ROTATE_GRACE_S:
            raise InvalidArgumentError(f"grace {grace_s:g} s is not between 0 and {MAX_ROTATE_GRACE_S:g} s (7 days)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write() as db:
            old = _current_token(db, name_or_id)
            if expires_at is None and old.expires_at is not None:
                expires_at = at + min(old.expires_at - old.created_at, MAX_TOKEN_LIFETIME_S)
            check_expiry(expires_at, at)
            old_expiry = min(at + grace_s, old.expires_at if old.expires_at is not None else float("inf"))
            db.execute(
                "UPDATE api_tokens SET superseded_at = ?, expires_at = ? WHERE substr(token_hash, 1, 12) = ?"
                " AND name = ? AND revoked_at IS NULL AND superseded_at IS NULL",
                (at, old_expiry, old.token_id, old.name),
            )
            new_id = _insert_token(db, token, old.role, old.tenant, old.name, at, expires_at)
            detail = {"old_token_id": old.token_id, "old_expires_at": old_expiry, "new_token_id": new_id}
            audit(db, at, actor, "rotate-token", old.name, detail | {"new_expires_at": expires_at}, "")
        logger.info("API token %s rotated by %s: %s expires at %.0f", old.name, actor, old.token_id, old_expiry)
        new = TokenRecord(old.name, old.role, old.tenant, at, None, expires_at, new_id)
        return token, new, replace(old, expires_at=old_expiry, superseded_at=at)

    def list_tokens(self, include_revoked: bool = False, now: float | None = None) -> list[TokenRecord]:
        """Live tokens (not revoked, not expired; superseded ones in their grace too), or every one."""
        where = "" if include_revoked else " WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
        params = () if include_revoked else (self._now(now),)
        with self._read() as db:
            rows = db.execute(f"{_TOKEN_COLUMNS}{where} ORDER BY created_at, name", params).fetchall()
        return [_token_record(r) for r in rows]

    def bootstrap_operator_token(self, name: str = "bootstrap", now: float | None = None) -> str | None:
        """Create a first operator token if no live one exists; None if one does (the check and the
        insert are one transaction, so two schedulers starting at once make at most one)."""
        validate.name("name", name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        at = self._now(now)
        with self._write() as db:
            # An expired operator token is no operator: a restart then recovers the site.
            live = "role = 'operator' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
            if db.execute(f"SELECT 1 FROM api_tokens WHERE {live}", (at,)).fetchone():
                return None
            # An expired token of the name gives it up (it stays listed, expired, with --revoked).
            db.execute(
                f"UPDATE api_tokens SET superseded_at = ? WHERE name = ? AND {_CURRENT} AND expires_at <= ?",
                (at, name, at),
            )
            if db.execute(f"SELECT 1 FROM api_tokens WHERE name = ? AND {_CURRENT}", (name,)).fetchone():
                raise AlreadyExistsError(f"a token named {name!r} exists already; pick another bootstrap name")
            _insert_token(db, token, Role.OPERATOR, None, name, at, None)
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
