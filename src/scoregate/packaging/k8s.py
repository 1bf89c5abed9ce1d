"""Kubernetes manifests for a model version's image: Deployment, Service, HPA, KServe InferenceService.

Resources come from the caller (a measured profile) or from defaults; either way the
manifest's annotations say which (``scoregate.io/resources-source``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

import scoregate
from scoregate.packaging.context import SERVING_PORT, USER_ID, canonical, image_tag


@dataclass(frozen=True)
class Resources:
    cpu_request: str = "500m"
    cpu_limit: str = "1"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"
    source: str = "defaults"

    def to_k8s(self) -> dict[str, Any]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def _mib(n: float) -> str:
    return f"{max(1, round(n / 2**20))}Mi"


def measured_resources(registry: Any, ref: str) -> Resources:
    """Memory from the latest ``image test`` measurement (peak RSS of the server), else defaults.

    Request = 1.5 x the peak (at least 128Mi), limit = 2 x the request. CPU has no measurement
    here and keeps the defaults. The source is written to the manifests' annotations.
    """
    import json

    from scoregate.governance.service import Governance

    governance = Governance(registry)
    for evidence in reversed(governance.evidence(ref)):
        if evidence["kind"] != "validation":
            continue
        try:
            document = json.loads(governance.read_evidence(evidence["digest"]))
        except ValueError:
            continue
        peak = (document.get("container") or {}).get("peak_rss_bytes")
        if peak:
            request = max(peak * 1.5, 128 * 2**20)
            return Resources(
                memory_request=_mib(request),
                memory_limit=_mib(request * 2),
                source=f"measured: peak RSS {_mib(peak)} in image test (evidence #{evidence['id']}); cpu defaults",
            )
    return Resources()


def _labels(version: Any) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": canonical(version.name),
        "app.kubernetes.io/instance": f"{canonical(version.name)}-v{version.version}",
        "app.kubernetes.io/version": str(version.version),
        "app.kubernetes.io/managed-by": "scoregate",
        "scoregate.io/model": canonical(version.name),
    }


def _annotations(version: Any, resources: Resources, image: str) -> dict[str, str]:
    return {
        "scoregate.io/model-ref": version.ref,
        "scoregate.io/artifact-digest": f"sha256:{version.artifact_digest}",
        "scoregate.io/image": image,
        "scoregate.io/resources-source": resources.source,
        "scoregate.io/scoregate-version": scoregate.__version__,
    }


def render(
    version: Any,
    *,
    image: str | None = None,
    namespace: str = "default",
    replicas: int = 2,
    min_replicas: int = 2,
    max_replicas: int = 10,
    cpu_target: int = 70,
    resources: Resources | None = None,
) -> list[dict[str, Any]]:
    """The manifests as dicts (Deployment, Service, HorizontalPodAutoscaler, InferenceService)."""
    resources = resources or Resources()
    image = image or image_tag(version.name, version.version)
    app = f"{canonical(version.name)}-v{version.version}"
    labels = _labels(version)
    annotations = _annotations(version, resources, image)
    selector = {"app.kubernetes.io/instance": labels["app.kubernetes.io/instance"]}
    probe_common = {"periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
    container = {
        "name": "scorer",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "env": [{"name": "SCOREGATE_LOG_LEVEL", "value": "info"}],
        "resources": resources.to_k8s(),
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, **probe_common},
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, **probe_common},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "scoregate-home", "mountPath": "/var/lib/scoregate"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": USER_ID,
                        "runAsGroup": USER_ID,
                        "fsGroup": USER_ID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 40,
                    "containers": [container],
                    "volumes": [{"name": "scoregate-home", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": canonical(version.name), "namespace": namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "namespace": namespace, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu_target}},
                }
            ],
        },
    }
    inference_service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": app, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "predictor": {
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": image,
                        "ports": [{"containerPort": SERVING_PORT, "protocol": "TCP"}],
                        "resources": resources.to_k8s(),
                        "readinessProbe": container["readinessProbe"],
                        "livenessProbe": container["livenessProbe"],
                        "securityContext": container["securityContext"],
                    }
                ],
            }
        },
    }
    return [deployment, service, hpa, inference_service]


def to_yaml(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def validate_manifests(documents: list[dict[str, Any]], kubernetes_version: str | None = None) -> list[str]:
    """Problems found by validating against the Kubernetes OpenAPI schemas (``kubernetes-validate``).

    Custom resources (the KServe InferenceService) have no schema there; they are
    checked for their required structure only.
    """
    import kubernetes_validate

    version = kubernetes_version or kubernetes_validate.latest_version()
    problems: list[str] = []
    for doc in documents:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion", "").startswith("serving.kserve.io/"):
            containers = doc.get("spec", {}).get("predictor", {}).get("containers") or []
            if doc.get("kind") != "InferenceService" or not containers or not containers[0].get("image"):
                problems.append(f"{what}: an InferenceService needs spec.predictor.containers[0].image")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{what}: {path}: {exc.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            problems.append(f"{what}: {exc}")
    return problems
