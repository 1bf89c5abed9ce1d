"""scoregate: take a trained model to governed, monitored production scoring."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from scoregate.client import Client


def __getattr__(name: str) -> Any:
    # Lazy so that ``import scoregate`` (and the CLI's start-up) stays cheap.
    if name == "Client":
        from scoregate.client import Client

        return Client
    raise AttributeError(name)


__all__ = ["Client", "__version__"]
