"""Bearer-token authentication and the rules of who may see and do what.

A call carries `authorization: Bearer <token>` metadata; the token is looked up
by its SHA-256 in the store. Roles: operator (everything, admin included),
internal (the lab's own teams: class internal jobs only), tenant (its own jobs
and contracts only). A job the caller may not see is reported as not found, so
job ids of other tenants do not leak.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc

from neocloud.errors import NotFoundError, PermissionDeniedError, UnauthenticatedError
from neocloud.scheduler.policy.types import INTERNAL_TENANT
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Job, Principal, Role

logger = logging.getLogger(__name__)

METADATA_KEY = "authorization"
_SCHEME = "bearer"


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
    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal:
        """Who is calling; UnauthenticatedError for a missing, malformed, unknown or revoked token."""
        token = bearer_token(context.invocation_metadata())
        principal = await asyncio.to_thread(self._store.authenticate, token)
        if principal is None:
            logger.info("refused a call from %s: unknown or revoked token", context.peer())
            raise UnauthenticatedError("the token is unknown or revoked: ask your operator for a new one")
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
