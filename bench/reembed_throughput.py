"""Catalogue re-embedding throughput of the indexer job, and where the time goes.

Starts the classifier, embedder and gateway as separate processes (like ops would; or uses running ones given by
address), then runs the indexer job (jobs.indexer) over the catalogue:

1. full re-embed straight to a new Qdrant Edge collection (EmbedBatch + ClassifyBatch for missing attributes);
2. the incremental re-run on the unchanged catalogue (embeds nothing);
3. full re-embed through the gateway's UpsertBatch calls, and its incremental re-run (--mode gateway|both).

It then times the embedder's own stages on a sample (decode, preprocess, ONNX inference) in this process, with the
same functions the service uses, to show where the embed RPC time goes.

Catalogue: FASHIONSEARCH_DATA (the real dataset, ~40k images) or --data; else sample_catalogue/.  Models:
models/embedder and models/classifier when present, else the tiny test models (say which in the output).

    python bench/reembed_throughput.py [--data DIR] [--limit N] [--mode direct|gateway|both] [--threads 1]
        [--inflight 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.gateway_batching import ONE_PASS_AUTO, TWO_CALLS_FLOAT  # noqa: E402
from fashionsearch.store.edge import EdgeCatalog  # noqa: E402
from jobs.indexer.fetch import ImageFetcher  # noqa: E402
from jobs.indexer.manifest import Manifest, Row  # noqa: E402
from jobs.indexer.runner import Options, Summary, run  # noqa: E402
from jobs.indexer.targets import DirectTarget, GatewayTarget, ModelClients, Target  # noqa: E402
from testkit.process_stack import ProcessStack, cpu_seconds  # noqa: E402
from testkit.tiny_models import write_tiny_classifier, write_tiny_embedder  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "fashion-product-images-small"


def pick_catalogue(args: argparse.Namespace, tmp: Path) -> tuple[Manifest, str]:
    data = args.data or Path(os.environ.get("FASHIONSEARCH_DATA", DEFAULT_DATA))
    if not (data / "styles.csv").is_file():
        data = REPO_ROOT / "sample_catalogue"
    manifest = Manifest.dataset(data)
    if args.limit:
        # The first N rows, as a styles.csv of their own (same images folder).
        lines = (data / "styles.csv").read_text(encoding="utf-8").splitlines()[: args.limit + 1]
        limited = tmp / "limited"
        limited.mkdir()
        (limited / "styles.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (limited / "images").symlink_to((data / "images").resolve())
        manifest = Manifest.dataset(limited)
    return manifest, str(data)


def pick_models(tmp: Path, args: argparse.Namespace) -> tuple[Path, Path, str]:
    embedder, classifier = args.embedder_model_dir, args.classifier_model_dir
    if (embedder / "model.onnx").is_file() and (classifier / "model.onnx").is_file():
        return embedder, classifier, f"trained models ({embedder}, {classifier})"
    return (
        write_tiny_embedder(tmp / "embedder", dim=64),
        write_tiny_classifier(tmp / "classifier"),
        "TINY test models (models/embedder or models/classifier missing): inference cost is not representative",
    )


def cpu_by_process(stack: ProcessStack) -> dict[str, float]:
    cpu = {name: cpu_seconds(stack.pid(name)) for name in ("embedder", "classifier", "gateway")}
    cpu["indexer (this process)"] = cpu_seconds(os.getpid())
    return cpu


def report(title: str, summary: Summary, cpu_before: dict[str, float], cpu_after: dict[str, float]) -> None:
    print(f"\n== {title}")
    print(
        f"   added {summary.added}  updated {summary.updated}  unchanged {summary.unchanged}  "
        f"rejected {summary.rejected}  complete {summary.complete}  {summary.error}"
    )
    print(
        f"   elapsed {summary.elapsed_s:.2f} s   {summary.items_per_s:,.0f} items/s handled   "
        f"{summary.embedded_per_s:,.0f} images/s embedded"
    )
    for stage, seconds in summary.stage_s.items():
        share = seconds / summary.elapsed_s if summary.elapsed_s else 0
        print(f"   {stage:<40} {seconds:8.2f} s  ({share:5.0%} of wall; batches overlap)")
    used = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    total = sum(used.values())
    cores = os.cpu_count() or 1
    print(f"   CPU time by process: {total:.1f} s of the {summary.elapsed_s * cores:.1f} s that {cores} cores offer")
    for name, seconds in used.items():
        print(f"     {name:<38} {seconds:8.2f} s  ({seconds / max(summary.elapsed_s, 1e-9):4.0%} of one core)")


def embedder_internals(manifest: Manifest, model_dir: Path, threads: int, sample: int) -> None:
    """Decode / preprocess / inference per image, in this process, with the service's own functions."""
    from fashionsearch.images import decode_batch
    from fashionsearch.model_contract import preprocess
    from services.embedder.model import OnnxEmbedder

    embedder = OnnxEmbedder.from_dir(model_dir, intra_op_threads=threads)
    fetcher = ImageFetcher(root=manifest.image_root)
    blobs: list[bytes] = []
    for row in manifest.rows():
        if isinstance(row, Row):
            try:
                blobs.append(fetcher.fetch(row.image))
            except Exception:  # noqa: BLE001 - rows without an image are skipped here
                continue
        if len(blobs) >= sample:
            break
    height, width = embedder.input_size
    spec = embedder._model.spec.input  # noqa: SLF001 - the bench wants the same spec the service uses
    t = {"decode": 0.0, "preprocess": 0.0, "inference": 0.0}
    for start_at in range(0, len(blobs), 64):
        chunk = blobs[start_at : start_at + 64]
        t0 = time.perf_counter()
        images = decode_batch(chunk, target_size=(width, height))
        t1 = time.perf_counter()
        batch = preprocess(cast(list[Any], images), spec)  # the sample's images all decode
        t2 = time.perf_counter()
        embedder._model.run(batch)  # noqa: SLF001
        t3 = time.perf_counter()
        t["decode"] += t1 - t0
        t["preprocess"] += t2 - t1
        t["inference"] += t3 - t2
    n = max(len(blobs), 1)
    total = sum(t.values())
    print(f"\n== inside the embedder ({n} images, batches of 64, intra-op threads {threads}, one process)")
    for stage, seconds in t.items():
        print(f"   {stage:<12} {seconds / n * 1e6:8.0f} us/image  ({seconds / total:4.0%})")
    print(f"   => at most {n / total:,.0f} images/s per embedder process for this model on this machine")


