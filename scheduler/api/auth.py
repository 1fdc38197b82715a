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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import grpc

from neocloud.domain.errors import NotFoundError, PermissionDeniedError, UnauthenticatedError
from neocloud.scheduler.policy.types import INTERNAL_TENANT
from neocloud.scheduler.store.admin import token_hash
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Job, Principal, Role

logger = logging.getLogger(__name__)

METADATA_KEY = "authorization"
_SCHEME = "bearer"
TOKEN_TABLE = "api_tokens"
CACHE_TTL_S = 1.0
CACHE_MAX_TOKENS = 10_000


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
    ) -> None:
        """Live tokens are remembered for `ttl_s` (0: not at all), at most `max_tokens` of them."""
        self._store = store
        self._ttl_s = ttl_s
        self._max_tokens = max_tokens
        self._clock = clock
        # token hash -> (principal, the store's write count of the token table then, expiry)
        self._live: dict[str, tuple[Principal, int, float]] = {}
        store.write_count(TOKEN_TABLE)  # start counting now, not on a call's path

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal:
        """Who is calling; UnauthenticatedError for a missing, malformed, unknown or revoked token."""
        token = bearer_token(context.invocation_metadata())
        key = token_hash(token)
        writes = self._store.write_count(TOKEN_TABLE)  # read before the store: a revoke after it shows
        now = self._clock()
        known = self._live.get(key)
        if known is not None and known[1] == writes and now < known[2]:
            return known[0]
        principal = await asyncio.to_thread(self._store.authenticate, token)
        if principal is None:
            self._live.pop(key, None)
            logger.info("refused a call from %s: unknown or revoked token", context.peer())
            raise UnauthenticatedError("the token is unknown or revoked: ask your operator for a new one")
        if self._ttl_s > 0:
            if len(self._live) >= self._max_tokens:
                self._live = {k: v for k, v in self._live.items() if v[1] == writes and now < v[2]}
                if len(self._live) >= self._max_tokens:
                    self._live.clear()
            self._live[key] = (principal, writes, now + self._ttl_s)
        return principal

    async def operator(self, context: grpc.aio.ServicerContext) -> Principal:
        principal = await self.principal(context)
        require_operator(principal)
        return principal


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
