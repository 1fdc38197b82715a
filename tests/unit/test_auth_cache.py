"""The Authenticator remembers live tokens for a moment, so a busy client costs
no store read per call, and still refuses a revoked token at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.domain.errors import UnauthenticatedError
from neocloud.scheduler.api.auth import Authenticator
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Principal, Role


class CountingStore(JobStore):
    def __init__(self, path: Path) -> None:
        super().__init__(open_db(path))
        self.lookups = 0

    def authenticate(self, token: str) -> Principal | None:
        self.lookups += 1
        return super().authenticate(token)


class Context:
    """The two things the Authenticator asks of a grpc.aio.ServicerContext."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    s = CountingStore(tmp_path / "scheduler.db")
    s.create_tenant("acme")
    yield s
    s.close()


def who(auth: Authenticator, token: str) -> Principal:
    return asyncio.run(auth.principal(Context(token)))  # type: ignore[arg-type]


def test_a_live_token_is_read_once_per_ttl(store: CountingStore) -> None:
    clock = Clock()
    auth = Authenticator(store, ttl_s=1.0, clock=clock)
    token = store.create_token(Role.TENANT, "acme-ci", tenant="acme")
    assert who(auth, token) == Principal(Role.TENANT, "acme", "acme-ci")
    for _ in range(5):
        assert who(auth, token).tenant == "acme"
    assert store.lookups == 1
    clock.now += 1.0
    who(auth, token)
    assert store.lookups == 2


def test_a_revoke_through_the_store_takes_effect_at_once(store: CountingStore) -> None:
    auth = Authenticator(store, ttl_s=3600.0, clock=Clock())
    token = store.create_token(Role.TENANT, "acme-ci", tenant="acme")
    other = store.create_token(Role.OPERATOR, "ops")
    who(auth, token)
    who(auth, other)
    store.revoke_token("acme-ci")
    with pytest.raises(UnauthenticatedError, match="revoked"):
        who(auth, token)
    assert who(auth, other).role is Role.OPERATOR  # the others are read again, and still live


def test_a_revoke_through_another_connection_takes_effect_within_the_ttl(store: CountingStore, tmp_path: Path) -> None:
    clock = Clock()
    auth = Authenticator(store, ttl_s=1.0, clock=clock)
    token = store.create_token(Role.TENANT, "acme-ci", tenant="acme")
    who(auth, token)
    elsewhere = JobStore(open_db(tmp_path / "scheduler.db"))
    elsewhere.revoke_token("acme-ci")
    elsewhere.close()
    clock.now += 0.5
    assert who(auth, token).tenant == "acme"  # remembered: this connection did not see the write
    clock.now += 0.5
    with pytest.raises(UnauthenticatedError):
        who(auth, token)


def test_unknown_tokens_are_not_remembered(store: CountingStore) -> None:
    auth = Authenticator(store, clock=Clock())
    for _ in range(3):
        with pytest.raises(UnauthenticatedError):
            who(auth, "nct_not-a-real-token")
    assert store.lookups == 3


def test_the_cache_is_bounded(store: CountingStore) -> None:
    auth = Authenticator(store, max_tokens=2, clock=Clock())
    tokens = [store.create_token(Role.TENANT, f"t{i}", tenant="acme") for i in range(3)]
    for token in tokens:
        who(auth, token)
    assert len(auth._live) <= 2
    assert {who(auth, t).token_name for t in tokens} == {"t0", "t1", "t2"}
