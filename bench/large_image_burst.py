"""A burst of large PNGs during ordinary searches: each service's peak and settled memory, and whether the
ordinary searches still answer.

A 6000x6000 PNG of a product on a white page is about 130 KB on the wire and 36 megapixels (108 MB) decoded; PNG
has no reduced-scale decoding, so somebody decodes it in full. The three services run as separate processes
(the real models in models/ unless --tiny; Qdrant Edge store with the sample catalogue):

1. idle: each service's RSS after warm-up searches;
2. burst: --large Search calls with the PNG at --concurrency while --ordinary clients send catalogue photos
   (deadline 5 s each, as a shop's backend would); then one EmbedBatch of --batch such PNGs straight to the
   embedder (what the indexer's direct mode sends; deadline 300 s);
3. settled: each service's RSS 3 s after the burst.

Peak RSS is the kernel's high-water mark (VmHWM, reset after warm-up), so no short peak is missed.

    python bench/large_image_burst.py [--large 16] [--concurrency 8] [--side 6000] [--batch 24] [--no-shrink]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402
import numpy as np  # noqa: E402

from fashionsearch.v1 import embedder_pb2, embedder_pb2_grpc, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from testkit.catalogue_items import catalogue_items  # noqa: E402
from testkit.images import large_png  # noqa: E402
from testkit.process_stack import ProcessStack, peak_rss_mb, reset_peak_rss  # noqa: E402

SERVICES = ("classifier", "embedder", "gateway")


async def _burst(stack: ProcessStack, png: bytes, photos: list[bytes], args: argparse.Namespace) -> dict:
    ordinary: list[tuple[float, str]] = []
    large: list[tuple[float, str]] = []
    done = asyncio.Event()
    async with grpc.aio.insecure_channel(stack.address("gateway")) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def call(image: bytes, timeout_s: float, into: list[tuple[float, str]]) -> None:
            started = time.perf_counter()
            try:
                await stub.Search(gateway_pb2.SearchRequest(image=image), timeout=timeout_s)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            into.append((time.perf_counter() - started, code))

        async def ordinary_client(n: int) -> None:
            i = n
            while not done.is_set():
                await call(photos[i % len(photos)], 5, ordinary)
                i += args.ordinary

        async def large_client(count: int) -> None:
            for _ in range(count):
                await call(png, 300, large)

        clients = [asyncio.ensure_future(ordinary_client(n)) for n in range(args.ordinary)]
        await asyncio.sleep(1)
        started = time.perf_counter()
        share = [args.large // args.concurrency + (n < args.large % args.concurrency) for n in range(args.concurrency)]
        await asyncio.gather(*(large_client(count) for count in share))
        burst_s = time.perf_counter() - started
        done.set()
        await asyncio.gather(*clients)
    return {"ordinary": ordinary, "large": large, "burst_s": burst_s}


def _embed_batch(stack: ProcessStack, png: bytes, size: int) -> tuple[float, str]:
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(stack.address("embedder"), options=options) as channel:
        started = time.perf_counter()
        try:
            reply = embedder_pb2_grpc.EmbedderStub(channel).EmbedBatch(
                embedder_pb2.EmbedBatchRequest(images=[png] * size), timeout=300
            )
            code = "OK" if all(r.WhichOneof("outcome") == "embedding" for r in reply.results) else "item errors"
        except grpc.RpcError as error:
            code = error.code().name
        return time.perf_counter() - started, code


def _latency(calls: list[tuple[float, str]]) -> str:
    codes = collections.Counter(code for _, code in calls)
    ok = [s * 1000 for s, code in calls if code == "OK"]
    spread = f"p50 {np.percentile(ok, 50):.0f} ms, p99 {np.percentile(ok, 99):.0f} ms" if ok else "no answer"
    return f"{len(calls)} calls, {dict(codes)}, {spread}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=16, help="large-PNG searches in the burst")
    parser.add_argument("--concurrency", type=int, default=8, help="large-PNG searches in flight at once")
    parser.add_argument("--ordinary", type=int, default=4, help="clients sending ordinary searches meanwhile")
    parser.add_argument("--side", type=int, default=6000, help="the PNG is side x side pixels")
    parser.add_argument("--batch", type=int, default=24, help="large PNGs in the EmbedBatch (0: none)")
    parser.add_argument("--no-shrink", action="store_true", help="GATEWAY_SHRINK_ABOVE_PIXELS=0: the services decode")
    parser.add_argument("--tiny", action="store_true", help="tiny fixture models instead of models/")
    args = parser.parse_args()

    png = large_png(args.side, args.side)
    items = catalogue_items(REPO_ROOT / "sample_catalogue", 200)
    photos = [item.image for item in items[:32]]
    models = None if args.tiny else REPO_ROOT / "models"
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
        gateway_env = {"GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true"}
        if args.no_shrink:
            gateway_env["GATEWAY_SHRINK_ABOVE_PIXELS"] = "0"
        stack = ProcessStack(
            Path(tmp),
            gateway_env=gateway_env,
            classifier_model_dir=models / "classifier" if models else None,
            embedder_model_dir=models / "embedder" if models else None,
        ).start()
        try:
            with grpc.insecure_channel(stack.address("gateway")) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                replies = list(stub.UpsertItems((gateway_pb2.UpsertItemsRequest(item=i) for i in items), timeout=300))
                assert all(r.upserted for r in replies), [r.error.message for r in replies if not r.upserted][:3]
                for photo in photos:
                    stub.Search(gateway_pb2.SearchRequest(image=photo), timeout=30)
            pids = {name: stack.pid(name) for name in SERVICES}
            idle = {name: stack.rss_mb(name) for name in SERVICES}
            for pid in pids.values():
                reset_peak_rss(pid)
            burst = asyncio.run(_burst(stack, png, photos, args))
            batch = _embed_batch(stack, png, args.batch) if args.batch else None
            peak = {name: peak_rss_mb(pid) for name, pid in pids.items()}
            time.sleep(3)
            settled = {name: stack.rss_mb(name) for name in SERVICES}
        finally:
            codes = stack.stop()

    model_label = "tiny fixture models" if args.tiny else "models/classifier, models/embedder"
    print(
        f"\nLarge-PNG burst: {args.large} searches with a {args.side}x{args.side} PNG ({len(png) / 1000:.0f} KB,"
        f" {args.side * args.side / 1e6:.0f} MP) at concurrency {args.concurrency}, {args.ordinary} ordinary clients;"
        f" gateway shrink {'off' if args.no_shrink else 'on'}; {model_label}; {os.cpu_count()} shared CPUs"
        f" ({platform.machine()})\n"
    )
    print(f"ordinary searches during the burst: {_latency(burst['ordinary'])}")
    print(f"large-PNG searches: {_latency(burst['large'])}; burst {burst['burst_s']:.1f} s")
    if batch is not None:
        print(f"EmbedBatch of {args.batch} such PNGs: {batch[1]} in {batch[0]:.1f} s")
    print("\n| service    | RSS idle MB | peak MB | settled MB |")
    print("|------------|------------:|--------:|-----------:|")
    for name in SERVICES:
        print(f"| {name:<10} | {idle[name]:11.0f} | {peak[name]:7.0f} | {settled[name]:10.0f} |")
    print(f"\nexit codes: {codes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
