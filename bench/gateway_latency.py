"""Gateway Search latency: the three services as separate processes with the tiny fixture models.

Starts classifier, embedder and gateway (Qdrant Edge store in a temporary directory) like ops would, upserts
catalogue items from sample_catalogue/, then makes sequential Search calls from one blocking client and prints
p50/p95/p99 latency and throughput per filter mode.

    python bench/gateway_latency.py [--items 500] [--searches 1000] [--catalogue sample_catalogue]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402

from fashionsearch.healthcheck import is_serving  # noqa: E402
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402
from tests.tiny_models import write_tiny_classifier, write_tiny_embedder  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_serving(process: subprocess.Popen, address: str, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{address} exited with {process.returncode}:\n{log.read_text()}")
        if is_serving(address, timeout_s=1):
            return
        time.sleep(0.2)
    raise SystemExit(f"{address} not SERVING after {timeout_s} s:\n{log.read_text()}")


def load_items(catalogue: Path, limit: int) -> list[gateway_pb2.CatalogueItem]:
    items = []
    with (catalogue / "styles.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            image = catalogue / "images" / f"{row['id']}.jpg"
            if not image.is_file():
                continue
            items.append(
                gateway_pb2.CatalogueItem(
                    id=int(row["id"]),
                    image=image.read_bytes(),
                    payload=gateway_pb2.ItemPayload(
                        name=row["productDisplayName"],
                        gender=row["gender"],
                        master_category=row["masterCategory"],
                        sub_category=row["subCategory"],
                        article_type=row["articleType"],
                        base_colour=row["baseColour"],
                        season=row["season"],
                        year=int(row["year"] or 0),
                        usage=row["usage"],
                        image_ref=f"images/{row['id']}.jpg",
                    ),
                )
            )
            if len(items) == limit:
                break
    return items


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def measure(stub: gateway_pb2_grpc.GatewayStub, images: list[bytes], n: int, mode: int) -> dict[str, float]:
    latencies = []
    started = time.perf_counter()
    for i in range(n):
        request = gateway_pb2.SearchRequest(image=images[i % len(images)], filter_mode=mode)
        t0 = time.perf_counter()
        stub.Search(request, timeout=10)
        latencies.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "calls": n,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "mean": statistics.fmean(latencies),
        "max": latencies[-1],
        "rps": n / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500, help="catalogue items to upsert")
    parser.add_argument("--searches", type=int, default=1000, help="sequential Search calls per filter mode")
    parser.add_argument("--warmup", type=int, default=50, help="untimed Search calls first")
    parser.add_argument("--catalogue", type=Path, default=REPO_ROOT / "sample_catalogue")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        root = Path(tmp)
        ports = {name: free_port() for name in ("classifier", "embedder", "gateway")}
        envs = {
            "classifier": {
                "CLASSIFIER_PORT": str(ports["classifier"]),
                "CLASSIFIER_HOST": "127.0.0.1",
                "CLASSIFIER_MODEL_DIR": str(write_tiny_classifier(root / "classifier")),
                "CLASSIFIER_INTRA_OP_THREADS": "1",
                "CLASSIFIER_LOG_LEVEL": "WARNING",
            },
            "embedder": {
                "EMBEDDER_PORT": str(ports["embedder"]),
                "EMBEDDER_HOST": "127.0.0.1",
                "EMBEDDER_MODEL_DIR": str(write_tiny_embedder(root / "embedder")),
                "EMBEDDER_INTRA_OP_THREADS": "1",
                "EMBEDDER_LOG_LEVEL": "WARNING",
            },
            "gateway": {
                "GATEWAY_PORT": str(ports["gateway"]),
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_CLASSIFIER_ADDR": f"127.0.0.1:{ports['classifier']}",
                "GATEWAY_EMBEDDER_ADDR": f"127.0.0.1:{ports['embedder']}",
                "GATEWAY_DATA_DIR": str(root / "store"),
                "GATEWAY_HTTP_ENABLED": "false",
                "GATEWAY_LOG_LEVEL": "WARNING",
                "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true",
            },
        }
        processes: list[subprocess.Popen] = []
        try:
            for name, env in envs.items():
                log = root / f"{name}.log"
                processes.append(start(f"services.{name}", env, log))
                wait_serving(processes[-1], f"127.0.0.1:{ports[name]}", log)

            items = load_items(args.catalogue, args.items)
            with grpc.insecure_channel(f"127.0.0.1:{ports['gateway']}") as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                t0 = time.perf_counter()
                replies = list(stub.UpsertItems((gateway_pb2.UpsertItemsRequest(item=i) for i in items), timeout=600))
                upsert_s = time.perf_counter() - t0
                failed = [r for r in replies if not r.upserted]
                if failed:
                    raise SystemExit(f"{len(failed)} upserts failed, e.g. {failed[0].error.message}")
                images = [item.image for item in items]
                for i in range(args.warmup):
                    stub.Search(gateway_pb2.SearchRequest(image=images[i % len(images)]), timeout=10)
                rows = {
                    "predicted subCategory (default)": measure(
                        stub, images, args.searches, gateway_pb2.FILTER_MODE_PREDICTED_SUBCATEGORY
                    ),
                    "no filter": measure(stub, images, args.searches, gateway_pb2.FILTER_MODE_NONE),
                }
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(15)

    print(
        f"Gateway Search latency: {args.items} catalogue items, tiny fixture models, Qdrant Edge store, "
        f"3 services as processes on {os.cpu_count()} CPUs ({platform.machine()}), one sequential client"
    )
    print(f"upsert of {len(items)} items (one stream): {upsert_s:.2f} s = {len(items) / upsert_s:.0f} items/s")
    print()
    print(f"| {'filter mode':<32} | calls | p50 ms | p95 ms | p99 ms | mean ms | max ms | searches/s |")
    print(f"|{'-' * 34}|------:|-------:|-------:|-------:|--------:|-------:|-----------:|")
    for label, r in rows.items():
        print(
            f"| {label:<32} | {r['calls']:>5} | {r['p50']:6.2f} | {r['p95']:6.2f} | {r['p99']:6.2f} "
            f"| {r['mean']:7.2f} | {r['max']:6.1f} | {r['rps']:10.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
