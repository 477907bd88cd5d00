"""Gateway end to end under load, gRPC and HTTP: latency p50/p95/p99 and throughput at concurrency 1, 8 and 32,
for a catalogue-sized image and a 12-megapixel JPEG, with the time split into decode, classify, embed and search,
and each service's memory (RSS) idle and under load.

The three services run as separate processes (tiny fixture models unless --classifier-model-dir /
--embedder-model-dir name real ones; Qdrant Edge store), the sample catalogue is upserted, then each cell runs
for --seconds from one asyncio client process.

    python bench/gateway_load.py [--seconds 5] [--items 998] [--no-http]

The split (concurrency 1, sequential): "shrink" is the gateway decoding a large photo once and re-encoding it
small (services/gateway/prepare.py; 0 when the image is below GATEWAY_SHRINK_ABOVE_PIXELS); "decode x2" is
fashionsearch.images.decode_pixels + preprocess of what the services then receive, as each of classifier and
embedder does it once per search; "classify" and "embed" are direct calls to those services with those bytes
(their own decode included); "search" is the gateway's SearchById (gRPC hop + filtered top-5 in the store, no
model call); "Search" is the whole gateway call. --no-shrink measures the gateway without the shrink step.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import grpc.aio  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fashionsearch.images import ImageLimits, decode_pixels  # noqa: E402
from fashionsearch.model_contract import ModelSpec, preprocess  # noqa: E402
from fashionsearch.v1 import (  # noqa: E402
    classifier_pb2,
    classifier_pb2_grpc,
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)
from services.gateway.prepare import shrink_photo  # noqa: E402
from services.gateway.settings import Settings  # noqa: E402
from testkit.catalogue_items import catalogue_items  # noqa: E402
from testkit.process_stack import ProcessStack, free_port  # noqa: E402


def twelve_megapixel_jpeg() -> bytes:
    """A 4000x3000 photo-like JPEG (smooth shading, edges and sensor-like noise), a few MB like a phone's."""
    height, width = 3000, 4000
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    base = np.stack([120 + 80 * np.sin(x / 300), 110 + 70 * np.cos(y / 250), 100 + 60 * np.sin((x + y) / 500)], -1)
    base[1000:2200, 1400:2600] = (30, 40, 120)  # a garment-ish block
    pixels = np.clip(base + rng.normal(0, 6, size=base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def summary(latencies: list[float], wall_s: float, errors: int) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {
        "calls": len(latencies),
        "errors": errors,
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "rps": len(latencies) / wall_s,
    }


async def closed_loop(call: Callable[[], Awaitable[bool]], concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` workers calling `call` (True when it answered OK) back to back for `seconds`, after one warm-up
    call; the latency of each successful call."""
    await call()
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            if await call():
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summary(latencies, time.perf_counter() - started, errors)


async def grpc_cell(address: str, image: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        request = gateway_pb2.SearchRequest(image=image)

        async def search() -> bool:
            try:
                await stub.Search(request, timeout=30)
            except grpc.aio.AioRpcError:
                return False
            return True

        return await closed_loop(search, concurrency, seconds)


async def http_cell(port: int, image: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/v1/search"
    headers = {"Content-Type": "image/jpeg"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def search() -> bool:
            async with session.post(url, data=image, headers=headers) as response:
                await response.read()
                return response.status == 200

        return await closed_loop(search, concurrency, seconds)


def timed(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def split(stack: ProcessStack, image: bytes, stored_id: int, repeats: int) -> dict[str, float]:
    """Median ms of each stage, sequentially."""
    specs = {name: ModelSpec.load(stack.model_dir(name)) for name in ("classifier", "embedder")}
    limits = ImageLimits()
    settings = Settings.from_env(stack.env("gateway"))

    def shrink() -> bytes:
        return shrink_photo(image, above_pixels=settings.shrink_above_pixels, side=settings.shrink_side)

    sent = shrink()  # what the gateway sends on to the classifier and the embedder

    def decode() -> None:
        for spec in specs.values():
            preprocess([decode_pixels(sent, limits, (spec.input.width, spec.input.height))], spec.input)

    with (
        grpc.insecure_channel(stack.address("classifier"), options=[("grpc.max_send_message_length", -1)]) as c,
        grpc.insecure_channel(stack.address("embedder"), options=[("grpc.max_send_message_length", -1)]) as e,
        grpc.insecure_channel(stack.address("gateway")) as g,
    ):
        classifier = classifier_pb2_grpc.ClassifierStub(c)
        embedder = embedder_pb2_grpc.EmbedderStub(e)
        gateway = gateway_pb2_grpc.GatewayStub(g)
        return {
            "shrink": timed(shrink, repeats) if sent is not image else 0.0,
            "decode x2": timed(decode, repeats),
            "classify": timed(
                lambda: classifier.Classify(classifier_pb2.ClassifyRequest(image=sent, top_k=3), timeout=30), repeats
            ),
            "embed": timed(lambda: embedder.Embed(embedder_pb2.EmbedRequest(image=sent), timeout=30), repeats),
            "search": timed(
                lambda: gateway.SearchById(gateway_pb2.SearchByIdRequest(id=stored_id), timeout=30), repeats
            ),
            "Search": timed(lambda: gateway.Search(gateway_pb2.SearchRequest(image=image), timeout=30), repeats),
        }


class RssSampler:
    """Peak RSS of each service while it runs."""

    def __init__(self, stack: ProcessStack) -> None:
        self._stack = stack
        self.peak = {name: 0.0 for name in stack.processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.peak:
                self.peak[name] = max(self.peak[name], self._stack.rss_mb(name))
            self._stop.wait(0.25)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load cell")
    parser.add_argument("--items", type=int, default=998)
    parser.add_argument("--repeats", type=int, default=30, help="sequential calls per stage in the split")
    parser.add_argument("--catalogue", type=Path, default=REPO_ROOT / "sample_catalogue")
    parser.add_argument("--classifier-model-dir", type=Path)
    parser.add_argument("--embedder-model-dir", type=Path)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-shrink", action="store_true", help="GATEWAY_SHRINK_ABOVE_PIXELS=0")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--images", default="catalogue,12mp", help="catalogue and/or 12mp")
    args = parser.parse_args()

    items = catalogue_items(args.catalogue, args.items)
    wanted = args.images.split(",")
    images = {}
    if "catalogue" in wanted:
        images["catalogue 60x80 JPEG"] = items[0].image
    if "12mp" in wanted:
        images["12 MP JPEG"] = twelve_megapixel_jpeg()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    http_port = None if args.no_http else free_port()
    results: list[tuple[str, str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        gateway_env = {"GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true"}
        if args.no_shrink:
            gateway_env["GATEWAY_SHRINK_ABOVE_PIXELS"] = "0"
        if http_port is not None:
            gateway_env.update({"GATEWAY_HTTP_ENABLED": "true", "GATEWAY_HTTP_PORT": str(http_port)})
        stack = ProcessStack(
            Path(tmp),
            gateway_env=gateway_env,
            classifier_model_dir=args.classifier_model_dir,
            embedder_model_dir=args.embedder_model_dir,
        )
        stack.start()
        try:
            with grpc.insecure_channel(stack.address("gateway")) as channel:
                t0 = time.perf_counter()
                replies = list(
                    gateway_pb2_grpc.GatewayStub(channel).UpsertItems(
                        (gateway_pb2.UpsertItemsRequest(item=i) for i in items), timeout=600
                    )
                )
                upsert_s = time.perf_counter() - t0
            assert all(r.upserted for r in replies), [r.error.message for r in replies if not r.upserted][:3]
            splits = {label: split(stack, image, items[1].id, args.repeats) for label, image in images.items()}
            idle = {name: stack.rss_mb(name) for name in stack.processes}
            with RssSampler(stack) as sampler:
                for label, image in images.items():
                    for concurrency in concurrencies:
                        cell = asyncio.run(grpc_cell(stack.address("gateway"), image, concurrency, args.seconds))
                        results.append(("gRPC", label, concurrency, cell))
                        print(f"  gRPC {label} c={concurrency}: {cell['rps']:.0f}/s", file=sys.stderr, flush=True)
                        if http_port is not None:
                            cell = asyncio.run(http_cell(http_port, image, concurrency, args.seconds))
                            results.append(("HTTP", label, concurrency, cell))
                            print(f"  HTTP {label} c={concurrency}: {cell['rps']:.0f}/s", file=sys.stderr, flush=True)
            loaded = dict(sampler.peak)
        finally:
            stack.stop()

    models = ", ".join(
        f"{n}: {d or 'tiny fixture'}"
        for n, d in (("classifier", args.classifier_model_dir), ("embedder", args.embedder_model_dir))
    )
    print(
        f"\nGateway end to end: {len(items)} catalogue items ({len(items) / upsert_s:.0f} items/s upserted), {models};"
        f" Qdrant Edge; 3 services + this client on {os.cpu_count()} shared CPUs ({platform.machine()});"
        f" {args.seconds:.0f} s per cell; large-photo shrink {'off' if args.no_shrink else 'on'}\n"
    )
    print("| protocol | image                | conc. | calls | errors | p50 ms | p95 ms | p99 ms | searches/s |")
    print("|----------|----------------------|------:|------:|-------:|-------:|-------:|-------:|-----------:|")
    for protocol, label, concurrency, r in results:
        print(
            f"| {protocol:<8} | {label:<20} | {concurrency:>5} | {r['calls']:>5} | {r['errors']:>6} | {r['p50']:6.1f}"
            f" | {r['p95']:6.1f} | {r['p99']:6.1f} | {r['rps']:10.0f} |"
        )
    print("\nWhere the time goes (median ms, sequential):\n")
    stages = list(next(iter(splits.values())))
    print("| image                | " + " | ".join(f"{s:>9}" for s in stages) + " |")
    print("|----------------------|" + "|".join("-" * 11 for _ in stages) + "|")
    for label, values in splits.items():
        print(f"| {label:<20} | " + " | ".join(f"{values[s]:9.2f}" for s in stages) + " |")
    if "12 MP JPEG" in images:
        print(f"\n12 MP JPEG size: {len(images['12 MP JPEG']) / 1e6:.1f} MB")
    print("\n| service    | RSS idle MB | RSS peak under load MB |")
    print("|------------|------------:|-----------------------:|")
    for name in idle:
        print(f"| {name:<10} | {idle[name]:11.1f} | {loaded[name]:22.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
