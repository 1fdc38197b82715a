"""neocloud: sell an AI lab's spare GPU capacity (node agents, a Ray scheduler, metering, the CLI).
`__version__` is the one place the version is written. Importing the package imports nothing else:
`from neocloud import Client` loads the client (and gRPC) only when asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]

if TYPE_CHECKING:
    from neocloud.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from neocloud.client import Client

        return Client
    raise AttributeError(f"module 'neocloud' has no attribute {name!r}")
