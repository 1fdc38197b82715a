"""The one place domain errors become gRPC status codes.

Handlers raise NeocloudError subclasses (or let the store raise them); this
interceptor turns them into the matching status with the error's message as
the details. A method of the proto the servicer does not implement gets
UNIMPLEMENTED. Anything else is a bug: the client gets INTERNAL with an
incident id, and the traceback goes to the log under that id. Handlers need
no try/except of their own.

Before a handler runs, its call is admitted here: a peer over its share of
calls in progress (calls.py) gets RESOURCE_EXHAUSTED; bytes that do not decode
as the request type, or a field over its limit (limits.py), end the call with
INVALID_ARGUMENT and one log line at a bounded rate, never UNKNOWN with a
traceback (grpc.aio turns a deserializer's exception into exactly that).
Details are cut to MAX_DETAILS_BYTES: they travel as a trailer, and a client
refuses a trailer over 16 KiB with RESOURCE_EXHAUSTED, hiding the real status.
"""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message

from neocloud.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NeocloudError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from neocloud.scheduler.api import limits
from neocloud.scheduler.api.calls import CallsPerPeer
from neocloud.scheduler.ingest.service import RateLimitedLog

logger = logging.getLogger(__name__)

MAX_DETAILS_BYTES = 1024

STATUS_CODES: dict[type[NeocloudError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
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


def short(details: str) -> str:
    """`details` cut to at most MAX_DETAILS_BYTES of UTF-8."""
    data = details.encode()
    if len(data) <= MAX_DETAILS_BYTES:
        return details
    return data[: MAX_DETAILS_BYTES - 3].decode(errors="ignore") + "..."


async def _abort(context: grpc.aio.ServicerContext, method: str, error: Exception) -> NoReturn:
    mapped = status_for(error)
    if isinstance(error, NotImplementedError):
        # A method of the proto (generated servicer base) that this server does not implement.
        mapped = grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server"
    if mapped is None:
        incident = secrets.token_hex(4)
        logger.error("%s failed (incident %s)", method, incident, exc_info=error)
        mapped = grpc.StatusCode.INTERNAL, f"internal error (incident {incident}; the scheduler's log has the details)"
    else:
        logger.debug("%s: %s %s", method, mapped[0].name, short(mapped[1]))
    await context.abort(mapped[0], short(mapped[1]))
    raise AssertionError("context.abort returned")  # pragma: no cover


class Undecodable:
    """What the wrapped deserializer hands over for bytes that are not a request."""

    def __init__(self, size: int, type_name: str, error: str) -> None:
        self.details = f"request does not decode as {type_name} ({size} bytes): {error[:100]}"


_refusals = RateLimitedLog(log=logger)


def _decoding(deserializer: Callable[[bytes], Any], type_name: str, streaming: bool) -> Callable[[bytes], Any]:
    """A deserializer that never raises for bad bytes: a unary request becomes an
    Undecodable (refused in `_admit`); a message of a request stream raises
    InvalidArgumentError from the handler's read, which `_abort` maps."""

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            undecodable = Undecodable(len(data), type_name, str(e))
            if not streaming:
                return undecodable
            _refusals.warning("refused a request: %s", undecodable.details)
            raise InvalidArgumentError(undecodable.details) from None

    return decode


async def _admit(method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
    """Refuse a request that did not decode or has a field over its limit, before its handler."""
    if isinstance(request, Undecodable):
        reason = request.details
    elif isinstance(request, Message) and (over := limits.check(request)):
        reason = f"{over}: request too large"
    else:
        return
    _refusals.warning("refused a call to %s from %s: %s", method, context.peer(), reason)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, short(reason))


def _wrap_unary(
    method: str, behavior: Callable[..., Awaitable[Any]], calls: CallsPerPeer
) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        host = await _enter(method, calls, context)
        try:
            await _admit(method, request, context)
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001 (this is the one place that maps every error)
            await _abort(context, method, e)
        finally:
            calls.leave(host)

    return wrapped


def _wrap_stream(method: str, behavior: Callable[..., Any], calls: CallsPerPeer) -> Callable[..., Any]:
    """Streaming responses: an async generator, or a coroutine writing with context.write."""
    if not inspect.isasyncgenfunction(behavior):
        return _wrap_unary(method, behavior, calls)

    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        host = await _enter(method, calls, context)
        try:
            await _admit(method, request, context)
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001
            await _abort(context, method, e)
        finally:
            calls.leave(host)

    return wrapped


async def _enter(method: str, calls: CallsPerPeer, context: grpc.aio.ServicerContext) -> str:
    try:
        return calls.enter(context.peer())
    except ResourceExhaustedError as e:
        _refusals.warning("refused a call to %s: %s", method, e)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        raise AssertionError("context.abort returned") from e  # pragma: no cover


def _type_name(deserializer: Callable[[bytes], Any], method: str) -> str:
    """The request's message type (a generated deserializer is its class's FromString)."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", f"the request of {method}"))


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Pass to grpc.aio.server(interceptors=[ErrorInterceptor()]).

    `services` limits it to methods of those fully qualified services (e.g.
    "neocloud.v1.JobService"); None (the default) covers every service.
    `max_calls_per_peer` bounds the calls one host has in progress (calls.py).
    """

    def __init__(self, services: Collection[str] | None = None, max_calls_per_peer: int | None = None) -> None:
        self._services = None if services is None else frozenset(services)
        self.calls = CallsPerPeer(max_calls_per_peer)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or (self._services is not None and method.split("/")[1] not in self._services):
            return handler
        if handler.request_deserializer is not None:
            handler = handler._replace(
                request_deserializer=_decoding(
                    handler.request_deserializer,
                    _type_name(handler.request_deserializer, method),
                    handler.request_streaming,
                )
            )
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_wrap_unary(method, handler.unary_unary, self.calls))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_wrap_unary(method, handler.stream_unary, self.calls))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_wrap_stream(method, handler.unary_stream, self.calls))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=_wrap_stream(method, handler.stream_stream, self.calls))
        return handler
