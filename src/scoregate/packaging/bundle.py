"""The model bundle inside an image: a one-version registry the scoring server serves.

``/opt/model/version.json`` is the version's immutable record and
``/opt/model/artifacts/sha256/<2>/<digest>`` its artifact blob. :class:`BundleSource` is a
:class:`~scoregate.serving.source.ModelSource` over it: the blob is re-hashed before loading
(an altered artifact is refused, as in the registry). ``python -m scoregate.packaging.bundle``
is the image's entry point: ``scoregate serve`` of that one version.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from scoregate.errors import NotFoundError
from scoregate.flavors import get_flavor
from scoregate.flavors.base import Scorer
from scoregate.refs import ModelRef
from scoregate.registry.artifacts import ArtifactStore
from scoregate.registry.records import ModelVersion
from scoregate.serving.source import AliasEntry, VersionInfo

BUNDLE_ENV = "SCOREGATE_BUNDLE"


def read_version(bundle: Path) -> ModelVersion:
    data = json.loads((bundle / "version.json").read_text())
    data.setdefault("status", "registered")
    data.setdefault("aliases", [])
    data.setdefault("tags", {})
    return ModelVersion.model_validate(data)


class BundleSource:
    """Serves exactly the version in the bundle; no aliases, no traffic policies."""

    def __init__(self, bundle: Path, cache_dir: Path) -> None:
        self.bundle = Path(bundle)
        self.record = read_version(self.bundle)
        self.store = ArtifactStore(f"file://{(self.bundle / 'artifacts').resolve()}", cache_dir)
        self.info = VersionInfo(
            name=self.record.name,
            version=self.record.version,
            flavor=self.record.flavor,
            input_schema=self.record.input_schema,
            latency_budget_ms=self.record.latency_budget_ms,
        )

    def revision(self) -> str:
        return "bundle"

    def aliases(self) -> list[AliasEntry]:
        return []

    def policies(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {}

    def resolve(self, ref: str) -> VersionInfo:
        parsed = ModelRef.parse(ref)
        if parsed.name == self.record.name and parsed.version in (None, self.record.version) and parsed.alias is None:
            return self.info
        raise NotFoundError(f"model {ref} is not in this image (it holds {self.record.ref})")

    def load(self, name: str, version: int) -> tuple[VersionInfo, Scorer]:
        if (name, version) != (self.record.name, self.record.version):
            raise NotFoundError(f"model version {name}@{version} is not in this image")
        path = self.store.materialize(self.record.artifact_digest, self.record.artifact_kind, self.record.artifact_name)
        return self.info, get_flavor(self.record.flavor).load(path)


def source_from_settings(settings: Any) -> BundleSource:
    """``run(..., source="scoregate.packaging.bundle:source_from_settings")``."""
    bundle = Path(os.environ.get(BUNDLE_ENV, "/opt/model"))
    return BundleSource(bundle, Path(settings.home) / "cache")


def main(argv: list[str] | None = None) -> None:
    from scoregate.config import Settings
    from scoregate.serving import run

    parser = argparse.ArgumentParser(prog="scoregate-bundle", description="Serve the model version of this image.")
    parser.add_argument("--bundle", default=os.environ.get(BUNDLE_ENV, "/opt/model"))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SCOREGATE_PORT", "8080")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("SCOREGATE_WORKERS", "1")))
    parser.add_argument("--log-level", default=os.environ.get("SCOREGATE_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    os.environ[BUNDLE_ENV] = str(Path(args.bundle).resolve())
    record = read_version(Path(args.bundle))
    run(
        Settings.load(),
        host=args.host,
        port=args.port,
        workers=args.workers,
        models=[record.ref],
        log_level=args.log_level,
        source="scoregate.packaging.bundle:source_from_settings",
    )


if __name__ == "__main__":
    main()
