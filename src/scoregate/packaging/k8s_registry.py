"""Kubernetes manifests of the registry service (team mode): Deployment, Service and the
NetworkPolicies that let only the service reach the database.

The database URL and the artifact store's credentials stay in Secrets the cluster's owner
creates; the manifests reference them by name and never carry their values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import scoregate
from scoregate.errors import InvalidInputError
from scoregate.packaging.context import USER_ID

REGISTRY_PORT = 8090
NAME = "scoregate-registry"


@dataclass(frozen=True, slots=True)
class RegistryManifest:
    """What the registry's manifests need; one object instead of options through signatures."""

    image: str = f"localhost/scoregate/registry:{scoregate.__version__}"
    namespace: str = "default"
    replicas: int = 2
    workers: int = 2
    database_secret: str = f"{NAME}-database"  # key `url`: SCOREGATE_DATABASE_URL
    store_secret: str = f"{NAME}-store"  # key `url` (SCOREGATE_ARTIFACTS_URL) and the store's keys
    database_selector: str = "app.kubernetes.io/name=postgresql"
    database_port: int = 5432


def parse_selector(text: str) -> dict[str, str]:
    labels = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key or not value:
            raise InvalidInputError(f"invalid --database-selector {text[:80]!r}: expected KEY=VALUE[,KEY=VALUE]")
        labels[key] = value
    return labels


def render_registry(spec: RegistryManifest) -> list[dict[str, Any]]:
    labels = {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/component": "registry",
        "app.kubernetes.io/managed-by": "scoregate",
        "app.kubernetes.io/version": scoregate.__version__,
    }
    selector = {"app.kubernetes.io/name": NAME}
    database = parse_selector(spec.database_selector)
    probe = {"httpGet": {"path": "/api/v1/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3}

    def secret(name: str, key: str) -> dict[str, Any]:
        return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}

    container = {
        "name": "registry",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["scoregate", "server", "--host", "0.0.0.0", "--port", str(REGISTRY_PORT)],
        "args": ["--workers", str(spec.workers)],
        "ports": [{"name": "http", "containerPort": REGISTRY_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "SCOREGATE_HOME", "value": "/var/lib/scoregate"},
            {"name": "SCOREGATE_DATABASE_URL", **secret(spec.database_secret, "url")},
            {"name": "SCOREGATE_ARTIFACTS_URL", **secret(spec.store_secret, "url")},
        ],
        # the store's own credentials (AWS_ACCESS_KEY_ID, ...) as the Secret holds them
        "envFrom": [{"secretRef": {"name": spec.store_secret, "optional": True}}],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {**probe, "failureThreshold": 3},
        "readinessProbe": {**probe, "failureThreshold": 3},
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
        "metadata": {"name": NAME, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": USER_ID,
                        "runAsGroup": USER_ID,
                        "fsGroup": USER_ID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [{"name": "scoregate-home", "emptyDir": {}}],  # staged uploads, cache
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": REGISTRY_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    database_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{NAME}-database-only", "namespace": spec.namespace, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": database},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": selector}}],
                    "ports": [{"protocol": "TCP", "port": spec.database_port}],
                }
            ],
        },
    }
    service_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{NAME}-api-only", "namespace": spec.namespace, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": REGISTRY_PORT}]}],
        },
    }
    return [deployment, service, database_policy, service_policy]
