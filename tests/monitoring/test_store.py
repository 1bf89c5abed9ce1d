"""Profiles and results in the registry, on every backend, and against forged or racing writes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from scoregate.config import Settings
from scoregate.errors import ConflictError, IntegrityError, NotFoundError
from scoregate.monitoring import service, store
from scoregate.registry import Registry
from tests.conftest import make_credit_data


@pytest.fixture
def registered(settings: Settings, credit_files: dict[str, Path]) -> Registry:
    registry = Registry(settings)
    for _ in range(2):
        registry.register(
            "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
        )
    return registry


def test_profile_and_result_round_trip(registered: Registry, credit_files: dict[str, Path], tmp_path: Path) -> None:
    version, profile, digest, new = service.record_reference(registered, "credit-risk@1", credit_files["train"])
    assert new and digest == profile.digest()
    stored = store.bound_reference(registered, version)
    assert stored.digest == digest and stored.profile == profile
    current = tmp_path / "current.parquet"
    make_credit_data(300, seed=9).to_parquet(current, index=False)
    run = service.drift_file(registered, "credit-risk@1", current)
    assert run.digest is not None and store.load_result(registered, run.digest) == run.result
    assert [e.result_digest for e in store.history(registered, version)] == [run.digest]
    assert store.history(registered, registered.resolve("credit-risk@2")) == []
    with pytest.raises(NotFoundError, match="has no reference profile"):
        store.bound_reference(registered, registered.resolve("credit-risk@2"))


def test_a_forged_binding_to_another_versions_profile_is_refused(
    registered: Registry, credit_files: dict[str, Path]
) -> None:
    from scoregate.governance.audit import append_event

    _, _, digest, _ = service.record_reference(registered, "credit-risk@1", credit_files["train"])
    with registered.transaction() as session:  # as if written behind the platform's back
        append_event(session, actor="mallory", action=store.REFERENCE_ACTION, subject="credit-risk@2",
                     after={"profile_digest": digest})  # fmt: skip
    with pytest.raises(IntegrityError, match="describes another version"):
        store.bound_reference(registered, registered.resolve("credit-risk@2"))


def test_two_writers_racing_bind_one_profile(sqlite_settings: Settings, credit_files: dict[str, Path]) -> None:
    registry = Registry(sqlite_settings)
    version = registry.register(
        "credit-risk", credit_files["model"], flavor="sklearn", train_data=credit_files["train"], target="default"
    )
    frames = [make_credit_data(2_000, seed=s) for s in (20, 21)]
    profiles = []
    for i, frame in enumerate(frames):
        path = credit_files["train"].with_name(f"ref{i}.parquet")
        frame.to_parquet(path, index=False)
        profiles.append(service.profile_file(registry, version, path))
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def bind(profile) -> None:  # type: ignore[no-untyped-def]
        own = Registry(sqlite_settings)
        barrier.wait()
        try:
            store.record_reference(own, version, profile)
            outcomes.append("bound")
        except ConflictError:
            outcomes.append("refused")
        finally:
            own.close()

    threads = [threading.Thread(target=bind, args=(p,)) for p in profiles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["bound", "refused"]
    assert store.bound_reference(registry, version).digest in {p.digest() for p in profiles}


def test_profiles_are_deterministic_across_formats(registered: Registry, credit_files: dict[str, Path]) -> None:
    version = registered.resolve("credit-risk@1")
    from_parquet = service.profile_file(registered, version, credit_files["train"])
    from_csv = service.profile_file(registered, version, credit_files["train_csv"])
    assert [c.counts for c in from_parquet.columns] == [c.counts for c in from_csv.columns]
    assert np.allclose([c.mean or 0 for c in from_parquet.columns], [c.mean or 0 for c in from_csv.columns])
