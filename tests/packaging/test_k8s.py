"""Rendered Kubernetes and KServe manifests, validated offline against the Kubernetes OpenAPI
schemas (kubernetes-validate), Pod Security "restricted" and the admission webhooks' rules."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from scoregate.packaging import k8s


def _pod(doc):
    return doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]["predictor"]


def test_k8s_manifests_are_valid_and_complete(registry) -> None:  # type: ignore[no-untyped-def]
    version = registry.resolve("credit-risk@1")
    docs = k8s.render(version, image="registry.example/credit-risk:1")
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    assert k8s.validate_manifests(docs) == []
    account, deployment, service, hpa, budget = docs
    pod = _pod(deployment)
    container = pod["containers"][0]
    assert container["ports"][0]["name"] == "http1"
    assert {container[p]["httpGet"]["port"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {"http1"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    assert template["prometheus.io/scrape"] == "true" and template["prometheus.io/path"] == "/metrics"
    annotations = deployment["metadata"]["annotations"]
    assert annotations["scoregate.io/resources-source"] == "defaults"
    assert annotations["scoregate.io/artifact-digest"] == f"sha256:{version.artifact_digest}"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http1"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert "&id" not in k8s.to_yaml(docs) and "*id" not in k8s.to_yaml(docs)  # no YAML anchors


def test_kserve_manifests_are_separate_and_valid(registry) -> None:  # type: ignore[no-untyped-def]
    docs = k8s.render(registry.resolve("credit-risk@1"), image="registry.example/credit-risk:1", target="kserve")
    assert [d["kind"] for d in docs] == ["ServiceAccount", "InferenceService"]  # never with a Deployment
    assert k8s.validate_manifests(docs) == []
    predictor = docs[1]["spec"]["predictor"]
    container = predictor["containers"][0]
    assert container["name"] == "kserve-container" and container["image"] == "registry.example/credit-risk:1"
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["port"] == 8080
    assert predictor["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert predictor["automountServiceAccountToken"] is False
    assert predictor["annotations"]["prometheus.io/scrape"] == "true"
    assert "&id" not in k8s.to_yaml(docs)


def test_a_probe_naming_a_port_the_container_lacks_fails(registry) -> None:  # type: ignore[no-untyped-def]
    for target in ("k8s", "kserve"):
        docs = k8s.render(registry.resolve("credit-risk@1"), target=target)
        broken = copy.deepcopy(docs)
        pod = _pod(broken[1])
        del pod["containers"][0]["ports"][0]["name"]  # the old rendering: an unnamed port...
        pod["containers"][0]["readinessProbe"]["httpGet"]["port"] = "http"  # ...and probes naming "http"
        problems = k8s.validate_manifests(broken)
        assert any("readinessProbe names port 'http', which the container does not declare" in p for p in problems), (
            target,
            problems,
        )


def test_the_validator_catches_broken_manifests(registry) -> None:  # type: ignore[no-untyped-def]
    docs = k8s.render(registry.resolve("credit-risk@1"))
    broken = copy.deepcopy(docs)
    broken[1]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    broken[2]["spec"]["ports"][0]["port"] = "eighty"
    broken[3]["spec"]["maxReplicas"] = None
    problems = k8s.validate_manifests(broken)
    assert len(problems) == 3, problems
    assert any("paht" in p for p in problems) and any("eighty" in p for p in problems)

    restricted = copy.deepcopy(docs)
    pod = restricted[1]["spec"]["template"]["spec"]
    del pod["securityContext"]["seccompProfile"]
    del pod["containers"][0]["securityContext"]["seccompProfile"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["containers"][0]["name"] = "Scorer_1"
    pod["containers"][0]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1", "memory": "lots"}}
    problems = k8s.validate_manifests(restricted)
    text = "\n".join(problems)
    for expected in (
        "seccompProfile.type must be RuntimeDefault",
        "allowPrivilegeEscalation must be false",
        "'Scorer_1' is not a DNS label",
        "the cpu request 2 exceeds its limit 1",
        "'lots' is not a quantity",
    ):
        assert expected in text, (expected, problems)


def test_kserve_rules_and_its_schema(registry) -> None:  # type: ignore[no-untyped-def]
    docs = k8s.render(registry.resolve("credit-risk@1"), target="kserve")
    broken = copy.deepcopy(docs)
    predictor = broken[1]["spec"]["predictor"]
    container = predictor["containers"][0]
    container["ports"][0]["name"] = "web"
    container["name"] = "scorer"
    container["startupProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    container["readinessProbe"]["httpGet"]["port"] = 9090
    predictor["minReplicas"] = "two"
    predictor["nodeSelektor"] = {}  # not a PodSpec field: the Kubernetes schema finds it
    text = "\n".join(k8s.validate_manifests(broken))
    for expected in (
        "port names http1 or h2c only",
        "must be 'kserve-container'",
        "does not allow a startup probe",
        "uses port 9090, which the container does not declare",
        "minReplicas: expected int",
        "nodeSelektor",
    ):
        assert expected in text, (expected, text)

    mixed = k8s.render(registry.resolve("credit-risk@1")) + docs
    assert any("run the model twice" in p for p in k8s.validate_manifests(mixed))


def test_cli_render_writes_checked_yaml(registry, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "manifests.yaml"
    args = ["k8s", "render", "credit-risk@2", "--check", "--cpu-request", "250m", "-o", str(target)]
    code, out = cli(registry.settings.home, *args)
    assert code == 0, out
    docs = list(yaml.safe_load_all(target.read_text()))
    assert len(docs) == 5 and docs[1]["metadata"]["name"] == "credit-risk-v2"
    resources = docs[1]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "250m"
    assert docs[1]["metadata"]["annotations"]["scoregate.io/resources-source"] == "given"
    assert k8s.validate_manifests(docs) == []

    kserve = tmp_path / "kserve.yaml"
    code, out = cli(
        registry.settings.home, "k8s", "render", "credit-risk@2", "--check", "--target", "kserve", "-o", str(kserve)
    )
    assert code == 0, out
    assert [d["kind"] for d in yaml.safe_load_all(kserve.read_text())] == ["ServiceAccount", "InferenceService"]

    code, out = cli(registry.settings.home, "k8s", "render", "credit-risk@1", "--target", "helm")
    assert code != 0 and "--target" in out
    code, out = cli(
        registry.settings.home, "k8s", "render", "credit-risk@1", "--min-replicas", "5", "--max-replicas", "2"
    )
    assert code != 0 and "replicas" in out
