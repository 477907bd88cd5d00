"""A model service's peak memory under concurrent batch calls (EmbedBatch, ClassifyBatch), bounded or not.

The service (--service embedder or classifier) runs as a process (models/<service> unless --tiny) once per
*_MAX_CONCURRENT_BATCHES value given (--limits, default "8,1": 8 is as many as the callers send, i.e. unbounded, as
before the setting existed; 1 is the default). For each concurrency in --concurrency, that many callers each send one
batch call of --batch catalogue photos (distinct images, as the indexer sends); the table shows the kernel's
high-water mark of the process (VmHWM, reset before each round, so no short peak is missed), its RSS after the
round, and the wall time.

    python bench/batch_memory.py [--service embedder] [--batch 64] [--concurrency 1,4,8] [--limits 8,1] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402

from fashionsearch.v1 import classifier_pb2, classifier_pb2_grpc, embedder_pb2, embedder_pb2_grpc  # noqa: E402
from testkit.catalogue_items import catalogue_items  # noqa: E402
from testkit.process_stack import ProcessStack, peak_rss_mb, reset_peak_rss, rss_mb  # noqa: E402


def _batch_call(channel: grpc.Channel, service: str, images: list[bytes]) -> bool:
    """One EmbedBatch or ClassifyBatch of `images`; True when every image got its answer."""
    if service == "embedder":
        reply = embedder_pb2_grpc.EmbedderStub(channel).EmbedBatch(
            embedder_pb2.EmbedBatchRequest(images=images), timeout=300
        )
        return all(r.WhichOneof("outcome") == "embedding" for r in reply.results)
    answer = classifier_pb2_grpc.ClassifierStub(channel).ClassifyBatch(
        classifier_pb2.ClassifyBatchRequest(images=images), timeout=300
    )
    return all(r.WhichOneof("outcome") == "classification" for r in answer.results)


def _round(address: str, service: str, batches: list[list[bytes]]) -> tuple[float, list[str]]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

    def call(images: list[bytes]) -> str:
        with grpc.insecure_channel(address, options=options) as channel:
            try:
                return "OK" if _batch_call(channel, service, images) else "item errors"
            except grpc.RpcError as error:
                return error.code().name

    started = time.perf_counter()
    with ThreadPoolExecutor(len(batches)) as pool:
        codes = list(pool.map(call, batches))
    return time.perf_counter() - started, codes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=("embedder", "classifier"), default="embedder")
    parser.add_argument("--batch", type=int, default=64, help="images per batch call (the indexer's default)")
    parser.add_argument("--concurrency", default="1,4,8", help="concurrent batch calls per round")
    parser.add_argument("--limits", default="8,1", help="*_MAX_CONCURRENT_BATCHES values to compare")
    parser.add_argument("--tiny", action="store_true", help="the tiny fixture model instead of models/<service>")
    args = parser.parse_args()
    rounds = [int(c) for c in args.concurrency.split(",")]
    limits = [int(n) for n in args.limits.split(",")]
    service, prefix = args.service, args.service.upper()

    photos = [item.image for item in catalogue_items(REPO_ROOT / "sample_catalogue", args.batch * max(rounds))]
    rows: list[tuple[int, int, float, float, float, float, str]] = []
    for limit in limits:
        with tempfile.TemporaryDirectory(prefix="bench-embed-mem-") as tmp:
            env = {f"{prefix}_MAX_CONCURRENT_BATCHES": str(limit), f"{prefix}_MAX_BATCH": str(args.batch)}
            model_dir = None if args.tiny else REPO_ROOT / "models" / service
            stack = ProcessStack(
                Path(tmp),
                **{f"{service}_env": env, f"{service}_model_dir": model_dir},  # type: ignore[arg-type]
            )
            stack.launch(service)
            try:
                stack.wait_serving(service)
                pid = stack.pid(service)
                idle = rss_mb(pid)
                for concurrency in rounds:
                    batches = [photos[i * args.batch : (i + 1) * args.batch] for i in range(concurrency)]
                    reset_peak_rss(pid)
                    wall_s, codes = _round(stack.address(service), service, batches)
                    summary = ", ".join(f"{codes.count(c)} {c}" for c in sorted(set(codes)))
                    rows.append((limit, concurrency, idle, peak_rss_mb(pid), rss_mb(pid), wall_s, summary))
            finally:
                stack.stop()

    model = f"tiny fixture {service}" if args.tiny else f"models/{service}"
    call = "EmbedBatch" if service == "embedder" else "ClassifyBatch"
    print(
        f"\nConcurrent {call} of {args.batch} catalogue photos each; {model}, 1 onnxruntime thread;"
        f" {os.cpu_count()} shared CPUs ({platform.machine()}). Peak = VmHWM, reset before each round.\n"
    )
    print("| max concurrent batches | concurrent calls | idle MB | peak MB | after MB | wall s | answers |")
    print("|-----------------------:|-----------------:|--------:|--------:|---------:|-------:|---------|")
    for limit, concurrency, idle, peak, after, wall_s, summary in rows:
        print(
            f"| {limit:22} | {concurrency:16} | {idle:7.0f} | {peak:7.0f} | {after:8.0f} | {wall_s:6.1f} | {summary} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
