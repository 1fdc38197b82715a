"""Tokens expire (issue 12 item 10): the store keeps the expiry, the Authenticator
refuses a token from the moment it expires, a remembered one included, with a
message that says when, and without a store read per retry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.domain.errors import InvalidArgumentError, NotFoundError, UnauthenticatedError
from neocloud.scheduler.api.auth import Authenticator
from neocloud.scheduler.store.admin import MAX_TOKEN_LIFETIME_S, default_expiry
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Principal, Role

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingStore(JobStore):
    def __init__(self, path: Path, clock: Clock) -> None:
        super().__init__(open_db(path), clock=clock)
        self.lookups = 0

    def authenticate(self, token: str) -> Principal | None:
        self.lookups += 1
        return super().authenticate(token)


class Context:
    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


@pytest.fixture
def wall() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(tmp_path: Path, wall: Clock) -> Iterator[CountingStore]:
    s = CountingStore(tmp_path / "scheduler.db", wall)
    s.create_tenant("acme")
    yield s
    s.close()


def who(auth: Authenticator, token: str) -> Principal:
    return asyncio.run(auth.principal(Context(token)))  # type: ignore[arg-type]


def test_a_remembered_token_stops_working_at_its_expiry(store: CountingStore, wall: Clock) -> None:
    token = store.create_token(Role.TENANT, "acme-ci", tenant="acme", expires_at=T0 + 60)
    auth = Authenticator(store, ttl_s=3600.0, clock=Clock(0.0), wall=wall)
    assert who(auth, token).tenant == "acme" and store.lookups == 1
    wall.now = T0 + 59.9
    assert who(auth, token).tenant == "acme" and store.lookups == 1  # remembered, still live
    wall.now = T0 + 60
    for _ in range(5):
        with pytest.raises(UnauthenticatedError, match=r"token acme-ci expired at 2027-01-15T08:01:00Z"):
            who(auth, token)
    assert store.lookups == 1  # no store read for an expired token, remembered or retried


def test_an_expired_token_is_refused_by_name_and_time_on_first_sight(store: CountingStore, wall: Clock) -> None:
    token = store.create_token(Role.INTERNAL, "lab", expires_at=T0 + 1)
    wall.now = T0 + 2
    auth = Authenticator(store, clock=Clock(0.0), wall=wall)
    with pytest.raises(UnauthenticatedError, match="token lab expired at 2027-01-15T08:00:01Z"):
        who(auth, token)
    with pytest.raises(UnauthenticatedError, match="expired at"):
        who(auth, token)
    assert store.lookups == 1
    assert [t.name for t in store.list_tokens()] == []  # expired tokens are not listed as live
    assert [t.expires_at for t in store.list_tokens(include_revoked=True)] == [T0 + 1]


def test_expiry_bounds_and_defaults(store: CountingStore) -> None:
    with pytest.raises(InvalidArgumentError, match="not in the future"):
        store.create_token(Role.TENANT, "a", tenant="acme", expires_at=T0)
    with pytest.raises(InvalidArgumentError, match="more than 366 days away"):
        store.create_token(Role.TENANT, "a", tenant="acme", expires_at=T0 + MAX_TOKEN_LIFETIME_S + 1)
    with pytest.raises(InvalidArgumentError, match="expires_at"):
        store.create_token(Role.TENANT, "a", tenant="acme", expires_at=float("nan"))
    assert default_expiry(Role.TENANT, T0) == default_expiry(Role.INTERNAL, T0) == T0 + 90 * 86400
    assert default_expiry(Role.OPERATOR, T0) is None


def test_rotate_keeps_name_role_tenant_and_lets_the_old_token_live_out_its_grace(
    store: CountingStore, wall: Clock
) -> None:
    old_token = store.create_token(Role.TENANT, "acme-ci", tenant="acme", expires_at=T0 + 30 * 86400)
    wall.now = T0 + 86400
    new_token, new, old = store.rotate_token("acme-ci", 3600.0, None, "ops")
    assert (new.name, new.role, new.tenant) == ("acme-ci", Role.TENANT, "acme")
    assert new.expires_at == wall.now + 30 * 86400  # the old token's lifetime again
    assert (old.expires_at, old.superseded_at) == (wall.now + 3600, wall.now)
    auth = Authenticator(store, ttl_s=0, clock=Clock(0.0), wall=wall)
    assert who(auth, old_token).token_name == who(auth, new_token).token_name == "acme-ci"
    event = store.audit_events("acme-ci")[-1]
    assert (event.action, event.actor, event.detail["old_token_id"], event.detail["new_token_id"]) == (
        "rotate-token",
        "ops",
        old.token_id,
        new.token_id,
    )
    listed = {t.token_id: t for t in store.list_tokens()}
    assert set(listed) == {old.token_id, new.token_id} and listed[old.token_id].superseded_at == wall.now
    # Rotating again names the current token (by name or by id), never the superseded one.
    with pytest.raises(NotFoundError):
        store.rotate_token(old.token_id, 0.0, None, "ops")
    wall.now += 3600
    with pytest.raises(UnauthenticatedError, match="expired at"):
        who(auth, old_token)
    assert who(auth, new_token).tenant == "acme"
    # Revoking the name ends every token of it.
    store.revoke_token("acme-ci")
    with pytest.raises(UnauthenticatedError, match="unknown or revoked"):
        who(auth, new_token)


def test_rotating_a_never_expiring_operator_token_and_bad_graces(store: CountingStore, wall: Clock) -> None:
    store.create_token(Role.OPERATOR, "ops")
    token, new, old = store.rotate_token(store.list_tokens()[0].token_id, 0.0, None, "ops")
    assert new.expires_at is None and old.expires_at == wall.now and token.startswith("nct_")
    for grace in (-1.0, 8 * 86400.0, float("inf")):
        with pytest.raises(InvalidArgumentError, match="grace"):
            store.rotate_token("ops", grace, None, "ops")


def test_an_expired_operator_token_lets_a_restart_bootstrap_one(store: CountingStore, wall: Clock) -> None:
    store.create_token(Role.OPERATOR, "bootstrap", expires_at=T0 + 10)
    assert store.bootstrap_operator_token() is None
    wall.now = T0 + 10
    token = store.bootstrap_operator_token()  # the expired token gives up its name
    assert token is not None and store.authenticate(token) == Principal(Role.OPERATOR, None, "bootstrap")
