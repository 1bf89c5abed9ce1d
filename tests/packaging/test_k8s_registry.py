"""`scoregate k8s render --registry`: the registry service's manifests, valid against the
Kubernetes schemas, credentials referenced from Secrets (never inlined), and a NetworkPolicy
that lets only the service reach the database."""

from __future__ import annotations

import yaml

from scoregate.packaging import k8s
from scoregate.packaging.k8s_registry import NAME, RegistryManifest, render_registry


def test_registry_manifests_validate_and_keep_secrets_out() -> None:
    docs = render_registry(RegistryManifest(image="registry.example/scoregate:0.1.0", database_secret="pg-cred"))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "NetworkPolicy", "NetworkPolicy"]
    assert k8s.validate_manifests(docs) == []
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["SCOREGATE_DATABASE_URL"] == {
        "name": "SCOREGATE_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "pg-cred", "key": "url"}},
    }
    assert "value" not in env["SCOREGATE_ARTIFACTS_URL"]
    assert "postgresql://" not in yaml.safe_dump_all(docs)
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/health"
    assert container["command"][:2] == ["scoregate", "server"]

    database = docs[2]["spec"]
    assert database["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "postgresql"}}
    assert database["policyTypes"] == ["Ingress"]
    (rule,) = database["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": NAME}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert docs[1]["spec"]["selector"] == docs[0]["spec"]["selector"]["matchLabels"]


def test_the_cli_renders_them(run) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("k8s", "render", "--registry", "--database-selector", "app=pg,tier=db", "--check")
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    assert docs[2]["spec"]["podSelector"]["matchLabels"] == {"app": "pg", "tier": "db"}
    code, _, err = run("k8s", "render", "--registry", "--database-selector", "nonsense")
    assert code == 3 and "invalid --database-selector" in err
    code, _, err = run("k8s", "render", "credit-risk@1", "--registry")
    assert code == 3 and "give no model" in err
