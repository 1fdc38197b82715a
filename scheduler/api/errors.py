"""The one place domain errors become gRPC status codes.

Handlers raise NeocloudError subclasses (or let the store raise them); this
interceptor turns them into the matching status with the error's message as
the details. Anything else is a bug: the client gets INTERNAL with an incident
id, and the traceback goes to the log under that id. Handlers need no
try/except of their own.
"""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, NoReturn

import grpc

from neocloud.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NeocloudError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)

logger = logging.getLogger(__name__)

STATUS_CODES: dict[type[NeocloudError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    # A NeocloudError of no more specific kind still carries a message for a person.
    NeocloudError: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status a domain error maps to, or None for anything that is not one."""
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code, str(error)
    return None


async def _abort(context: grpc.aio.ServicerContext, method: str, error: Exception) -> NoReturn:
    mapped = status_for(error)
    if mapped is None:
        incident = secrets.token_hex(4)
        logger.error("%s failed (incident %s)", method, incident, exc_info=error)
        mapped = grpc.StatusCode.INTERNAL, f"internal error (incident {incident}; the scheduler's log has the details)"
    else:
        logger.debug("%s: %s %s", method, mapped[0].name, mapped[1])
    await context.abort(*mapped)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _wrap_unary(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001 (this is the one place that maps every error)
            await _abort(context, method, e)

    return wrapped


def _wrap_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Streaming responses: an async generator, or a coroutine writing with context.write."""
    if not inspect.isasyncgenfunction(behavior):
        return _wrap_unary(method, behavior)

    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001
            await _abort(context, method, e)

    return wrapped


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Pass to grpc.aio.server(interceptors=[ErrorInterceptor()]).

    `services` limits it to methods of those fully qualified services (e.g.
    "neocloud.v1.JobService"); None (the default) covers every service.
    """

    def __init__(self, services: Collection[str] | None = None) -> None:
        self._services = None if services is None else frozenset(services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or (self._services is not None and method.split("/")[1] not in self._services):
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_wrap_unary(method, handler.unary_unary))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_wrap_unary(method, handler.stream_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_wrap_stream(method, handler.unary_stream))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=_wrap_stream(method, handler.stream_stream))
        return handler
