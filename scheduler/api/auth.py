"""Bearer-token authentication and the rules of who may see and do what.

A call carries `authorization: Bearer <token>` metadata; the token is looked up
by its SHA-256 in the store, and a live one is remembered for a second, so that
a busy client does not cost a store read (and a worker thread) per call.
Revoking a token through this scheduler's store forgets it at once (the store
counts its own writes to the token table); a change made through another
connection shows within the second. Roles: operator (everything, admin
included), internal (the lab's own teams: class internal jobs only), tenant
(its own jobs and contracts only). A job the caller may not see is reported as
not found, so job ids of other tenants do not leak.

A flood of made-up tokens costs little and pushes out nothing: live tokens
are kept least-recently-used first out, refused ones in a bounded cache of
their own (so a repeated bad token is refused without a store read), and a
peer whose tokens the store refused more than FAILED_BURST times, faster
than FAILED_PER_S, is refused with RESOURCE_EXHAUSTED before any store read
until its budget refills. A caller with a remembered live token is never
slowed by that.

A token past its expiry is refused with UNAUTHENTICATED "... expired at <RFC
3339>": a remembered one from the moment it expires (the cache checks the
expiry on every hit, against the wall clock), and an expired one is remembered
as refused like an unknown one, so retrying it costs no store read either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import NoReturn, TypeVar

import grpc

from neocloud.domain.errors import (
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from neocloud.scheduler.policy.types import INTERNAL_TENANT
from neocloud.scheduler.store.admin import fmt_utc, token_hash
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Job, Principal, Role

logger = logging.getLogger(__name__)

_V = TypeVar("_V")

METADATA_KEY = "authorization"
_SCHEME = "bearer"
TOKEN_TABLE = "api_tokens"
CACHE_TTL_S = 1.0
CACHE_MAX_TOKENS = 10_000  # live tokens remembered; as many refused ones again
FAILED_BURST = 20  # refused tokens a peer may try at once...
FAILED_PER_S = 2.0  # ...and then this many a second


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of the one `authorization: Bearer <token>` entry; UnauthenticatedError otherwise."""
    values = [v for k, v in metadata or () if k.lower() == METADATA_KEY]
    if not values:
        raise UnauthenticatedError("no bearer token: pass --token or set NEOCLOUD_TOKEN")
    if len(values) > 1:
        raise UnauthenticatedError("more than one authorization header")
    value = values[0].decode("ascii", "replace") if isinstance(values[0], bytes) else values[0]
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != _SCHEME or not token.strip():
        raise UnauthenticatedError("the authorization header must be 'Bearer <token>'")
    return token.strip()


