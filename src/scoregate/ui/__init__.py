"""The web UI: server-rendered pages over the registry, governance, evidence, audit and
monitoring services (``create_ui``); see ``app``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scoregate.ui.app import create_ui


def __getattr__(name: str) -> Any:
    if name == "create_ui":
        from scoregate.ui.app import create_ui

        return create_ui
    raise AttributeError(name)


__all__ = ["create_ui"]
