"""Gateway Search latency: the three services as separate processes with the tiny fixture models.

Starts classifier, embedder and gateway (Qdrant Edge store in a temporary directory) like ops would, upserts
catalogue items from sample_catalogue/, then makes sequential Search calls from one blocking client and prints
p50/p95/p99 latency and throughput per filter mode.

    python bench/gateway_latency.py [--items 500] [--searches 1000] [--catalogue sample_catalogue]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402

from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402
from testkit.catalogue_items import catalogue_items  # noqa: E402
from testkit.process_stack import SERVICES, ProcessStack, cpu_seconds  # noqa: E402


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def timed(call: Callable[[int], object], n: int) -> dict[str, float]:
    """n sequential calls call(0) .. call(n-1): latency percentiles in ms and calls per second."""
    latencies = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
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


def measure(
    stack: ProcessStack, stub: gateway_pb2_grpc.GatewayStub, images: list[bytes], n: int, mode: gateway_pb2.FilterMode
) -> dict[str, float]:
    """timed() Search calls, plus each service's CPU ms per search (user + system, over the calls)."""

    def search(i: int) -> object:
        return stub.Search(gateway_pb2.SearchRequest(image=images[i % len(images)], filter_mode=mode), timeout=10)

    before = {name: cpu_seconds(stack.pid(name)) for name in SERVICES}
    row = timed(search, n)
    return row | {f"cpu_{name}": (cpu_seconds(stack.pid(name)) - before[name]) * 1000 / n for name in SERVICES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500, help="catalogue items to upsert")
    parser.add_argument("--searches", type=int, default=1000, help="sequential Search calls per filter mode")
    parser.add_argument("--warmup", type=int, default=50, help="untimed Search calls first")
    parser.add_argument("--catalogue", type=Path, default=REPO_ROOT / "sample_catalogue")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the services' log level (INFO: one access line per call, as deployed)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        stack = ProcessStack(
            Path(tmp),
            gateway_env={"GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true", "GATEWAY_LOG_LEVEL": args.log_level},
            classifier_env={"CLASSIFIER_LOG_LEVEL": args.log_level},
            embedder_env={"EMBEDDER_LOG_LEVEL": args.log_level},
        )
        stack.start()
        try:
            items = catalogue_items(args.catalogue, args.items)
            with grpc.insecure_channel(stack.address("gateway")) as channel:
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
                        stack, stub, images, args.searches, gateway_pb2.FILTER_MODE_PREDICTED_SUBCATEGORY
                    ),
                    "no filter": measure(stack, stub, images, args.searches, gateway_pb2.FILTER_MODE_NONE),
                }
        finally:
            stack.stop()

    print(
        f"Gateway Search latency: {args.items} catalogue items, tiny fixture models, Qdrant Edge store, "
        f"3 services as processes on {os.cpu_count()} CPUs ({platform.machine()}), one sequential client, "
        f"log level {args.log_level}"
    )
    print(f"upsert of {len(items)} items (one stream): {upsert_s:.2f} s = {len(items) / upsert_s:.0f} items/s")
    print()
    print(
        f"| {'filter mode':<32} | calls | p50 ms | p95 ms | p99 ms | mean ms | max ms | searches/s "
        "| CPU ms/search: classifier | embedder | gateway |"
    )
    print(f"|{'-' * 34}|------:|-------:|-------:|-------:|--------:|-------:|-----------:|------:|------:|------:|")
    for label, r in rows.items():
        print(
            f"| {label:<32} | {r['calls']:>5} | {r['p50']:6.2f} | {r['p95']:6.2f} | {r['p99']:6.2f} "
            f"| {r['mean']:7.2f} | {r['max']:6.1f} | {r['rps']:10.0f} "
            f"| {r['cpu_classifier']:5.2f} | {r['cpu_embedder']:5.2f} | {r['cpu_gateway']:5.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
