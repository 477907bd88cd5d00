"""The compose file is valid, and configures every variable the services read."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from testkit.settings_env import PREFIXES as SERVICES
from testkit.settings_env import variables_read_by

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "docker-compose.yml"


def compose_services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_variable_a_service_reads_is_set_in_compose(service):
    environment = compose_services()[service]["environment"]
    missing = variables_read_by(service) - set(environment)
    assert not missing, f"{service} reads {sorted(missing)} but deploy/docker-compose.yml does not set them"
    unknown = {name for name in environment if name.startswith(SERVICES[service])} - variables_read_by(service)
    assert not unknown, f"compose sets {sorted(unknown)} for {service}, which it never reads"


def _documented(variable: str, prefix: str, doc: str) -> bool:
    """Named in the operations guide: itself, as `*_NAME` for every service, or as `NAME(_FILE)`."""
    return any(
        (
            f"`{variable}`" in doc,
            f"`*_{variable.removeprefix(prefix)}`" in doc,
            f"`{variable.removesuffix('_FILE')}(_FILE)`" in doc,
        )
    )


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_variable_a_service_reads_is_documented(service):
    doc = (REPO / "deploy" / "README.md").read_text()
    missing = sorted(v for v in variables_read_by(service) if not _documented(v, SERVICES[service], doc))
    assert not missing, f"{service} reads {missing} but deploy/README.md does not say what they do"


def test_only_the_gateway_publishes_ports_and_images_are_pinned():
    services = compose_services()
    # Of the services that run by default; the monitoring profile's publish on loopback (tests/unit/test_monitoring.py).
    published = [
        name for name, spec in services.items() if spec.get("ports") and "monitoring" not in spec.get("profiles", ())
    ]
    assert published == ["gateway"]
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", services["qdrant"]["image"])
    for name, spec in services.items():
        assert "healthcheck" in spec or name == "indexer", f"{name} has no health check"
    assert "index" in services["indexer"]["profiles"]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+ AS", dockerfile, re.M)
    serving = [line for line in (REPO / "requirements" / "serving.txt").read_text().splitlines() if line[:1] != "#"]
    assert not [line for line in serving if "tensorflow" in line.lower()], "serving images must not carry TensorFlow"
    assert "USER app" in dockerfile


def test_compose_config_validates():
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install --no-install-recommends docker-compose)")
    result = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


CLUSTER = REPO / "deploy" / "docker-compose.cluster.yml"


def test_cluster_variant_runs_three_replicated_nodes_behind_the_same_address():
    services = yaml.safe_load(CLUSTER.read_text())["services"]
    nodes = [name for name in services if name.startswith("qdrant")]
    assert len(nodes) == 3
    for name in nodes:
        env = services[name]["environment"]
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        assert env["QDRANT__STORAGE__COLLECTION__REPLICATION_FACTOR"] == "2"
    assert set(services["gateway"]["depends_on"]) >= set(nodes)
    # The gateway's configuration is untouched: it reaches the cluster through node 1's name.
    assert "environment" not in services["gateway"]
    assert compose_services()["gateway"]["environment"]["GATEWAY_QDRANT_URL"] == "http://qdrant:6333"


def test_cluster_variant_validates_as_an_override():
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install --no-install-recommends docker-compose)")
    command = [tool, "-f", str(COMPOSE), "-f", str(CLUSTER), "config", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_container_is_read_only_without_capabilities_or_privilege_escalation():
    for name, spec in compose_services().items():
        assert spec.get("read_only") is True, f"{name}: root file system writable"
        assert spec.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in spec.get("security_opt", []), name
        assert "/tmp" in spec.get("tmpfs", []), f"{name}: no writable /tmp"
    qdrant = compose_services()["qdrant"]
    marker = qdrant["environment"]["QDRANT_INIT_FILE_PATH"]
    assert marker.rsplit("/", 1)[0] in qdrant["tmpfs"] and "/qdrant/snapshots" in qdrant["tmpfs"]


def test_grafana_has_no_default_admin_password():
    grafana = compose_services()["grafana"]
    environment = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment, "a password in the file is everyone's password"
    assert environment["GRAFANA_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    script = grafana["entrypoint"][-1]
    # Unset, the admin password is random (and never printed): admin login is off unless a person chose one.
    assert "/dev/urandom" in script and "export GF_SECURITY_ADMIN_PASSWORD" in script and "exec /run.sh" in script


def test_the_cluster_nodes_are_hardened_like_the_single_node():
    services = yaml.safe_load(CLUSTER.read_text())["services"]
    for name in ("qdrant-2", "qdrant-3"):
        node = services[name]
        assert node["read_only"] is True and node["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in node["security_opt"], name
        assert (
            node["environment"]["QDRANT_INIT_FILE_PATH"].startswith("/qdrant/init/") and "/qdrant/init" in node["tmpfs"]
        )
