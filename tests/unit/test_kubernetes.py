"""deploy/kubernetes: every manifest valid against the Kubernetes API schemas, offline, and in step with the code.

Each file is checked as written (kubernetes-validate, strict: an unknown or misspelt field fails), and the base
and the overlay as kustomize renders them (`kubectl kustomize`, where kubectl is installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from testkit.kubernetes_docs import KUBERNETES, base_docs, by_kind, documents
from testkit.settings_env import PREFIXES, REPO, variables_read_by

# The oldest Kubernetes these manifests are for: native gRPC probes are GA from 1.27, per-index Job retries
# (backoffLimitPerIndex) from 1.33.
KUBERNETES_VERSION = "1.33.0"
MODEL_SERVICES = {"classifier": 50051, "embedder": 50052, "detector": 50053}
GRPC_PORTS = {**MODEL_SERVICES, "gateway": 50050}


def manifest_files() -> list[Path]:
    """Every Kubernetes object file (kustomizations, their patches and Helm values are not objects)."""
    return sorted(
        path
        for path in KUBERNETES.rglob("*.yaml")
        if path.name != "kustomization.yaml" and path.parent.name != "qdrant-cluster"
    )


def validate(doc: dict, where: str) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except jsonschema.ValidationError as error:  # what kubernetes-validate raises for a schema violation
        path = ".".join(str(part) for part in error.absolute_path)
        pytest.fail(f"{where}: {doc['kind']} {doc['metadata']['name']}: {path}: {error.message}")


def rendered(kustomization: str) -> list[dict]:
    tool = shutil.which("kubectl")
    if tool is None:
        pytest.skip("kubectl is not installed, so kustomize cannot render; each file was still validated alone")
    result = subprocess.run(
        [tool, "kustomize", str(KUBERNETES / kustomization)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: str(path.relative_to(KUBERNETES)))
def test_each_manifest_is_valid_kubernetes(path):
    docs = documents(path)
    assert docs, f"{path} holds no objects"
    for doc in docs:
        validate(doc, str(path.relative_to(REPO)))


@pytest.mark.parametrize("kustomization", ["base", "overlays/qdrant-cluster"])
def test_kustomize_renders_valid_kubernetes(kustomization):
    docs = rendered(kustomization)
    for doc in docs:
        validate(doc, f"kubectl kustomize {kustomization}")
    assert set(by_kind(docs, "Deployment")) == {"classifier", "embedder", "detector", "gateway"}
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fashionsearch"


def test_the_cluster_overlay_swaps_the_single_qdrant_node_for_the_helm_chart():
    base, cluster = rendered("base"), rendered("overlays/qdrant-cluster")
    assert "qdrant" in by_kind(base, "StatefulSet") and "qdrant" in by_kind(base, "Service")
    assert "qdrant" not in by_kind(cluster, "StatefulSet") and "qdrant" not in by_kind(cluster, "Service")
    values = yaml.safe_load((KUBERNETES / "overlays" / "qdrant-cluster" / "qdrant-values.yaml").read_text())
    assert values["config"]["cluster"]["enabled"] is True
    assert values["config"]["storage"]["collection"]["replication_factor"] == 2
    # The chart's Service takes the single node's name, which the gateway's configuration names.
    assert values["fullnameOverride"] == "qdrant"
    gateway = by_kind(cluster, "Deployment")["gateway"]["spec"]["template"]["spec"]
    (wait,) = gateway["initContainers"]
    peers = {env["name"]: env.get("value") for env in wait["env"]}
    assert int(peers["QDRANT_PEERS"]) == values["replicaCount"] >= 3
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    assert f"qdrant/qdrant:{values['image']['tag']}" == compose["services"]["qdrant"]["image"]
    single = by_kind(base_docs(), "StatefulSet")["qdrant"]["spec"]["template"]["spec"]["containers"][0]
    assert single["image"] == compose["services"]["qdrant"]["image"]


@pytest.mark.parametrize("service", sorted(PREFIXES))
def test_every_variable_a_service_reads_is_set_in_its_config_map(service):
    data = by_kind(base_docs(), "ConfigMap")[f"{service}-config"]["data"]
    read = variables_read_by(service)
    assert not read - set(data), f"{service} reads {sorted(read - set(data))}, which its ConfigMap does not set"
    assert not set(data) - read, f"the {service} ConfigMap sets {sorted(set(data) - read)}, which it never reads"
    deployment = by_kind(base_docs(), "Deployment")[service]["spec"]["template"]["spec"]["containers"][0]
    assert deployment["envFrom"] == [{"configMapRef": {"name": f"{service}-config"}}]


def test_services_use_native_grpc_probes_and_request_resources():
    docs = base_docs()
    for name, port in GRPC_PORTS.items():
        container = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, f"{name} {probe}"
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name
        assert {"name": "grpc", "containerPort": port} in container["ports"]


def test_model_services_are_headless_and_autoscaled():
    docs = base_docs()
    services, autoscalers = by_kind(docs, "Service"), by_kind(docs, "HorizontalPodAutoscaler")
    for name in MODEL_SERVICES:
        assert services[name]["spec"]["clusterIP"] == "None", f"{name} must be headless for per-call balancing"
        target = autoscalers[name]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert "replicas" not in by_kind(docs, "Deployment")[name]["spec"], "the autoscaler owns the count"
    config = by_kind(docs, "ConfigMap")["gateway-config"]["data"]
    assert config["GATEWAY_CLASSIFIER_ADDR"] == "classifier:50051"
    assert config["GATEWAY_EMBEDDER_ADDR"] == "embedder:50052"
    assert config["GATEWAY_DETECTOR_ADDR"] == "detector:50053"
    assert config["GATEWAY_QDRANT_URL"] == "http://qdrant:6333"
    assert config["GATEWAY_PEER_LB_POLICY"] == "round_robin", "without it one connection goes to one pod only"
    assert services["gateway"]["spec"].get("clusterIP") != "None"


def test_the_indexer_is_an_indexed_job_one_shard_per_index():
    (job,) = documents(KUBERNETES / "jobs" / "indexer.yaml")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    args = spec["template"]["spec"]["containers"][0]["args"]
    (shard,) = [arg for arg in args if arg.startswith("--shard=")]
    match = re.fullmatch(r"--shard=\$\(JOB_COMPLETION_INDEX\)/(\d+)", shard)
    assert match, shard
    assert int(match.group(1)) == spec["completions"] == spec["parallelism"]
    env = spec["template"]["spec"]["containers"][0]["env"]
    assert {"name": "JOB_COMPLETION_INDEX"} | {"valueFrom": env[0]["valueFrom"]} == env[0]
    (switch,) = documents(KUBERNETES / "jobs" / "indexer-switch.yaml")
    assert "--switch-only" in switch["spec"]["template"]["spec"]["containers"][0]["args"]