#: The configurations --compare-one-pass measures: the models as served before issue 30, the same with two batch calls
#: at once (what that setting alone gives), one pass + int8 one batch call at a time, and the defaults since.
CONFIGURATIONS = {
    "float, two calls": TWO_CALLS_FLOAT,
    "float, two calls, two batches at once": {
        **TWO_CALLS_FLOAT,
        "CLASSIFIER_MAX_CONCURRENT_BATCHES": "2",
        "EMBEDDER_MAX_CONCURRENT_BATCHES": "2",
    },
    "one pass, precision auto, one batch at a time": {**ONE_PASS_AUTO, "CLASSIFIER_MAX_CONCURRENT_BATCHES": "1"},
    "one pass, precision auto (the defaults)": ONE_PASS_AUTO,
}


def compare_one_pass(args: argparse.Namespace) -> int:
    """The gateway's full re-embed (UpsertBatch) with each configuration, runs alternating; images/s and ratio."""
    with tempfile.TemporaryDirectory(prefix="reembed-one-pass-") as tmp_name:
        tmp = Path(tmp_name)
        manifest, data_label = pick_catalogue(args, tmp)
        embedder_dir, classifier_dir, models_label = pick_models(tmp, args)
        threads = str(args.threads)

        rates: dict[str, list[float]] = {label: [] for label in CONFIGURATIONS}
        cpu_ms: dict[str, list[dict[str, float]]] = {label: [] for label in CONFIGURATIONS}  # CPU ms per image
        load_before = os.getloadavg()[0]
        print(f"re-embed through the gateway, one pass + int8 against the models as they are: {data_label}")
        print(f"models: {models_label}; {platform.machine()}, {os.cpu_count()} CPUs (shared)")
        options = Options(batch_size=args.batch_size, inflight=args.inflight, fetch_threads=8)
        fetcher = ImageFetcher(root=manifest.image_root)
        for repeat in range(args.repeats):
            for k, label in enumerate(CONFIGURATIONS):
                # A fresh stack and store each run, so every row is embedded (no incremental skip).
                run_dir = tmp / f"run{repeat}-{k}"
                stack = bench_stack(run_dir, classifier_dir, embedder_dir, threads, CONFIGURATIONS[label])
                stack.start()
                target = GatewayTarget(stack.address("gateway"), timeout_s=60)
                try:
                    before = cpu_by_process(stack)
                    summary = run(manifest, target, fetcher, options, rejects_path=tmp / "rejects.csv")
                    after = cpu_by_process(stack)
                finally:
                    target.close()
                    stack.stop()
                rates[label].append(summary.embedded_per_s)
                embedded = summary.added + summary.updated
                cpu_ms[label].append({name: 1000 * (after[name] - before[name]) / max(embedded, 1) for name in after})
                print(f"  run {repeat + 1}, {label}: {embedded} items in {summary.elapsed_s:.1f} s", flush=True)
    load_after = os.getloadavg()[0]
    print(f"\nload average {load_before:.1f} before, {load_after:.1f} after; best of {args.repeats} runs each\n")
    print("| configuration | images/s (each run) | best | x float, two calls |")
    print("| --- | --- | ---: | ---: |")
    base = max(rates["float, two calls"])
    for label, values in rates.items():
        best = max(values)
        print(f"| {label} | {', '.join(f'{v:.0f}' for v in values)} | {best:.0f} | {best / base:.2f}x |")
    # Where each configuration spends the two cores: CPU per image written, by process, from the best run.
    names = list(next(iter(cpu_ms.values()))[0])
    print("\nCPU ms per image written (the best run of each):\n")
    print("| configuration | " + " | ".join(names) + " | total |")
    print("| --- |" + " ---: |" * (len(names) + 1))
    for label, values in rates.items():
        used = cpu_ms[label][values.index(max(values))]
        print(f"| {label} | " + " | ".join(f"{used[n]:.2f}" for n in names) + f" | {sum(used.values()):.2f} |")
    return 0


