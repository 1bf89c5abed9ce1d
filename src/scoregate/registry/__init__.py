"""The model registry: versions, aliases and artifacts, with their lineage.

Exports are resolved lazily so that importing a leaf module (``registry.tables``,
say, from the governance tables or a migration) does not import the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scoregate.registry.records import AliasRecord, LoadedModel, ModelSummary, ModelVersion
    from scoregate.registry.service import Registry

_EXPORTS = {
    "AliasRecord": "scoregate.registry.records",
    "LoadedModel": "scoregate.registry.records",
    "ModelSummary": "scoregate.registry.records",
    "ModelVersion": "scoregate.registry.records",
    "Registry": "scoregate.registry.service",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["AliasRecord", "LoadedModel", "ModelSummary", "ModelVersion", "Registry"]
