"""The Authenticator remembers live tokens for a moment, so a busy client costs
no store read per call, and still refuses a revoked token at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.domain.errors import ResourceExhaustedError, UnauthenticatedError
from neocloud.scheduler.api.auth import Authenticator, peer_host
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

    def __init__(self, token: str, peer: str = "ipv4:127.0.0.1:1") -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer


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


def who(auth: Authenticator, token: str, peer: str = "ipv4:127.0.0.1:1") -> Principal:
    return asyncio.run(auth.principal(Context(token, peer)))  # type: ignore[arg-type]


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


def test_a_refused_token_is_remembered_as_refused_until_the_tokens_change(store: CountingStore) -> None:
    auth = Authenticator(store, clock=Clock())
    for _ in range(3):
        with pytest.raises(UnauthenticatedError):
            who(auth, "nct_not-a-real-token")
    assert store.lookups == 1
    token = store.create_token(Role.TENANT, "acme-ci", tenant="acme")
    assert who(auth, token).tenant == "acme"  # a write to the token table forgets the refusals


def test_the_cache_is_bounded_and_keeps_the_recently_used(store: CountingStore) -> None:
    auth = Authenticator(store, max_tokens=2, clock=Clock())
    t0, t1, t2 = (store.create_token(Role.TENANT, f"t{i}", tenant="acme") for i in range(3))
    who(auth, t0)
    who(auth, t1)
    who(auth, t0)
    who(auth, t2)  # the cache is full: t1, the least recently used, goes (it used to empty it all)
    assert len(auth._live) == 2
    before = store.lookups
    assert who(auth, t0).token_name == "t0"
    assert store.lookups == before
    assert who(auth, t1).token_name == "t1"
    assert store.lookups == before + 1


def test_a_flood_of_bad_tokens_costs_a_bounded_number_of_store_reads(store: CountingStore) -> None:
    clock = Clock()
    auth = Authenticator(store, max_tokens=50, clock=clock, failed_burst=5, failed_per_s=2.0)
    good = store.create_token(Role.TENANT, "acme-ci", tenant="acme")
    flooder = "ipv4:10.0.0.66:4000"
    who(auth, good, flooder)
    outcomes = []
    for i in range(200):
        try:
            who(auth, f"nct_made-up-{i}", f"ipv4:10.0.0.66:{4000 + i}")  # a new connection each time
        except (UnauthenticatedError, ResourceExhaustedError) as e:
            outcomes.append(type(e))
    assert store.lookups == 1 + 5
    assert outcomes.count(UnauthenticatedError) == 5 and outcomes.count(ResourceExhaustedError) == 195
    assert who(auth, good, flooder).tenant == "acme"  # a remembered live token is not slowed
    with pytest.raises(ResourceExhaustedError, match=r"retry in 0\.5 s"):
        who(auth, store.create_token(Role.TENANT, "new", tenant="acme"), flooder)
    assert who(auth, good, "ipv4:10.0.0.7:1").tenant == "acme"  # other peers are not affected
    clock.now += 0.5
    with pytest.raises(UnauthenticatedError):
        who(auth, "nct_made-up-again", flooder)  # the budget refills
    assert len(auth._refused) <= 50


def test_concurrent_bad_tokens_spend_the_budget_before_they_read_the_store(store: CountingStore) -> None:
    auth = Authenticator(store, max_tokens=50, clock=Clock(), failed_burst=5, failed_per_s=2.0)

    async def flood() -> list[BaseException | Principal]:
        calls = [auth.principal(Context(f"nct_made-up-{i}", f"ipv4:10.0.0.66:{i}")) for i in range(100)]  # type: ignore[arg-type]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = [type(o) for o in asyncio.run(flood())]
    assert store.lookups == 5  # every call checked the budget before any read finished: only the burst read
    assert outcomes.count(UnauthenticatedError) == 5 and outcomes.count(ResourceExhaustedError) == 95


def test_peer_host_drops_the_port() -> None:
    assert peer_host("ipv4:10.0.0.1:5000") == "ipv4:10.0.0.1"
    assert peer_host("ipv6:[::1]:5000") == "ipv6:[::1]"
    assert peer_host("unix:/run/neocloud.sock") == "unix:/run/neocloud.sock"
