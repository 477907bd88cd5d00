"""The services as separate processes with the tiny fixture models, for fault tests and benchmarks.

stack = ProcessStack(root, gateway_env={...})   # *_env override the defaults; *_model_dir serve real models
stack.start()                    # classifier, embedder, (detector,) gateway; each waited for until SERVING
stack.kill("classifier"); stack.restart("classifier")   # same port, so the gateway can reconnect by itself
stack.rss_mb("gateway")
stack.stop()                     # SIGTERM, in reverse order
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fashionsearch.healthcheck import is_serving
from fashionsearch.model_contract import ModelSpec
from testkit.tiny_detector import write_tiny_detector
from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder, write_tiny_text_embedder

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SERVICES = ("classifier", "embedder", "gateway")
#: Started only with ProcessStack(detector=True), before the gateway.
OPTIONAL = ("detector",)


def _ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The first port of the kernel's range for outgoing connections' source ports (Linux; 32768 elsewhere)."""
    try:
        return max(2048, int(path.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768


#: Ports for test services come from below the ephemeral range, one after another from a random start. A port the
#: kernel hands out as free (bind to 0) lies in the range outgoing connections take their source ports from, so one
#: of the suite's own connections could take it before the service binds it ("address already in use", seen in CI);
#: counting up also never hands the same port out twice while its service has not bound it yet.
_PORTS_BELOW = _ephemeral_low()
_PORTS_SPAN = min(12_000, _PORTS_BELOW - 1024)
_next_port = itertools.count(random.randrange(_PORTS_SPAN))


def free_port() -> int:
    for _ in range(_PORTS_SPAN):
        port = _PORTS_BELOW - _PORTS_SPAN + next(_next_port) % _PORTS_SPAN
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:  # taken by another process on the machine: the next one
                continue
            return port
    raise RuntimeError(f"no free port below {_PORTS_BELOW} on {HOST}")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def peak_rss_mb(pid: int) -> float:
    """The most resident memory the process has had (VmHWM) since it started or reset_peak_rss (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def reset_peak_rss(pid: int) -> None:
    """Start peak_rss_mb over from the current RSS (Linux 4.0+, our own processes)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    pass


@dataclass
class ProcessStack:
    root: Path
    gateway_env: dict[str, str] = field(default_factory=dict)
    classifier_env: dict[str, str] = field(default_factory=dict)
    embedder_env: dict[str, str] = field(default_factory=dict)
    detector_env: dict[str, str] = field(default_factory=dict)
    #: Model folders to serve; None: a tiny fixture model written under root.
    classifier_model_dir: Path | None = None
    embedder_model_dir: Path | None = None
    detector_model_dir: Path | None = None
    #: Start the detector too (outfit search, crop=auto), and point the gateway at it.
    detector: bool = False
    #: Write a tiny text model beside the tiny embedder (a given embedder folder brings its own, if any).
    text_model: bool = False
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in SERVICES + OPTIONAL})
    #: Each service's /metrics port (never the defaults 9101, 9102, 8080, which another run may hold).
    metrics_ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in SERVICES + OPTIONAL})
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    #: The gateway's HTTP API (and its /metrics, beside it) on this port; None: no HTTP.
    http_port: int | None = None
    #: The checkout whose services run (bench/code_versions.py runs an older one beside this one).
    code_root: Path = REPO_ROOT

    def __post_init__(self) -> None:
        if self.http_port is not None:
            self.metrics_ports["gateway"] = self.http_port

    @property
    def services(self) -> tuple[str, ...]:
        """The services this stack runs, in start order."""
        return ("classifier", "embedder", *(("detector",) if self.detector else ()), "gateway")

    def address(self, name: str) -> str:
        return f"{HOST}:{self.ports[name]}"

    def model_dir(self, name: str) -> Path:
        """The model folder the service `name` (classifier, embedder, detector) runs: the given one, else a tiny one."""
        given = {
            "classifier": self.classifier_model_dir,
            "embedder": self.embedder_model_dir,
            "detector": self.detector_model_dir,
        }[name]
        if given is not None:
            return given
        model_dir = self.root / name
        if not (model_dir / "model.json").is_file():
            if name == "classifier":
                write_tiny_classifier(model_dir)
            elif name == "embedder":
                write_tiny_embedder(model_dir)
            else:
                write_tiny_detector(model_dir)
        if name == "embedder" and self.text_model and not (self.root / "text-embedder" / "model.json").is_file():
            write_tiny_text_embedder(self.root / "text-embedder", ModelSpec.load(model_dir))
        return model_dir

    def env(self, name: str) -> dict[str, str]:
        if name == "classifier":
            return {
                "CLASSIFIER_PORT": str(self.ports[name]),
                "CLASSIFIER_HOST": HOST,
                "CLASSIFIER_MODEL_DIR": str(self.model_dir("classifier")),
                "CLASSIFIER_INTRA_OP_THREADS": "1",
                "CLASSIFIER_LOG_LEVEL": "WARNING",
                "CLASSIFIER_METRICS_PORT": str(self.metrics_ports[name]),
                **self.classifier_env,
            }
        if name == "embedder":
            return {
                "EMBEDDER_PORT": str(self.ports[name]),
                "EMBEDDER_HOST": HOST,
                "EMBEDDER_MODEL_DIR": str(self.model_dir("embedder")),
                "EMBEDDER_INTRA_OP_THREADS": "1",
                "EMBEDDER_LOG_LEVEL": "WARNING",
                "EMBEDDER_METRICS_PORT": str(self.metrics_ports[name]),
                **self.embedder_env,
            }
        if name == "detector":
            return {
                "DETECTOR_PORT": str(self.ports[name]),
                "DETECTOR_HOST": HOST,
                "DETECTOR_MODEL_DIR": str(self.model_dir("detector")),
                "DETECTOR_INTRA_OP_THREADS": "1",
                "DETECTOR_LOG_LEVEL": "WARNING",
                "DETECTOR_METRICS_PORT": str(self.metrics_ports[name]),
                **self.detector_env,
            }
        return {
            "GATEWAY_PORT": str(self.ports[name]),
            "GATEWAY_HOST": HOST,
            "GATEWAY_CLASSIFIER_ADDR": self.address("classifier"),
            "GATEWAY_EMBEDDER_ADDR": self.address("embedder"),
            "GATEWAY_DETECTOR_ADDR": self.address("detector") if self.detector else "",
            "GATEWAY_DATA_DIR": str(self.root / "store"),
            "GATEWAY_HTTP_ENABLED": "false" if self.http_port is None else "true",
            "GATEWAY_HTTP_PORT": str(self.http_port or 0),
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_METRICS_PORT": str(self.metrics_ports[name]),
            **self.gateway_env,
        }

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def launch(self, name: str) -> subprocess.Popen:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env(name)}
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=self.code_root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def wait_serving(self, name: str, timeout_s: float = 90) -> None:
        process = self.processes[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StartError(f"{name} exited with {process.returncode}:\n{self.log(name).read_text()[-3000:]}")
            if is_serving(self.address(name), timeout_s=1):
                return
            time.sleep(0.1)
        raise StartError(f"{name} not SERVING after {timeout_s} s:\n{self.log(name).read_text()[-3000:]}")

    def start(self) -> ProcessStack:
        try:
            for name in self.services:
                self.launch(name)
                self.wait_serving(name)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, name: str) -> None:
        """SIGKILL: a crash, not a shutdown."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def restart(self, name: str) -> None:
        self.launch(name)
        self.wait_serving(name)

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def rss_mb(self, name: str) -> float:
        return rss_mb(self.pid(name))

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for name in reversed(self.services):
            process = self.processes.get(name)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            codes[name] = process.returncode
        return codes
