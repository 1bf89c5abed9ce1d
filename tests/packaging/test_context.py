"""The build context: the lock, determinism, the Containerfile, scoregate's wheel and the bundle."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from scoregate.errors import IntegrityError, NotFoundError
from scoregate.packaging.bundle import BundleSource
from scoregate.packaging.context import build_context, build_scoregate_wheel, pinned_requirements
from tests.packaging.conftest import TEST_BASE


def test_lock_is_the_recorded_closure_of_scoregate_and_the_flavor(registry) -> None:  # type: ignore[no-untyped-def]
    version = registry.resolve("credit-risk@1")
    recorded = version.environment["lock"]
    pins, _notes = pinned_requirements(version)
    for needed in ("scikit-learn", "numpy", "scipy", "pandas", "uvicorn", "uvloop", "httptools", "sqlalchemy"):
        assert needed in pins, needed
    for dev_only in ("pytest", "moto", "boto3", "ruff", "locust", "scoregate", "pip", "kubernetes-validate"):
        assert dev_only not in pins, dev_only
    for name, pinned in pins.items():
        if name in recorded:
            assert pinned == recorded[name], name


def test_same_version_gives_the_same_context(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = build_context(registry, "credit-risk@1", base=TEST_BASE)
    digest = first.files_digest()
    files = sorted(p.relative_to(first.path).as_posix() for p in first.path.rglob("*") if p.is_file())
    second = build_context(registry, "credit-risk@1", base=TEST_BASE)
    assert second.files_digest() == digest
    assert first.path == Path(registry.settings.home) / "images" / "credit-risk-1"
    assert "Containerfile" in files and "requirements.txt" in files
    assert any(f.startswith("wheels/scoregate-") for f in files)
    version = registry.resolve("credit-risk@1")
    assert f"model/artifacts/sha256/{version.artifact_digest[:2]}/{version.artifact_digest}" in files
    # every requirement is pinned, hashed and has its wheel
    lines = (first.path / "requirements.txt").read_text().splitlines()
    wheels = {p.name.split("-")[0].lower().replace("_", "-") for p in (first.path / "wheels").glob("*.whl")}
    for line in lines:
        name, _, rest = line.partition("==")
        assert "--hash=sha256:" in rest
        assert name in wheels or name.replace("-", "_") in wheels, name
    # the other version's context differs
    assert build_context(registry, "credit-risk@2", base=TEST_BASE).files_digest() != digest


def test_containerfile_runs_as_non_root_with_healthcheck_and_labels(registry) -> None:  # type: ignore[no-untyped-def]
    ctx = build_context(registry, "credit-risk@1", base=TEST_BASE)
    text = (ctx.path / "Containerfile").read_text()
    version = registry.resolve("credit-risk@1")
    assert text.startswith("# Generated") and f"FROM {TEST_BASE}" in text
    assert "USER 10001:10001" in text
    assert "HEALTHCHECK" in text and "/v2/health/ready" in text
    assert "python3 -m venv /opt/scoregate" in text and "--no-index" in text and "--require-hashes" in text
    assert ctx.labels["scoregate.model.name"] == "credit-risk"
    assert ctx.labels["scoregate.model.version"] == "1"
    assert ctx.labels["scoregate.artifact.digest"] == f"sha256:{version.artifact_digest}"
    assert "scoregate.version" in ctx.labels and "org.opencontainers.image.title" in ctx.labels
    for key in ctx.labels:
        assert f"{key}=" in text


def test_scoregate_wheel_is_deterministic_and_complete(tmp_path: Path) -> None:
    a = build_scoregate_wheel(tmp_path / "a")
    b = build_scoregate_wheel(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        names = set(zf.namelist())
        record = zf.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "scoregate/packaging/bundle.py" in names
    assert "scoregate/registry/migrations/alembic.ini" in names or any("migrations" in n for n in names)
    assert not any("__pycache__" in n for n in names)
    assert "Requires-Dist: uvicorn" in metadata
    assert len(record.splitlines()) == len(names)


def test_bundle_serves_exactly_its_version_and_refuses_a_tampered_blob(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctx = build_context(registry, "credit-risk@1", base=TEST_BASE)
    bundle = tmp_path / "model"
    shutil.copytree(ctx.path / "model", bundle)
    record = json.loads((bundle / "version.json").read_text())
    assert "aliases" not in record and "status" not in record
    source = BundleSource(bundle, tmp_path / "cache")
    assert source.resolve("credit-risk").ref == "credit-risk@1"
    with pytest.raises(NotFoundError):
        source.resolve("credit-risk@2")
    _info, scorer = source.load("credit-risk", 1)
    rows = registry.reference_data("credit-risk@1").drop(columns=["default"], errors="ignore").head(20)
    expected = registry.load("credit-risk@1").predict(rows)
    pd.testing.assert_frame_equal(scorer.predict(rows).reset_index(drop=True), expected.reset_index(drop=True))
    # an altered blob is refused, never loaded
    blob = next((bundle / "artifacts").rglob(record["artifact_digest"]))
    blob.write_bytes(blob.read_bytes() + b"x")
    with pytest.raises(IntegrityError):
        BundleSource(bundle, tmp_path / "cache2").load("credit-risk", 1)
