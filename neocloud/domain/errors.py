"""One error hierarchy for the domain; the gRPC layer maps it to status codes
in one place (scheduler/api), never per handler."""

from __future__ import annotations


class NeocloudError(Exception):
    """Base of every error a person should read; the message says what to do."""


class InvalidArgumentError(NeocloudError):
    """A request field is malformed or out of range."""


class NotFoundError(NeocloudError):
    """The named object does not exist (or the caller may not see it)."""


class AlreadyExistsError(NeocloudError):
    """An object with that name exists already."""


class PermissionDeniedError(NeocloudError):
    """The caller is known but may not do this."""


class UnauthenticatedError(NeocloudError):
    """No valid credentials."""


class FailedPreconditionError(NeocloudError):
    """The request is valid but the system is not in a state to honour it."""


class ResourceExhaustedError(NeocloudError):
    """The caller has used up a limit (a rate, a count); it may retry later."""


class UnavailableError(NeocloudError):
    """Something it needs is gone for now (a node between its placement and its start): try again."""
