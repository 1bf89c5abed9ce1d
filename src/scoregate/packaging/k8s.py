"""Kubernetes manifests for a model version's image: Deployment, Service, HPA, KServe InferenceService.

Resources come from the caller (a measured profile) or from defaults; either way the
manifest's annotations say which (``scoregate.io/resources-source``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
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


class Target(StrEnum):
    """What the manifests are for: raw Kubernetes objects, or a KServe InferenceService.

    Never both in one stream: ``kubectl apply -f`` of both would run the model twice."""

    K8S = "k8s"
    KSERVE = "kserve"


#: The serving port's name: Knative (under KServe) takes only ``http1`` or ``h2c`` there.
PORT_NAME = "http1"
#: Knative's and KServe's admission webhooks allow these port names only.
_KNATIVE_PORT_NAMES = frozenset({"", "http1", "h2c"})
#: The fields KServe's PredictorSpec adds to a PodSpec (ComponentExtensionSpec and the
#: framework shortcuts); everything else in the predictor is a PodSpec field.
_PREDICTOR_EXTENSIONS = {
    "minReplicas": int,
    "maxReplicas": int,
    "scaleTarget": int,
    "scaleMetric": str,
    "scaleMetricType": str,
    "containerConcurrency": int,
    "timeout": int,
    "canaryTrafficPercent": int,
    "labels": dict,
    "annotations": dict,
    "deploymentStrategy": dict,
    "logger": dict,
    "batcher": dict,
    "model": dict,
}


def _probes(port: int | str) -> dict[str, Any]:
    common = {"periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
    return {
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": port},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": port}, **common},
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": port}, **common},
    }


_CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": USER_ID,
    "runAsGroup": USER_ID,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": USER_ID,
    "runAsGroup": USER_ID,
    "fsGroup": USER_ID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _scrape(port: int) -> dict[str, str]:
    """Prometheus' conventional scrape annotations: the server's /metrics on its own port."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


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
    target: Target | str = Target.K8S,
) -> list[dict[str, Any]]:
    """The manifests of one target as dicts: for ``k8s`` a ServiceAccount, Deployment, Service,
    HorizontalPodAutoscaler and PodDisruptionBudget; for ``kserve`` a ServiceAccount and an
    InferenceService. Every pod meets Pod Security "restricted" (checked by :func:`validate_manifests`)."""
    target = Target(target)
    resources = resources or Resources()
    image = image or image_tag(version.name, version.version)
    app = f"{canonical(version.name)}-v{version.version}"
    labels = _labels(version)
    annotations = _annotations(version, resources, image)
    selector = {"app.kubernetes.io/instance": labels["app.kubernetes.io/instance"]}
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": app, "namespace": namespace, "labels": dict(labels)},
        "automountServiceAccountToken": False,
    }
    if target is Target.KSERVE:
        return [
            account,
            _inference_service(app, namespace, labels, annotations, image, resources, min_replicas, max_replicas),
        ]
    container = {
        "name": "scorer",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": PORT_NAME, "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "env": [{"name": "SCOREGATE_LOG_LEVEL", "value": "info"}],
        "resources": resources.to_k8s(),
        **_probes(PORT_NAME),
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": [{"name": "scoregate-home", "mountPath": "/var/lib/scoregate"}],
    }
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": {**annotations, **_scrape(SERVING_PORT)}},
                "spec": {
                    "serviceAccountName": app,
                    "automountServiceAccountToken": False,
                    "securityContext": dict(_POD_SECURITY),
                    "terminationGracePeriodSeconds": 40,
                    "topologySpreadConstraints": spread,
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
            "ports": [{"name": "http", "port": 80, "targetPort": PORT_NAME, "protocol": "TCP"}],
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
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": namespace, "labels": labels},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    return [account, deployment, service, hpa, budget]


def _inference_service(
    app: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    image: str,
    resources: Resources,
    min_replicas: int,
    max_replicas: int,
) -> dict[str, Any]:
    probes = _probes(SERVING_PORT)  # Knative takes the container's port number (or nothing) in a probe
    del probes["startupProbe"]  # Knative refuses startup probes on the user container
    container = {
        "name": "kserve-container",
        "image": image,
        "ports": [{"name": PORT_NAME, "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "resources": resources.to_k8s(),
        **probes,
        "securityContext": dict(_CONTAINER_SECURITY),
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": app,
            "namespace": namespace,
            "labels": labels,
            "annotations": {**annotations, "serving.kserve.io/enable-prometheus-scraping": "true"},
        },
        "spec": {
            "predictor": {
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "annotations": _scrape(SERVING_PORT),
                "serviceAccountName": app,
                "automountServiceAccountToken": False,
                "securityContext": dict(_POD_SECURITY),
                "containers": [container],
            }
        },
    }


class _NoAliases(yaml.SafeDumper):
    """Writes a dict used twice out twice: anchors (``&id001``) trip reviewers and some tools."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=_NoAliases, sort_keys=False, default_flow_style=False)


def _pod_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(where, pod spec, under Knative) of every pod a document makes."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [("spec.template.spec", ((spec.get("template") or {}).get("spec") or {}), False)]
    if kind == "Pod":
        return [("spec", spec, False)]
    if kind == "InferenceService":
        return [
            (f"spec.{part}", spec[part], True)
            for part in ("predictor", "transformer", "explainer")
            if isinstance(spec.get(part), dict)
        ]
    return []


def _restricted(where: str, pod: dict[str, Any]) -> list[str]:
    """Pod Security Standards, "restricted" profile (the checks that apply to these pods)."""
    problems = []
    pod_security = pod.get("securityContext") or {}
    pod_seccomp = (pod_security.get("seccompProfile") or {}).get("type")
    for i, container in enumerate(pod.get("containers") or []):
        at = f"{where}.containers[{i}]"
        security = container.get("securityContext") or {}
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}.securityContext.allowPrivilegeEscalation must be false (restricted)")
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{at}.securityContext.capabilities.drop must include ALL (restricted)")
        if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
            problems.append(f"{at}: runAsNonRoot must be true on the pod or the container (restricted)")
        seccomp = (security.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}: seccompProfile.type must be RuntimeDefault or Localhost (restricted)")
        if security.get("privileged"):
            problems.append(f"{at}.securityContext.privileged must not be true (restricted)")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"{where}.volumes: hostPath volume {volume.get('name')!r} is not allowed (restricted)")
    return problems


def _quantity(text: Any) -> float | None:
    """A Kubernetes quantity (``500m``, ``1``, ``512Mi``, ``1G``) as a number, or None if malformed."""
    import re

    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", str(text))
    if not match:
        return None
    scale = {
        None: 1,
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "E": 1e18,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
    }
    return float(match.group(1)) * scale[match.group(2)]


def _admission(where: str, pod: dict[str, Any], knative: bool) -> list[str]:
    """What the admission webhooks check beyond the schema: each probe names a port the
    container declares, container names (DNS labels, unique; KServe's own name), resource
    quantities with requests within limits, and under Knative its rules on ports and probes."""
    import re

    problems = []
    containers = pod.get("containers") or []
    names = [c.get("name") for c in containers]
    if len(set(names)) != len(names):
        problems.append(f"{where}.containers: names must be unique (got {names})")
    if knative and len(containers) > 1 and sum(1 for c in containers if c.get("ports")) != 1:
        problems.append(f"{where}.containers: Knative needs exactly one container with a port")
    for i, container in enumerate(containers):
        at = f"{where}.containers[{i}]"
        name = container.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
            problems.append(f"{at}.name {name!r} is not a DNS label (lowercase letters, digits, '-'; 63 at most)")
        if knative and i == 0 and name != "kserve-container":
            problems.append(f"{at}.name must be 'kserve-container' for KServe (got {name!r})")
        ports = container.get("ports") or []
        port_names = {p.get("name") for p in ports if p.get("name")}
        numbers = {p.get("containerPort") for p in ports}
        if knative:
            if len(ports) > 1:
                problems.append(f"{at}.ports: Knative allows one port (got {len(ports)})")
            for port in ports:
                if (port.get("name") or "") not in _KNATIVE_PORT_NAMES:
                    problems.append(
                        f"{at}.ports: Knative takes the port names http1 or h2c only (got {port['name']!r})"
                    )
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(probe_name)
            if not isinstance(probe, dict):
                continue
            if knative and probe_name == "startupProbe":
                problems.append(f"{at}.startupProbe: Knative does not allow a startup probe on the user container")
            handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
            if not isinstance(handler, dict) or "port" not in handler:
                continue
            port = handler["port"]
            if isinstance(port, str) and port not in port_names:
                declared = ", ".join(sorted(port_names)) or "none"
                problems.append(
                    f"{at}.{probe_name} names port {port!r}, which the container does not declare "
                    f"(its named ports: {declared})"
                )
            elif isinstance(port, int) and port not in numbers:
                problems.append(f"{at}.{probe_name} uses port {port}, which the container does not declare")
        limits = (container.get("resources") or {}).get("limits") or {}
        requests = (container.get("resources") or {}).get("requests") or {}
        for kind, table in (("requests", requests), ("limits", limits)):
            for resource, value in table.items():
                if _quantity(value) is None:
                    problems.append(f"{at}.resources.{kind}.{resource}: {value!r} is not a quantity")
        for resource, value in requests.items():
            low, high = _quantity(value), _quantity(limits.get(resource)) if resource in limits else None
            if low is not None and high is not None and low > high:
                problems.append(f"{at}.resources: the {resource} request {value} exceeds its limit {limits[resource]}")
    return problems


def validate_manifests(documents: list[dict[str, Any]], kubernetes_version: str | None = None) -> list[str]:
    """Problems found the way the cluster would find them: each object against the Kubernetes
    OpenAPI schemas (``kubernetes-validate``), an InferenceService's pod spec against the
    PodSpec schema with KServe's own fields checked by type, Pod Security "restricted" on every
    pod, and what the admission webhooks check (:func:`_admission`); a stream that mixes raw
    Kubernetes workloads and KServe (the model would run twice) is refused too."""
    import kubernetes_validate

    version = kubernetes_version or kubernetes_validate.latest_version()
    problems: list[str] = []
    kinds = {doc.get("kind") for doc in documents}
    if "InferenceService" in kinds and kinds & {"Deployment", "StatefulSet", "DaemonSet"}:
        problems.append("the stream holds both a Deployment and an InferenceService: apply would run the model twice")
    for doc in documents:
        what = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        if str(doc.get("apiVersion", "")).startswith("serving.kserve.io/"):
            problems.extend(f"{what}: {p}" for p in _kserve_schema(doc, version))
        else:
            problems.extend(f"{what}: {p}" for p in _schema(doc, version))
        for where, pod, knative in _pod_specs(doc):
            problems.extend(f"{what}: {p}" for p in _restricted(where, pod) + _admission(where, pod, knative))
    return problems


def _schema(doc: dict[str, Any], version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return [f"{path}: {exc.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
        return [str(exc)]
    return []


def _kserve_schema(doc: dict[str, Any], version: str) -> list[str]:
    """An InferenceService: its predictor is a PodSpec plus KServe's extension fields."""
    if doc.get("kind") != "InferenceService" or doc.get("apiVersion") != "serving.kserve.io/v1beta1":
        return [f"expected serving.kserve.io/v1beta1 InferenceService, got {doc.get('apiVersion')} {doc.get('kind')}"]
    spec = doc.get("spec") or {}
    predictor = spec.get("predictor")
    if not isinstance(predictor, dict):
        return ["spec.predictor is required"]
    problems = []
    unknown = sorted(set(spec) - {"predictor", "transformer", "explainer"})
    if unknown:
        problems.append(f"spec: unknown fields {unknown}")
    pod_spec = {}
    for key, value in predictor.items():
        expected = _PREDICTOR_EXTENSIONS.get(key)
        if expected is None:
            pod_spec[key] = value
        elif not isinstance(value, expected) or isinstance(value, bool):
            problems.append(f"spec.predictor.{key}: expected {expected.__name__}, got {type(value).__name__}")
    containers = pod_spec.get("containers") or []
    if not containers or not all(isinstance(c, dict) and c.get("image") for c in containers):
        problems.append("spec.predictor.containers[0].image is required")
        return problems
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    problems.extend(p.replace("spec.", "spec.predictor.", 1) for p in _schema(pod, version))
    return problems
