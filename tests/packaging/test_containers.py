"""Real images on the debootstrap base: build, test (validation + parity), a swapped model, deploy.

Marked ``containers``: they need podman/docker and ``scoregate-test-base:bookworm``
(``.ci/containers.sh``); under CI their absence fails the run.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from scoregate.governance.service import Governance
from scoregate.packaging import read_state, stop
from scoregate.packaging.context import write_bundle
from tests.packaging.conftest import TEST_BASE, register_two_versions

pytestmark = pytest.mark.containers
IMAGE_1 = "localhost/scoregate/credit-risk:1"
IMAGE_2 = "localhost/scoregate/credit-risk:2"
TAMPERED = "localhost/scoregate/credit-risk:tampered"
ROW = {"income": 52000.0, "age": 41, "debt_ratio": 0.3, "purpose": "car"}


@pytest.fixture(scope="module")
def built(engine, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """credit-risk@1 and @2 built with the CLI; yields the registry."""
    import scoregate.cli.packaging  # noqa: F401

    root = tmp_path_factory.mktemp("containers")
    registry = register_two_versions(root / "home", root / "files")
    from scoregate.packaging import build_image

    for ref in ("credit-risk@1", "credit-risk@2"):
        build_image(registry, ref, base=TEST_BASE, engine=engine)
    yield registry
    for version in (1, 2):
        engine.run("rmi", "--force", f"localhost/scoregate/credit-risk:{version}", check=False)


def test_build_records_the_image_with_labels_user_and_healthcheck(built, engine, cli) -> None:  # type: ignore[no-untyped-def]
    registry = built
    version = registry.resolve("credit-risk@1")
    code, out = cli(registry.settings.home, "image", "build", "credit-risk@1", "--base", TEST_BASE)
    assert code == 0, out
    assert "built localhost/scoregate/credit-risk:1" in out
    info = engine.inspect_image("localhost/scoregate/credit-risk:1")
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert "/v2/health/ready" in " ".join(engine.image_healthcheck(IMAGE_1)["Test"])
    labels = config["Labels"]
    assert labels["scoregate.model.name"] == "credit-risk" and labels["scoregate.model.version"] == "1"
    assert labels["scoregate.artifact.digest"] == f"sha256:{version.artifact_digest}"
    assert labels["org.opencontainers.image.version"] == "1" and "scoregate.version" in labels
    images = [e for e in Governance(registry).evidence("credit-risk@1") if e["kind"] == "image"]
    assert images, "the build was not recorded as evidence"
    document = json.loads(Governance(registry).read_evidence(images[-1]["digest"]))
    assert document["image_id"] == engine.image_id("localhost/scoregate/credit-risk:1")
    assert document["image_digest"].startswith("sha256:")
    assert document["tag"] == "localhost/scoregate/credit-risk:1" and document["base"] == TEST_BASE
    assert document["labels"]["scoregate.artifact.digest"] == f"sha256:{version.artifact_digest}"


def test_image_test_passes_and_attaches_the_report(built, cli) -> None:  # type: ignore[no-untyped-def]
    registry = built
    before = len([e for e in Governance(registry).evidence("credit-risk@1") if e["kind"] == "validation"])
    code, out = cli(registry.settings.home, "image", "test", "credit-risk@1")
    assert code == 0, out
    assert "passed" in out and "0 mismatches" in out
    evidence = [e for e in Governance(registry).evidence("credit-risk@1") if e["kind"] == "validation"]
    assert len(evidence) == before + 1 and evidence[-1]["passed"] is True
    report = json.loads(Governance(registry).read_evidence(evidence[-1]["digest"]))
    assert report["parity"]["rows_compared"] > 0 and "image localhost/scoregate/credit-risk:1" in report["target"]
    assert report["image"]["label_problem"] is None
    assert report["container"]["peak_rss_bytes"] > 20 * 2**20  # the server with pandas and sklearn loaded
    # k8s render sizes memory from that measurement and says so
    code, out = cli(registry.settings.home, "k8s", "render", "credit-risk@1", "--check")
    assert code == 0, out
    deployment = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    assert deployment["metadata"]["annotations"]["scoregate.io/resources-source"].startswith("measured")
    request = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
    assert int(request.removesuffix("Mi")) >= int(report["container"]["peak_rss_bytes"] * 1.5 / 2**20) - 1


def test_a_swapped_model_fails(built, engine, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry = built
    home = registry.settings.home
    # the image of version 2, tested as version 1: it does not serve what it is tested as
    code, out = cli(home, "image", "test", "credit-risk@1", "--image", IMAGE_2, "--no-record")
    assert code == 1, out
    assert "FAILED" in out and "label" in out
    # version 1's image with its model swapped for version 2's: a consistent, lying bundle whose
    # labels still claim version 1's artifact, so only parity can tell
    v1 = registry.resolve("credit-risk@1")
    v2 = registry.resolve("credit-risk@2")
    context = tmp_path / "tampered"
    context.mkdir()
    record = json.loads((Path(home) / "images" / "credit-risk-1" / "model" / "version.json").read_text())
    record["artifact_digest"] = v2.artifact_digest
    write_bundle(context, record, registry.artifacts.fetch(v2.artifact_digest))
    (context / "Containerfile").write_text(
        f"FROM {IMAGE_1}\nUSER 0\nRUN rm -rf /opt/model\nCOPY model/ /opt/model/\nUSER 10001:10001\n"
    )
    engine.build(str(context), TAMPERED)
    try:
        assert engine.image_labels(TAMPERED)["scoregate.artifact.digest"] == f"sha256:{v1.artifact_digest}"
        code, out = cli(home, "image", "test", "credit-risk@1", "--image", TAMPERED, "--no-record")
        assert code == 1, out
        assert "FAILED" in out and "parity" in out and "label" not in out
        assert "0 mismatches" not in out
    finally:
        engine.run("rmi", "--force", TAMPERED, check=False)


def _load(port: int, stop_event: threading.Event, results: list[tuple[int | None, int | None]]) -> None:
    with httpx.Client(timeout=10.0) as client:  # one kept-alive connection, as pooled clients keep
        while not stop_event.is_set():
            try:
                response = client.post(f"http://127.0.0.1:{port}/models/credit-risk/predict", json={"rows": [ROW]})
                version = response.json().get("version") if response.status_code == 200 else None
                results.append((response.status_code, version))
            except httpx.HTTPError:
                results.append((None, None))
            time.sleep(0.02)


def test_deploy_switches_with_zero_failed_requests_and_rolls_back(built, engine, cli) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import _free_port

    registry = built
    home = registry.settings.home
    port = _free_port()
    code, out = cli(home, "image", "run", "credit-risk@1", "--port", str(port))
    assert code == 0, out
    try:
        stop_event = threading.Event()
        results: list[tuple[int | None, int | None]] = []
        loader = threading.Thread(target=_load, args=(port, stop_event, results), daemon=True)
        loader.start()
        time.sleep(1.0)
        code, out = cli(home, "deploy", "credit-risk@2", "--replace", "credit-risk@1", "--drain", "1")
        assert code == 0, out
        time.sleep(1.0)
        stop_event.set()
        loader.join(timeout=30)
        failed = [r for r in results if r[0] != 200]
        versions = [r[1] for r in results]
        assert not failed, f"{len(failed)} of {len(results)} requests failed during the switch: {failed[:5]}"
        assert 1 in versions and versions[-1] == 2, versions
        assert versions == sorted(versions), "a request went back to the old version after the switch"
        state = read_state(registry, "credit-risk")
        assert state["ref"] == "credit-risk@2" and state["previous"]["ref"] == "credit-risk@1"
        old_container = state["previous"]["container"]
        assert not engine.is_running(old_container)
        # a failing deploy (version 1's name, version 2's model) leaves version 2 serving
        v2_context = Path(home) / "images" / "credit-risk-1"
        del v2_context  # (the tampered image is built in test_a_swapped_model_fails; reuse image 2 as @1 here)
        code, out = cli(
            home,
            "deploy",
            "credit-risk@1",
            "--replace",
            "credit-risk@2",
            "--image",
            "localhost/scoregate/credit-risk:2",
        )
        assert code == 1, out
        assert "refused" in out and "credit-risk@2 keeps serving" in out
        response = httpx.post(
            f"http://127.0.0.1:{port}/models/credit-risk/predict",
            json={"rows": [{"income": 52000.0, "age": 41, "debt_ratio": 0.3, "purpose": "car"}]},
            timeout=10,
        )
        assert response.status_code == 200 and response.json()["version"] == 2
        # rollback is one command
        code, out = cli(home, "deploy", "credit-risk@1", "--replace", "credit-risk@2", "--drain", "0")
        assert code == 0, out
        response = httpx.post(
            f"http://127.0.0.1:{port}/models/credit-risk/predict",
            json={"rows": [{"income": 52000.0, "age": 41, "debt_ratio": 0.3, "purpose": "car"}]},
            timeout=10,
        )
        assert response.status_code == 200 and response.json()["version"] == 1
    finally:
        stop(registry, "credit-risk", engine=engine)
