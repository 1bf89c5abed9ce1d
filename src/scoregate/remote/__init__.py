"""Clients of a registry service (``scoregate server``): the same interface as the embedded
``Registry`` and ``Governance``, over HTTP, for ``SCOREGATE_URL``."""

from scoregate.remote.governance import RemoteGovernance
from scoregate.remote.registry import RemoteRegistry

__all__ = ["RemoteGovernance", "RemoteRegistry"]
