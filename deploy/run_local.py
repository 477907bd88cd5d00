"""`make run`: the whole stack on this machine, with the embedded Qdrant Edge store and the sample catalogue.

Starts the classifier, embedder, detector (when models/detector holds one) and gateway as separate processes (as ops
would), waits until each reports SERVING on gRPC health, indexes `sample_catalogue/` through the gateway
(incremental: a second run finds it already indexed and embeds nothing), prints where to go, and stops everything
cleanly on Ctrl-C.
Everything it writes lives under `var/` (store, logs, reject file; FASHIONSEARCH_VAR_DIR moves it).
Ports: FASHIONSEARCH_{CLASSIFIER,EMBEDDER,DETECTOR,GATEWAY,HTTP}_PORT (defaults 50051, 50052, 50053, 50050, 8080)
and FASHIONSEARCH_{CLASSIFIER,EMBEDDER,DETECTOR,GATEWAY}_METRICS_PORT (9101, 9102, 9104, 9100: the gateway's
/metrics on a listener of its own, as in compose and Kubernetes, so scrapes do not compete with the API).
To try API keys, set GATEWAY_READ_API_KEYS / GATEWAY_WRITE_API_KEYS (or their _FILE forms) before `make run`: the
gateway gets them, and the launcher uses a write key (else a read key) for its own calls and the indexer's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from fashionsearch.config import ConfigError  # noqa: E402
from fashionsearch.healthcheck import is_serving  # noqa: E402
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402
from services.gateway.security import client_metadata, parse_api_keys  # noqa: E402

VAR = Path(os.environ.get("FASHIONSEARCH_VAR_DIR", REPO / "var")).resolve()
#: Outfit search and crop=auto need it; without it the gateway answers those FAILED_PRECONDITION.
DETECTOR_MODEL = REPO / "models" / "detector" / "model.json"
START_TIMEOUT_S = 90.0


def port(name: str, default: int) -> int:
    raw = os.environ.get(f"FASHIONSEARCH_{name}_PORT", str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        sys.exit(f"FASHIONSEARCH_{name}_PORT={raw!r}: expected a port number between 1 and 65535")
    return int(raw)


class Stack:
    """The child processes, started in order and stopped in reverse."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, env: dict[str, str]) -> None:
        log = VAR / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=REPO,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order.
            )
        self.children.append((name, child, log))

    def wait_serving(self, name: str, address: str) -> None:
        _, child, log = next(c for c in self.children if c[0] == name)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_serving(address, timeout_s=1.0):
            if child.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                raise SystemExit(f"{name} did not start (see {log}):\n  " + "\n  ".join(tail))
            time.sleep(0.2)
        print(f"  {name:<10} SERVING on {address}", flush=True)

    def check_alive(self) -> None:
        for name, child, log in self.children:
            if child.poll() is not None:
                raise SystemExit(f"{name} exited with code {child.returncode}; see {log}")

    def stop(self) -> None:
        for _, child, _ in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for name, child, _ in reversed(self.children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in 15 s; killing it", flush=True)
                child.kill()
        self.children.clear()


def user_api_keys() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The read and write keys the user set for the gateway (GATEWAY_*_API_KEYS or their _FILE forms), parsed as the
    gateway parses them; a bad setting stops the launcher with the gateway's own message."""
    try:
        return tuple(
            parse_api_keys(variable, os.environ.get(variable, ""), os.environ.get(f"{variable}_FILE", ""))
            for variable in ("GATEWAY_READ_API_KEYS", "GATEWAY_WRITE_API_KEYS")
        )  # type: ignore[return-value]
    except ConfigError as bad:
        raise SystemExit(str(bad)) from None


def stored_embedder_is_stale(gateway: int, key: str | None) -> str | None:
    """ "old -> new" when the catalogue holds vectors of another embedder than the running one (a model upgrade
    came with a `git pull`), else None."""
    with grpc.insecure_channel(f"127.0.0.1:{gateway}") as channel:
        stats = gateway_pb2_grpc.GatewayStub(channel).GetStats(
            gateway_pb2.GetStatsRequest(), timeout=10, metadata=client_metadata(key)
        )
    if not stats.HasField("stored_embedder"):
        return None
    stored, running = stats.stored_embedder, stats.running_embedder
    if (stored.name, stored.version) == (running.name, running.version):
        return None
    return f"{stored.name}@{stored.version} -> {running.name}@{running.version}"


def index_sample_catalogue(gateway: int, embedder: int, key: str | None) -> None:
    """Through the gateway, embedding only new or changed items. After an embedder upgrade the catalogue is
    rebuilt beside the live one (the indexer's Edge mode) and the gateway follows the alias once it is complete.
    `key`: the gateway's API key for these calls (None when it needs none)."""
    command = [sys.executable, "-m", "jobs.indexer", "--dataset", str(REPO / "sample_catalogue")]
    command += ["--rejects", str(VAR / "indexer-rejects.csv")]
    upgrade = stored_embedder_is_stale(gateway, key)
    if upgrade:
        print(f"Re-embedding the sample catalogue for the new embedder ({upgrade}):", flush=True)
        command += ["--edge-dir", str(VAR / "qdrant-edge"), "--embedder", f"127.0.0.1:{embedder}"]
    else:
        print("Indexing the sample catalogue (only new or changed items are embedded):", flush=True)
        command += ["--gateway", f"127.0.0.1:{gateway}"]
    indexer = subprocess.run(command, cwd=REPO, env={**os.environ, "INDEXER_API_KEY": key or ""})
    if indexer.returncode not in (0, 2):  # 2: some rows rejected (listed in the reject file); the rest is in
        raise SystemExit(f"indexing failed with exit code {indexer.returncode}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    (VAR / "logs").mkdir(parents=True, exist_ok=True)
    classifier, embedder = port("CLASSIFIER", 50051), port("EMBEDDER", 50052)
    gateway, http = port("GATEWAY", 50050), port("HTTP", 8080)
    classifier_metrics, embedder_metrics = port("CLASSIFIER_METRICS", 9101), port("EMBEDDER_METRICS", 9102)
    detector, detector_metrics = port("DETECTOR", 50053), port("DETECTOR_METRICS", 9104)
    gateway_metrics = port("GATEWAY_METRICS", 9100)
    read_keys, write_keys = user_api_keys()
    launcher_key = (write_keys or read_keys or (None,))[0]
    with_detector = DETECTOR_MODEL.is_file()
    metrics_ports = [gateway_metrics, classifier_metrics, embedder_metrics] + (
        [detector_metrics] if with_detector else []
    )
    stack = Stack()
    # SIGTERM (e.g. from a test or a process manager) stops the stack like Ctrl-C does. SIGINT is set too: a
    # shell script's background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        print(f"Starting fashionsearch (logs in {VAR / 'logs'}):", flush=True)
        stack.start(
            "classifier",
            {
                "CLASSIFIER_PORT": str(classifier),
                "CLASSIFIER_HOST": "127.0.0.1",
                "CLASSIFIER_METRICS_PORT": str(classifier_metrics),
            },
        )
        stack.start(
            "embedder",
            {
                "EMBEDDER_PORT": str(embedder),
                "EMBEDDER_HOST": "127.0.0.1",
                "EMBEDDER_METRICS_PORT": str(embedder_metrics),
            },
        )
        if with_detector:
            stack.start(
                "detector",
                {
                    "DETECTOR_PORT": str(detector),
                    "DETECTOR_HOST": "127.0.0.1",
                    "DETECTOR_METRICS_PORT": str(detector_metrics),
                },
            )
        else:
            print(f"  detector   not started: no {DETECTOR_MODEL.relative_to(REPO)} (outfit search is off)", flush=True)
        stack.wait_serving("classifier", f"127.0.0.1:{classifier}")
        stack.wait_serving("embedder", f"127.0.0.1:{embedder}")
        if with_detector:
            stack.wait_serving("detector", f"127.0.0.1:{detector}")
        stack.start(
            "gateway",
            {
                "GATEWAY_PORT": str(gateway),
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_HTTP_PORT": str(http),
                "GATEWAY_METRICS_PORT": str(gateway_metrics),
                "GATEWAY_CLASSIFIER_ADDR": f"127.0.0.1:{classifier}",
                "GATEWAY_EMBEDDER_ADDR": f"127.0.0.1:{embedder}",
                "GATEWAY_DETECTOR_ADDR": f"127.0.0.1:{detector}" if with_detector else "",
                "GATEWAY_DATA_DIR": str(VAR / "qdrant-edge"),
                "GATEWAY_IMAGE_ROOT": str(REPO / "sample_catalogue"),
                # Local only (bound to 127.0.0.1): without write keys of the user's, the indexer below writes
                # without one; with them, writes need a key as they would in production.
                "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "false" if write_keys else "true",
            },
        )
        stack.wait_serving("gateway", f"127.0.0.1:{gateway}")

        index_sample_catalogue(gateway, embedder, launcher_key)

        print(
            "\nfashionsearch is running:\n"
            f"  web page and HTTP API  http://127.0.0.1:{http}/   (OpenAPI: /openapi.json)\n"
            f"  gRPC gateway           127.0.0.1:{gateway}        (fashionsearch.v1.Gateway, reflection on)\n"
            "  metrics (Prometheus) "
            + "".join(f"  http://127.0.0.1:{p}/metrics" for p in metrics_ports)
            + "\n"
            + (
                f"  API keys               {len(read_keys)} read, {len(write_keys)} write (GATEWAY_*_API_KEYS)\n"
                if read_keys or write_keys
                else ""
            )
            + "Press Ctrl-C to stop.",
            flush=True,
        )
        while True:
            stack.check_alive()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
