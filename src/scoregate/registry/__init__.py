"""The model registry: versions, aliases and artifacts, with their lineage."""

from scoregate.registry.records import AliasRecord, LoadedModel, ModelSummary, ModelVersion
from scoregate.registry.service import Registry

__all__ = ["AliasRecord", "LoadedModel", "ModelSummary", "ModelVersion", "Registry"]
