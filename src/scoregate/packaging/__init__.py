"""Containerized models: an OCI image per model version, its tests, a side-by-side deploy and
Kubernetes manifests.

``build_image`` generates a deterministic build context under ``<home>/images/<name>-<version>/``
(Containerfile, pinned and hashed requirements with vendored wheels, the artifact by digest
and the version's record) and builds it offline; ``test_image`` runs the validation suite
with parity against a running container; ``run_image`` / ``deploy`` serve it behind a
stable port whose upstream is switched atomically; ``k8s.render`` writes the manifests.
"""

from scoregate.packaging.context import DEFAULT_BASE, BuildContext, build_context, image_tag
from scoregate.packaging.engine import Engine, EngineError
from scoregate.packaging.service import (
    BuiltImage,
    DeployResult,
    ImageTestResult,
    build_image,
    deploy,
    read_state,
    run_image,
    stop,
    test_image,
)

__all__ = [
    "DEFAULT_BASE",
    "BuildContext",
    "BuiltImage",
    "DeployResult",
    "Engine",
    "EngineError",
    "ImageTestResult",
    "build_context",
    "build_image",
    "deploy",
    "image_tag",
    "read_state",
    "run_image",
    "stop",
    "test_image",
]
