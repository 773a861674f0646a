"""Deploy files, checked offline: they parse, validate against their schemas, promise what
the README says, and reference only metrics the worker exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams import metrics as metrics_module

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.30.0"


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def exported_metrics() -> set[str]:
    registry = CollectorRegistry()
    metrics_module.create(registry)
    names = {"up"}
    for family in registry.collect():
        names.add(family.name)
        for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
            names.add(family.name + suffix)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers followed by { [ or an operator, not functions)."""
    names = set()
    for match in re.finditer(r"\b([a-z_:][a-z0-9_:]*)\b(?!\s*\()", expr):
        word = match.group(1)
        if word.startswith("retention_") or word == "up":
            names.add(word)
    return names


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 12
    for path in files:
        assert documents(path), path


@pytest.mark.parametrize("path", sorted((DEPLOY / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_validate(path: Path) -> None:
    for doc in documents(path):
        if doc.get("apiVersion", "").startswith(("keda.sh/", "monitoring.coreos.com/", "kustomize.config")):
            assert doc["kind"] in {"ScaledObject", "ServiceMonitor", "Kustomization"}
            continue  # custom resources: checked by the tests below
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_autoscaling_never_exceeds_partitions_and_targets_the_worker() -> None:
    (config,) = documents(DEPLOY / "k8s" / "configmap.yaml")
    (scaled,) = documents(DEPLOY / "k8s" / "keda-scaledobject.yaml")
    partitions = int(config["data"]["RETENTION_PARTITIONS"])
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "retention-worker",
    }
    assert scaled["spec"]["triggers"][0]["metadata"]["topic"] == "user-events"


def test_workers_run_as_non_root_with_credentials_from_a_secret() -> None:
    for name in ("statefulset.yaml", "statefulset-gpu.yaml"):
        (doc,) = documents(DEPLOY / "k8s" / name)
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert "secretKeyRef" in env["RETENTION_SASL_PASSWORD"]["valueFrom"]
        # The configmap binds the web server on 0.0.0.0: the user endpoint's token comes from a Secret.
        assert "secretKeyRef" in env["RETENTION_API_TOKEN"]["valueFrom"]
    (gpu,) = documents(DEPLOY / "k8s" / "statefulset-gpu.yaml")
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_configmap_settings_are_real_settings() -> None:
    from streams.settings import Settings

    (config,) = documents(DEPLOY / "k8s" / "configmap.yaml")
    known = {f"RETENTION_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(config["data"]) <= known


def test_compose_has_the_promised_services_and_ports() -> None:
    (compose,) = documents(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"kafka", "worker", "simulator", "prometheus", "grafana"}
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    ports = {port for service in services.values() for port in service.get("ports", [])}
    assert {"9092:9092", "9108:9108", "9090:9090", "3000:3000"} <= ports


def test_dockerfile_is_non_root_with_a_health_check() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text
    assert 'ENTRYPOINT ["retention"]' in text and 'CMD ["worker"]' in text


def test_dashboard_and_rules_use_only_exported_metrics() -> None:
    exported = exported_metrics()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "retention.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for path in (DEPLOY / "prometheus" / "rules").glob("*.yml"):
        for group in documents(path)[0]["groups"]:
            exprs.extend(rule["expr"] for rule in group["rules"])
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, "no metric found in the expressions"
    assert used <= exported, used - exported
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in (
        "lag",
        "latency",
        "risk",
        "interventions",
        "dead letters",
        "holdout",
        "model version",
        "drift",
        "quality",
        "outcomes",
    ):
        assert topic in titles


promtool = shutil.which("promtool")


@pytest.mark.skipif(
    promtool is None, reason="promtool (Debian package prometheus) is not installed; .ci/run installs it"
)
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    rules = sorted(str(p) for p in (DEPLOY / "prometheus" / "rules").glob("*.yml"))
    subprocess.run([promtool, "check", "rules", *rules], check=True, capture_output=True)
    result = subprocess.run(
        [promtool, "test", "rules", "tests/alerts_test.yml"], cwd=DEPLOY / "prometheus", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], cwd=DEPLOY / "prometheus", check=True, capture_output=True
    )


def test_the_policy_configmap_holds_a_policy_file_the_worker_accepts(tmp_path: Path) -> None:
    from retention_model.policy.config import load_policy

    (config,) = documents(DEPLOY / "k8s" / "policy-configmap.yaml")
    path = tmp_path / "policy.toml"
    path.write_text(config["data"]["policy.toml"])
    assert load_policy(path).version
    for name in ("statefulset.yaml", "statefulset-gpu.yaml"):
        (doc,) = documents(DEPLOY / "k8s" / name)
        volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
        assert volumes["policy"]["configMap"]["name"] == "retention-policy"
        mounts = {m["name"]: m["mountPath"] for m in doc["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["policy"] == "/etc/retention" and mounts["models"] == "/models"
