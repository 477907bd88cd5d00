"""deploy/kubernetes, who may talk to whom and with what: NetworkPolicies admit only the gateway and the indexer Job
to Qdrant and the model services and only Prometheus to metrics ports; Qdrant's API key and the gateway's keys come
from Secrets; no pod holds a service-account token or a writable root file system. Offline, on the files as written
(test_kubernetes.py validates them against the API schemas)."""

from __future__ import annotations

from typing import Any

import yaml

from testkit.kubernetes_docs import KUBERNETES, base_docs, by_kind, documents

PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}
CALLERS = [{"app.kubernetes.io/name": "gateway"}, {"app.kubernetes.io/name": "indexer"}]
METRICS_PORTS = {"gateway": 9100, "classifier": 9101, "embedder": 9102, "detector": 9104}
MODEL_SERVICES = {"classifier": 50051, "embedder": 50052, "detector": 50053}
QDRANT_KEY = {"secretKeyRef": {"name": "qdrant-api-key", "key": "api-key"}}


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod template: the base's Deployments and StatefulSet, and the indexer Jobs."""
    docs = (
        base_docs()
        + documents(KUBERNETES / "jobs" / "indexer.yaml")
        + documents(KUBERNETES / "jobs" / "indexer-switch.yaml")
    )
    return {
        f"{doc['kind']} {doc['metadata']['name']}": doc["spec"]["template"]["spec"]
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def ingress_rules(app: str) -> list[dict[str, Any]]:
    (policy,) = [
        doc
        for doc in by_kind(base_docs(), "NetworkPolicy").values()
        if doc["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": app}}
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress"], app
    return list(policy["spec"]["ingress"])


def admitted(rules: list[dict[str, Any]], port: int) -> list[dict[str, Any] | None]:
    """Who a port admits: each peer's pod labels, or None for a rule without `from` (anyone)."""
    peers: list[dict[str, Any] | None] = []
    for rule in rules:
        if any(p["port"] == port for p in rule["ports"]):
            if "from" not in rule:
                peers.append(None)
            else:
                peers.extend(peer["podSelector"]["matchLabels"] for peer in rule["from"])
    return peers


def test_every_workload_has_an_ingress_policy_and_ports_admit_only_their_callers():
    docs = base_docs()
    workloads = set(by_kind(docs, "Deployment")) | set(by_kind(docs, "StatefulSet"))
    assert workloads == {*MODEL_SERVICES, "gateway", "qdrant"}
    for port in (6333, 6334):
        assert admitted(ingress_rules("qdrant"), port) == CALLERS
    assert admitted(ingress_rules("qdrant"), 6335) == [{"app.kubernetes.io/name": "qdrant"}]  # cluster peers
    for name, port in MODEL_SERVICES.items():
        assert admitted(ingress_rules(name), port) == CALLERS, name
    for port in (50050, 8080):
        assert admitted(ingress_rules("gateway"), port) == [None], "the public API stays open to clients"
    for name, port in METRICS_PORTS.items():
        assert admitted(ingress_rules(name), port) == [PROMETHEUS], name
        every_port = {p["port"] for rule in ingress_rules(name) for p in rule["ports"]}
        container = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        assert {p["containerPort"] for p in container["ports"]} == every_port, f"{name}: a port without a rule"
    # Prometheus in any namespace, selected by its pods' label (deploy/kubernetes/README.md says so).
    (metrics_rule,) = [r for r in ingress_rules("gateway") if r["ports"] == [{"port": 9100}]]
    assert metrics_rule["from"][0]["namespaceSelector"] == {}


def test_the_indexer_pods_carry_the_label_the_policies_admit_and_take_only_scrapes():
    for name in ("indexer.yaml", "indexer-switch.yaml"):
        (job,) = documents(KUBERNETES / "jobs" / name)
        assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "indexer", name
    assert admitted(ingress_rules("indexer"), 9103) == [PROMETHEUS]
    assert {p["port"] for rule in ingress_rules("indexer") for p in rule["ports"]} == {9103}


def test_the_gateway_service_does_not_expose_metrics():
    ports = by_kind(base_docs(), "Service")["gateway"]["spec"]["ports"]
    assert {p["name"] for p in ports} == {"grpc", "http"}


def test_qdrant_requires_an_api_key_from_a_secret_that_the_gateway_and_the_indexer_use():
    docs = base_docs()
    qdrant = by_kind(docs, "StatefulSet")["qdrant"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in qdrant["env"]}
    assert env["QDRANT__SERVICE__API_KEY"]["valueFrom"] == QDRANT_KEY
    gateway = by_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]
    mounted = {m["name"]: m["mountPath"] for m in gateway["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in gateway["volumes"]}
    key_file = by_kind(docs, "ConfigMap")["gateway-config"]["data"]["GATEWAY_QDRANT_API_KEY_FILE"]
    (volume,) = [name for name, path in mounted.items() if key_file.startswith(path + "/")]
    assert volumes[volume]["secret"]["secretName"] == "qdrant-api-key"
    for name in ("indexer.yaml", "indexer-switch.yaml"):
        (job,) = documents(KUBERNETES / "jobs" / name)
        container = job["spec"]["template"]["spec"]["containers"][0]
        job_env = {e["name"]: e for e in container.get("env", [])}
        assert job_env["QDRANT_API_KEY"]["valueFrom"] == QDRANT_KEY, name
    values = yaml.safe_load((KUBERNETES / "overlays" / "qdrant-cluster" / "qdrant-values.yaml").read_text())
    chart_env = {e["name"]: e for e in values["env"]}
    assert chart_env["QDRANT__SERVICE__API_KEY"]["valueFrom"] == QDRANT_KEY


def test_the_gateway_reads_both_key_lists_from_its_secret():
    docs = base_docs()
    data = by_kind(docs, "ConfigMap")["gateway-config"]["data"]
    gateway = by_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]
    (keys,) = [v for v in gateway["volumes"] if v.get("secret", {}).get("secretName") == "gateway-api-keys"]
    paths = {item["path"] for item in keys["secret"]["items"]}
    assert paths == {"read-api-keys", "write-api-keys"}
    assert data["GATEWAY_READ_API_KEYS_FILE"].endswith("/read-api-keys") and data["GATEWAY_READ_API_KEYS"] == ""
    assert data["GATEWAY_WRITE_API_KEYS_FILE"].endswith("/write-api-keys") and data["GATEWAY_WRITE_API_KEYS"] == ""


def test_no_pod_mounts_a_service_account_token_or_writes_its_root_file_system():
    for name, spec in pod_specs().items():
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, f"{name} {container['name']}"
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    # Qdrant writes its "initialized" marker beside its binary unless told where: an emptyDir.
    qdrant = pod_specs()["StatefulSet qdrant"]
    env = {e["name"]: e.get("value") for e in qdrant["containers"][0]["env"]}
    mounts = {m["mountPath"]: m["name"] for m in qdrant["containers"][0]["volumeMounts"]}
    marker_dir = env["QDRANT_INIT_FILE_PATH"].rsplit("/", 1)[0]
    (volume,) = [v for v in qdrant["volumes"] if v["name"] == mounts[marker_dir]]
    assert "emptyDir" in volume