class Authenticator:
    def __init__(
        self,
        store: JobStore,
        ttl_s: float = CACHE_TTL_S,
        max_tokens: int = CACHE_MAX_TOKENS,
        clock: Callable[[], float] = time.monotonic,
        failed_burst: int = FAILED_BURST,
        failed_per_s: float = FAILED_PER_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Tokens are remembered for `ttl_s` (0: not at all), at most `max_tokens` live
        and as many refused ones; each peer may have `failed_burst` tokens refused at
        once and `failed_per_s` a second after that. `wall`: the Unix time expiries are
        compared with (`clock` only times the cache)."""
        self._store = store
        self._ttl_s = ttl_s
        self._max_tokens = max_tokens
        self._clock = clock
        self._wall = wall
        # token hash -> (principal, the store's write count of the token table then, expiry)
        self._live: OrderedDict[str, tuple[Principal, int, float]] = OrderedDict()
        # token hash -> (write count, expiry, why) of tokens refused
        self._refused: OrderedDict[str, tuple[int, float, str]] = OrderedDict()
        self._failures = _PeerBudget(failed_burst, failed_per_s, max_tokens, clock)
        store.write_count(TOKEN_TABLE)  # start counting now, not on a call's path

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal:
        """Who is calling; UnauthenticatedError for a missing, malformed, unknown, revoked or
        expired token, ResourceExhaustedError for a peer that had too many tokens refused of late."""
        token = bearer_token(context.invocation_metadata())
        key = token_hash(token)
        writes = self._store.write_count(TOKEN_TABLE)  # read before the store: a revoke after it shows
        now = self._clock()
        known = self._live.get(key)
        if known is not None and known[1] == writes and now < known[2]:
            if _expired(known[0], self._wall()):
                self._live.pop(key)
                self._refuse(key, writes, now, _expiry_message(known[0]))
            self._live.move_to_end(key)
            return known[0]
        refused = self._refused.get(key)
        if refused is not None and refused[0] == writes and now < refused[1]:
            raise UnauthenticatedError(refused[2])
        peer = peer_host(context.peer())
        # A store read spends the peer's budget before it starts (concurrent calls cannot all pass the
        # check first); a token that turns out good gives it back.
        if not self._failures.take(peer):
            raise ResourceExhaustedError(
                f"too many unknown or revoked tokens from {peer}: retry in {1 / self._failures.per_s:.1f} s"
            )
        principal = await asyncio.to_thread(self._store.authenticate, token)
        if principal is None or _expired(principal, self._wall()):
            self._live.pop(key, None)
            why = _REFUSED if principal is None else _expiry_message(principal)
            logger.info("refused a call from %s: %s", context.peer(), why)
            self._refuse(key, writes, now, why)
        self._failures.give_back(peer)
        self._refused.pop(key, None)
        if self._ttl_s > 0:
            _remember(self._live, key, (principal, writes, now + self._ttl_s), self._max_tokens)
        return principal

    def _refuse(self, key: str, writes: int, now: float, why: str) -> NoReturn:
        if self._ttl_s > 0:
            _remember(self._refused, key, (writes, now + self._ttl_s, why), self._max_tokens)
        raise UnauthenticatedError(why)

    async def operator(self, context: grpc.aio.ServicerContext) -> Principal:
        principal = await self.principal(context)
        require_operator(principal)
        return principal


_REFUSED = "the token is unknown or revoked: ask your operator for a new one"


def _expired(principal: Principal, wall_now: float) -> bool:
    return principal.expires_at is not None and wall_now >= principal.expires_at


def _expiry_message(principal: Principal) -> str:
    at = fmt_utc(principal.expires_at) if principal.expires_at is not None else "?"
    return f"token {principal.token_name} expired at {at}: ask your operator for a new one (or to rotate it)"


def _remember(cache: OrderedDict[str, _V], key: str, value: _V, most: int) -> None:
    """Put `key` last; past `most` entries, the least recently used go."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > most:
        cache.popitem(last=False)


def peer_host(peer: str) -> str:
    """ "ipv4:10.0.0.1:5000" -> "ipv4:10.0.0.1": a peer's connections share its budget."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class _PeerBudget:
    """A token bucket of failures per peer, `burst` deep, refilling at `per_s`; at
    most `most` peers are tracked, the one that failed longest ago first out."""

    def __init__(self, burst: int, per_s: float, most: int, clock: Callable[[], float]) -> None:
        self.burst, self.per_s, self._most, self._clock = burst, per_s, most, clock
        self._peers: OrderedDict[str, tuple[float, float]] = OrderedDict()  # peer -> (tokens, at)

    def _level(self, peer: str) -> float:
        tokens, at = self._peers.get(peer, (self.burst, 0.0))
        return min(self.burst, tokens + (self._clock() - at) * self.per_s)

    def take(self, peer: str) -> bool:
        """Spend one unit if the peer has one; False (nothing spent) if not."""
        level = self._level(peer)
        if level < 1:
            return False
        _remember(self._peers, peer, (level - 1, self._clock()), self._most)
        return True

    def give_back(self, peer: str) -> None:
        if peer in self._peers:
            _remember(self._peers, peer, (min(self.burst, self._level(peer) + 1), self._clock()), self._most)


def require_operator(principal: Principal) -> None:
    if principal.role is not Role.OPERATOR:
        raise PermissionDeniedError(f"this needs an operator token; yours ({principal.token_name}) is {principal.role}")


def own_tenant(principal: Principal) -> str | None:
    """The tenant whose jobs the caller owns: its tenant, "internal" for internal tokens, None for operators."""
    if principal.role is Role.TENANT:
        return principal.tenant
    if principal.role is Role.INTERNAL:
        return INTERNAL_TENANT
    return None


def can_see(principal: Principal, job: Job) -> bool:
    return principal.role is Role.OPERATOR or job.tenant == own_tenant(principal)


def visible(principal: Principal, job: Job) -> Job:
    """`job` if the caller may see it; NotFoundError (as for a job that does not exist) otherwise."""
    if not can_see(principal, job):
        raise NotFoundError(f"no job {job.job_id!r}")
    return job
