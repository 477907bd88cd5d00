"""deploy/monitoring and the compose `monitoring` profile: Prometheus's configuration, Grafana's provisioning and
the dashboard are valid, and every dashboard query parses as PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import fashionsearch.metrics  # noqa: F401 - registers every metric the services export
from testkit.settings_env import REPO

MONITORING = REPO / "deploy" / "monitoring"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "fashionsearch.json"
PROMTOOL_HINT = "promtool is not installed (Debian: apt-get install --no-install-recommends prometheus)"
COMPOSE_HINT = "docker-compose is not installed (Debian: apt-get install --no-install-recommends docker-compose)"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def compose_services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_dashboard_loads_and_every_panel_has_a_query_on_the_provisioned_datasource():
    board = dashboard()
    assert board["uid"] == "fashionsearch"
    (datasource,) = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, f"panel {panel['title']!r} is wider than the 24-column grid"
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for wanted in ("searches/s", "latency", "errors/s by kind", "model time", "catalogue items"):
        assert wanted in titles, f"the dashboard has no {wanted!r} panel"


def exported_names() -> set[str]:
    """Every sample name the services' metrics produce (a counter's _total, a histogram's _bucket, ...)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}
    return {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes.get(family.type, ("",))}


def test_every_metric_the_dashboard_queries_is_one_the_services_export():
    exported = exported_names()
    # Metric names, not label names (those are followed by a matcher: =, !=, =~, !~).
    queried = {
        name
        for expr in queries()
        for name in re.findall(r"\b(?:grpc|http|fashionsearch)_[a-z0-9_]+\b(?!\s*[=!])", expr)
    }
    assert queried, "the dashboard queries no fashionsearch metric"
    assert not queried - exported, f"the dashboard queries metrics no service exports: {sorted(queried - exported)}"


def test_grafana_provisioning_loads_the_dashboard_folder_the_compose_file_mounts():
    (provider,) = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/fashionsearch.yml").read_text())[
        "providers"
    ]
    grafana = compose_services()["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    for source in mounts:
        assert (REPO / "deploy" / source).exists(), f"compose mounts {source}, which does not exist"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path):
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip(PROMTOOL_HINT)
    # Grafana's interval variable is replaced by what it stands for; promtool then parses each query as the
    # expression of a recording rule.
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr.replace("$__rate_interval", "1m")}
        for n, expr in enumerate(queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_is_valid():
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip(PROMTOOL_HINT)
    command = [tool, "check", "config", "--syntax-only", str(MONITORING / "prometheus.yml")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_service():
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in config["scrape_configs"]}
    assert set(jobs) == {"gateway", "classifier", "embedder", "detector", "indexer"}
    services = compose_services()
    for name, discovery in jobs.items():
        assert discovery["names"] == [name]
        if name == "indexer":
            command = services["indexer"]["command"]
            port = command[command.index("--metrics-port") + 1]
        else:
            port = services[name]["environment"][f"{name.upper()}_METRICS_PORT"]
        assert discovery["port"] == int(port), f"Prometheus scrapes {name} on {discovery['port']}, it serves on {port}"


def test_monitoring_profile_images_are_pinned_and_published_on_loopback_only():
    services = compose_services()
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", services["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", services["grafana"]["image"])
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name


def test_compose_config_validates_with_the_monitoring_profile():
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip(COMPOSE_HINT)
    command = [tool, "-f", str(COMPOSE), "--profile", "monitoring", "--profile", "index", "config"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # The profile's services are really in the resolved configuration, not just accepted.
    assert {"prometheus", "grafana", "indexer"} <= set(yaml.safe_load(result.stdout)["services"])