def bench_stack(
    root: Path, classifier_dir: Path, embedder_dir: Path, threads: str, env: dict[str, str]
) -> ProcessStack:
    """The three services as processes, the gateway on an Edge store in `root`; `env`: more variables, each
    going to the service its prefix names."""

    def prefixed(prefix: str) -> dict[str, str]:
        return {k: v for k, v in env.items() if k.startswith(prefix)}

    return ProcessStack(
        root,
        classifier_env={"CLASSIFIER_INTRA_OP_THREADS": threads, **prefixed("CLASSIFIER_")},
        embedder_env={"EMBEDDER_INTRA_OP_THREADS": threads, **prefixed("EMBEDDER_")},
        gateway_env={
            "GATEWAY_DATA_DIR": str(root / "gateway-store"),
            "GATEWAY_EMBED_TIMEOUT_S": "30",
            "GATEWAY_CLASSIFY_TIMEOUT_S": "30",
            "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true",
            **prefixed("GATEWAY_"),
        },
        classifier_model_dir=classifier_dir,
        embedder_model_dir=embedder_dir,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="dataset folder (styles.csv + images/)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N rows")
    parser.add_argument("--classifier-model-dir", type=Path, default=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--embedder-model-dir", type=Path, default=REPO_ROOT / "models" / "embedder")
    parser.add_argument("--mode", choices=("direct", "gateway", "both"), default="both")
    parser.add_argument("--threads", type=int, default=1, help="ONNX intra-op threads per model service (deployed: 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--inflight", type=int, default=Options.inflight)
    parser.add_argument("--sample", type=int, default=2048, help="images for the in-process embedder breakdown")
    parser.add_argument(
        "--compare-one-pass",
        action="store_true",
        help="only the gateway's full re-embed, with the models as they are (float, two calls per photo) and with one"
        " pass + *_PRECISION=auto, two stacks side by side, alternating (issue 30)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs per stack with --compare-one-pass")
    args = parser.parse_args()
    if args.compare_one_pass:
        return compare_one_pass(args)

    with tempfile.TemporaryDirectory(prefix="reembed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        manifest, data_label = pick_catalogue(args, tmp)
        embedder_dir, classifier_dir, models_label = pick_models(tmp, args)
        stack = bench_stack(tmp, classifier_dir, embedder_dir, str(args.threads), {})
        addr = {name: stack.address(name) for name in ("classifier", "embedder", "gateway")}
        stack.start()
        try:
            print(f"re-embed throughput: {data_label} ({manifest.approximate_rows()} rows)")
            print(f"models: {models_label}")
            print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}")
            options = Options(batch_size=args.batch_size, inflight=args.inflight, fetch_threads=8)
            fetcher = ImageFetcher(root=manifest.image_root)

            def measure(title: str, target: Target) -> None:
                before = cpu_by_process(stack)
                try:
                    summary = run(manifest, target, fetcher, options, rejects_path=tmp / "rejects.csv")
                finally:
                    target.close()
                report(title, summary, before, cpu_by_process(stack))

            if args.mode in ("direct", "both"):
                for title in ("direct: full re-embed into a new Edge collection", "direct: incremental re-run"):
                    models = ModelClients(addr["embedder"], addr["classifier"], timeout_s=60, max_batch=args.batch_size)
                    measure(title, DirectTarget(EdgeCatalog(tmp / "direct-store"), models, "catalogue"))
            if args.mode in ("gateway", "both"):
                for title in ("gateway: full embed via UpsertBatch", "gateway: incremental re-run"):
                    measure(title, GatewayTarget(addr["gateway"], timeout_s=60))
        finally:
            stack.stop()
        embedder_internals(manifest, embedder_dir, args.threads, args.sample)
    return 0


if __name__ == "__main__":
    sys.exit(main())
