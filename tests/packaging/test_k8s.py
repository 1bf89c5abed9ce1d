"""Rendered Kubernetes manifests, validated offline against the Kubernetes OpenAPI schemas."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from scoregate.packaging import k8s


def test_manifests_are_valid_and_complete(registry) -> None:  # type: ignore[no-untyped-def]
    version = registry.resolve("credit-risk@1")
    docs = k8s.render(version, image="registry.example/credit-risk:1")
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService"]
    assert k8s.validate_manifests(docs) == []
    deployment = docs[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["runAsUser"] == 10001
    annotations = deployment["metadata"]["annotations"]
    assert annotations["scoregate.io/resources-source"] == "defaults"
    assert annotations["scoregate.io/artifact-digest"] == f"sha256:{version.artifact_digest}"
    assert docs[1]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert docs[2]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert docs[3]["spec"]["predictor"]["containers"][0]["image"] == "registry.example/credit-risk:1"


def test_the_validator_catches_broken_manifests(registry) -> None:  # type: ignore[no-untyped-def]
    docs = k8s.render(registry.resolve("credit-risk@1"))
    broken = copy.deepcopy(docs)
    broken[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    broken[1]["spec"]["ports"][0]["port"] = "eighty"
    broken[2]["spec"]["maxReplicas"] = None
    del broken[3]["spec"]["predictor"]["containers"][0]["image"]
    problems = k8s.validate_manifests(broken)
    assert len(problems) == 4, problems
    assert any("paht" in p for p in problems) and any("eighty" in p for p in problems)


def test_cli_render_writes_checked_yaml(registry, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "manifests.yaml"
    args = ["k8s", "render", "credit-risk@2", "--check", "--cpu-request", "250m", "-o", str(target)]
    code, out = cli(registry.settings.home, *args)
    assert code == 0, out
    docs = list(yaml.safe_load_all(target.read_text()))
    assert len(docs) == 4 and docs[0]["metadata"]["name"] == "credit-risk-v2"
    resources = docs[0]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "250m"
    assert docs[0]["metadata"]["annotations"]["scoregate.io/resources-source"] == "given"
    assert k8s.validate_manifests(docs) == []
    code, out = cli(
        registry.settings.home, "k8s", "render", "credit-risk@1", "--min-replicas", "5", "--max-replicas", "2"
    )
    assert code != 0 and "replicas" in out
