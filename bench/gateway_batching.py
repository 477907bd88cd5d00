"""Gateway throughput against the machine's limit, with dynamic batching off and on, in one run on the same cores.

Prints:
- the limit: images/s of a bare loop (no RPC) that decodes, preprocesses and runs both served models on the
  catalogue images, at the best batch size and thread layout; measured at the start and at the end of the run;
- the bare per-image latency of each model at batch 1 (one onnxruntime thread, as served);
- Search through the gateway at each concurrency, gRPC and HTTP, with batching off and on: calls, errors, p50,
  p99, searches/s, the fraction of the limit and on/off; each service's RSS before and after the load;
- where the time of one search goes at concurrency 1 (direct Classify and Embed calls, SearchById, Search).

Three stacks run side by side (classifier, embedder and gateway as processes, Qdrant Edge, the sample catalogue
upserted into each): "off" (*_BATCH_MAX_DELAY_MS=0, GATEWAY_BATCH_MAX_SIZE=1), "models" (the model services batch,
with the delay and size given here) and "models+gateway" (the gateway also sends concurrent searches' calls as
one batch call). Cells alternate between them, so all see the same machine. The load comes from a separate
Node.js process (bench/client/loadgen.mjs: @grpc/grpc-js, or node:http), which costs the services' cores far less
than a Python client; its own CPU seconds are printed. Needs Node.js >= 18 and `npm ci --prefix bench/client`
(`make bench` does it).

    python bench/gateway_batching.py [--classifier-model-dir models/classifier] [--embedder-model-dir
        models/embedder] [--seconds 5] [--concurrency 1,8,32,128] [--protocols grpc,http] [--delay-ms 2]
        [--max-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402
import onnxruntime as ort  # noqa: E402

from fashionsearch.images import ImageLimits, decode_pixels  # noqa: E402
from fashionsearch.model_contract import MODEL_FILE, ModelSpec, preprocess  # noqa: E402
from fashionsearch.model_variants import choose  # noqa: E402
from fashionsearch.v1 import classifier_pb2, embedder_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from testkit.catalogue_items import catalogue_items  # noqa: E402
from testkit.process_stack import ProcessStack, cpu_seconds, free_port  # noqa: E402

CLIENT_DIR = REPO_ROOT / "bench" / "client"
SERVICES = ("classifier", "embedder", "gateway")
#: --compare-one-pass: the models as served before issue 30 (float, two calls a photo, each model service running one
#: batch call at a time), and the defaults since: one trunk pass per photo, int8 where it pays, two batch calls at once.
TWO_CALLS_FLOAT = {
    "CLASSIFIER_PRECISION": "float",
    "EMBEDDER_PRECISION": "float",
    "CLASSIFIER_ONE_PASS": "false",
    "GATEWAY_ONE_PASS": "false",
    "CLASSIFIER_MAX_CONCURRENT_BATCHES": "1",
    "EMBEDDER_MAX_CONCURRENT_BATCHES": "1",
}
ONE_PASS_AUTO = {
    "CLASSIFIER_PRECISION": "auto",
    "EMBEDDER_PRECISION": "auto",
    "CLASSIFIER_ONE_PASS": "true",
    "GATEWAY_ONE_PASS": "true",
}


# ---- the limit: no RPC ------------------------------------------------------------------------------------------


def session(onnx_file: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


def served_files(model_dirs: dict[str, Path], one_pass: bool = False) -> dict[str, Path]:
    """The ONNX files a search runs: model.onnx of both models; with `one_pass`, only the file the classifier
    serves with PRECISION=auto and one pass on this CPU (fashionsearch/model_variants.py), when it gives vectors."""
    if one_pass:
        spec = ModelSpec.load(model_dirs["classifier"])
        variant, _ = choose(spec, "auto", embedding=True)
        if variant.embedding is not None:
            return {"classifier": model_dirs["classifier"] / variant.file}
    return {name: d / MODEL_FILE for name, d in model_dirs.items()}


class BareModels:
    """The served models with their preprocessing, called directly."""

    def __init__(self, files: dict[str, Path], threads: int) -> None:
        self.specs = {name: ModelSpec.load(f.parent) for name, f in files.items()}
        self.sessions = {name: session(f, threads) for name, f in files.items()}
        self.input_names = {name: s.get_inputs()[0].name for name, s in self.sessions.items()}

    def search_work(self, images: list[bytes]) -> None:
        """What the two model services do for these images: decode, preprocess, one inference per model."""
        for name, spec in self.specs.items():
            size = (spec.input.width, spec.input.height)
            batch = preprocess([decode_pixels(data, ImageLimits(), size) for data in images], spec.input)
            self.sessions[name].run(None, {self.input_names[name]: batch})


@dataclass
class Limit:
    per_s: float
    #: CPU ms (this process, all threads) per image: what one image costs with no RPC, however busy the machine.
    cpu_ms: float
    config: str


def bare_rate(models: BareModels, images: list[bytes], batch: int, loops: int, seconds: float) -> tuple[float, float]:
    """(images/s, CPU ms per image) of `loops` threads each running search_work on batches of `batch` images."""
    counts = [0] * loops
    start = threading.Barrier(loops + 1)

    def loop(i: int) -> None:
        start.wait()
        deadline = time.perf_counter() + seconds
        at = i * batch
        while time.perf_counter() < deadline:
            chunk = [images[(at + j) % len(images)] for j in range(batch)]
            models.search_work(chunk)
            counts[i] += batch
            at += batch * loops

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(loops)]
    for t in threads:
        t.start()
    start.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    done = sum(counts)
    return done / (time.perf_counter() - t0), (time.process_time() - cpu0) * 1000 / done


def limit(model_dirs: dict[str, Path], images: list[bytes], seconds: float) -> tuple[Limit, Limit]:
    """`model_dirs`: name -> ONNX file of each model a search runs (served_files)."""
    """The best images/s and the least CPU per image over batch sizes and thread layouts (all cores in
    onnxruntime, or one loop per core)."""
    cores = os.cpu_count() or 1
    layouts = {f"1 loop x {cores} ort threads": (BareModels(model_dirs, cores), 1)}
    if cores > 1:
        layouts[f"{cores} loops x 1 ort thread"] = (BareModels(model_dirs, 1), cores)
    measured = []
    for label, (models, loops) in layouts.items():
        models.search_work(images[:8])  # warm-up
        for batch in (1, 8, 32, 64):
            rate, cpu_ms = bare_rate(models, images, batch, loops, seconds)
            measured.append(Limit(rate, cpu_ms, f"batch {batch}, {label}"))
    return max(measured, key=lambda m: m.per_s), min(measured, key=lambda m: m.cpu_ms)


def bare_latency_ms(model_dirs: dict[str, Path], image: bytes, repeats: int = 300) -> dict[str, float]:
    """`model_dirs`: name -> ONNX file, as for limit()."""
    """Median ms of one onnxruntime call at batch 1 per model (one thread, as served), preprocessing excluded."""
    models = BareModels(model_dirs, 1)
    out = {}
    for name, spec in models.specs.items():
        size = (spec.input.width, spec.input.height)
        batch = preprocess([decode_pixels(image, ImageLimits(), size)], spec.input)
        feed = {models.input_names[name]: batch}
        for _ in range(20):
            models.sessions[name].run(None, feed)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            models.sessions[name].run(None, feed)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times) * 1000
    return out


# ---- load through the gateway -----------------------------------------------------------------------------------


def check_client() -> None:
    if shutil.which("node") is None or not (CLIENT_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        raise SystemExit(
            "bench/gateway_batching.py needs Node.js >= 18 and the load client's package: "
            "run `npm ci --prefix bench/client` (make bench does it)"
        )


def load(protocol: str, target: str, method: str, body: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    command = [
        "node",
        str(CLIENT_DIR / "loadgen.mjs"),
        *("--protocol", protocol, "--target", target, "--method", method, "--body", str(body)),
        *("--concurrency", str(concurrency), "--seconds", str(seconds), "--warmup", "1"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"load client failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


def measured_load(
    stack: ProcessStack,
    label: str,
    protocol: str,
    target: str,
    method: str,
    body: Path,
    concurrency: int,
    seconds: float,
) -> tuple[dict[str, Any], dict[str, float]]:
    """load() against `stack`, with each service's CPU seconds over the cell; a progress line on stderr."""
    before = {n: cpu_seconds(stack.pid(n)) for n in SERVICES}
    result = load(protocol, target, method, body, concurrency, seconds)
    cpu = {n: cpu_seconds(stack.pid(n)) - before[n] for n in SERVICES}
    print(
        f"  {label}: {result['per_s']:.0f}/s, p50 {result['p50_ms'] or 0:.1f} ms, errors {result['errors']}",
        file=sys.stderr,
        flush=True,
    )
    return result, cpu


def start_stack(root: Path, model_dirs: dict[str, Path], batching: dict[str, str], http_port: int) -> ProcessStack:
    """The three services; `batching` holds *_BATCH_* variables without their service prefix, e.g.
    {"CLASSIFIER_BATCH_MAX_DELAY_MS": "2", "GATEWAY_BATCH_MAX_SIZE": "1"}."""
    stack = ProcessStack(
        root,
        gateway_env={
            "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true",
            "GATEWAY_HTTP_ENABLED": "true",
            "GATEWAY_HTTP_PORT": str(http_port),
            **{k: v for k, v in batching.items() if k.startswith("GATEWAY_")},
        },
        classifier_env={k: v for k, v in batching.items() if k.startswith("CLASSIFIER_")},
        embedder_env={k: v for k, v in batching.items() if k.startswith("EMBEDDER_")},
        classifier_model_dir=model_dirs["classifier"],
        embedder_model_dir=model_dirs["embedder"],
    )
    return stack.start()


def upsert(stack: ProcessStack, items: list[gateway_pb2.CatalogueItem]) -> None:
    with grpc.insecure_channel(stack.address("gateway")) as channel:
        replies = list(
            gateway_pb2_grpc.GatewayStub(channel).UpsertItems(
                (gateway_pb2.UpsertItemsRequest(item=i) for i in items), timeout=600
            )
        )
    failed = [r.error.message for r in replies if not r.upserted]
    if failed:
        raise SystemExit(f"{len(failed)} upserts failed, e.g. {failed[0]}")


def cell(results: list[dict], cpu_ms: dict[str, float]) -> dict:
    """The repeats of one cell in one row: medians of rate and percentiles, summed calls and errors."""
    errors: dict[str, int] = {}
    for r in results:
        for kind, n in r["error_kinds"].items():
            errors[kind] = errors.get(kind, 0) + n
    finite = [r for r in results if r["p50_ms"] is not None]
    return {
        "calls": sum(int(r["calls"]) for r in results),
        "errors": sum(int(r["errors"]) for r in results),
        "error_kinds": errors,
        "per_s": statistics.median(float(r["per_s"]) for r in results),
        "p50_ms": statistics.median(float(r["p50_ms"]) for r in finite) if finite else None,
        "p99_ms": statistics.median(float(r["p99_ms"]) for r in finite) if finite else None,
        "cpu_ms": cpu_ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier-model-dir", type=Path, default=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--embedder-model-dir", type=Path, default=REPO_ROOT / "models" / "embedder")
    parser.add_argument("--catalogue", type=Path, default=REPO_ROOT / "sample_catalogue")
    parser.add_argument("--items", type=int, default=998)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per load cell")
    parser.add_argument("--repeats", type=int, default=2, help="off/on pairs per cell (the table shows medians)")
    parser.add_argument("--limit-seconds", type=float, default=1.5, help="seconds per batch size in the limit")
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--protocols", default="grpc,http")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="*_BATCH_MAX_DELAY_MS of the batching stack")
    parser.add_argument("--max-size", type=int, default=32, help="*_BATCH_MAX_SIZE of the batching stack")
    parser.add_argument(
        "--compare-one-pass",
        action="store_true",
        help="two stacks, both batching: the models as they are (float, a classifier and an embedder call per"
        " search) and one pass with *_PRECISION=auto (issue 30); each against its own limit",
    )
    parser.add_argument(
        "--one-pass-variant",
        action="append",
        default=[],
        metavar="LABEL:VAR=VALUE[,VAR=VALUE]",
        help="with --compare-one-pass, one more one-pass stack with these settings on top (repeatable), e.g."
        " 'two in flight:GATEWAY_BATCH_IN_FLIGHT=2,CLASSIFIER_MAX_CONCURRENT_BATCHES=2'",
    )
    args = parser.parse_args()
    if args.one_pass_variant and not args.compare_one_pass:
        parser.error("--one-pass-variant needs --compare-one-pass")
    variants = [parse_variant(parser, text) for text in args.one_pass_variant]
    check_client()

    model_dirs = {"classifier": args.classifier_model_dir, "embedder": args.embedder_model_dir}
    identities = {name: str(ModelSpec.load(d).identity) for name, d in model_dirs.items()}
    items = catalogue_items(args.catalogue, args.items)
    images = [item.image for item in items[:256]]
    query = items[0].image
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    protocols = args.protocols.split(",")
    on = {"BATCH_MAX_DELAY_MS": f"{args.delay_ms:g}", "BATCH_MAX_SIZE": str(args.max_size)}
    models_on = {f"{service}_{k}": v for service in ("CLASSIFIER", "EMBEDDER") for k, v in on.items()}
    modes = {  # what batches: nothing; the model services; the model services and the gateway's calls to them
        "off": {
            "CLASSIFIER_BATCH_MAX_DELAY_MS": "0",
            "EMBEDDER_BATCH_MAX_DELAY_MS": "0",
            "GATEWAY_BATCH_MAX_SIZE": "1",
        },
        "models": {**models_on, "GATEWAY_BATCH_MAX_SIZE": "1"},
        "models+gateway": {**models_on, "GATEWAY_BATCH_MAX_SIZE": str(args.max_size)},
    }
    files = dict.fromkeys(modes, served_files(model_dirs, one_pass=True))  # the services' defaults
    if args.compare_one_pass:
        batching = modes["models+gateway"]
        modes = {
            "float, two calls": {**batching, **TWO_CALLS_FLOAT},
            "one pass, auto": {**batching, **ONE_PASS_AUTO},
        }
        files = {"float, two calls": served_files(model_dirs), "one pass, auto": served_files(model_dirs, True)}
        for label, settings in variants:
            modes[f"one pass, auto, {label}"] = {**batching, **ONE_PASS_AUTO, **settings}
            files[f"one pass, auto, {label}"] = served_files(model_dirs, True)

    load_before = os.getloadavg()
    print("measuring the limit (no RPC) ...", file=sys.stderr, flush=True)
    limits = {mode: list(limit(f, images, args.limit_seconds)) for mode, f in files.items()}
    bare = {mode: bare_latency_ms(f, query) for mode, f in files.items()}

    rows: dict[tuple[str, int, str], dict] = {}
    rss: dict[str, dict[str, list[float]]] = {}
    hops: dict[str, dict[str, float]] = {}
    client_cpu = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        bodies = Path(tmp) / "bodies"
        bodies.mkdir()
        (bodies / "image.jpg").write_bytes(query)
        (bodies / "search.bin").write_bytes(gateway_pb2.SearchRequest(image=query).SerializeToString())
        (bodies / "classify.bin").write_bytes(classifier_pb2.ClassifyRequest(image=query, top_k=3).SerializeToString())
        (bodies / "embed.bin").write_bytes(embedder_pb2.EmbedRequest(image=query).SerializeToString())
        (bodies / "by_id.bin").write_bytes(gateway_pb2.SearchByIdRequest(id=items[1].id).SerializeToString())
        http_ports = {mode: free_port() for mode in modes}
        stacks: dict[str, ProcessStack] = {}
        try:
            for mode, batching in modes.items():
                print(f"starting the stack with batching {mode} ...", file=sys.stderr, flush=True)
                stacks[mode] = start_stack(Path(tmp) / mode, model_dirs, batching, http_ports[mode])
                upsert(stacks[mode], items)
            rss = {mode: {n: [stack.rss_mb(n)] for n in SERVICES} for mode, stack in stacks.items()}

            for mode, stack in stacks.items():  # where one search's time goes, at concurrency 1
                calls = {
                    "Classify": (stack.address("classifier"), "/fashionsearch.v1.Classifier/Classify", "classify.bin"),
                    "Embed": (stack.address("embedder"), "/fashionsearch.v1.Embedder/Embed", "embed.bin"),
                    "SearchById": (stack.address("gateway"), "/fashionsearch.v1.Gateway/SearchById", "by_id.bin"),
                    "Search": (stack.address("gateway"), "/fashionsearch.v1.Gateway/Search", "search.bin"),
                }
                hops[mode] = {}
                for label, (target, method, body) in calls.items():
                    result = load("grpc", target, method, bodies / body, 1, min(args.seconds, 3))
                    hops[mode][label] = float(result["p50_ms"])
                    client_cpu += float(result["client_cpu_s"])

            for concurrency in concurrencies:
                for protocol in protocols:
                    results: dict[str, list[dict]] = {mode: [] for mode in modes}
                    cpu_s = {mode: dict.fromkeys(SERVICES, 0.0) for mode in modes}
                    searches = dict.fromkeys(modes, 0)
                    for _ in range(args.repeats):  # off, on, off, on: both see the same machine
                        for mode, stack in stacks.items():
                            if protocol == "grpc":
                                target, method = stack.address("gateway"), "/fashionsearch.v1.Gateway/Search"
                                body = "search.bin"
                            else:
                                target, method, body = f"127.0.0.1:{http_ports[mode]}", "/v1/search", "image.jpg"
                            label = f"{protocol} c={concurrency} batching {mode}"
                            result, cpu = measured_load(
                                stack, label, protocol, target, method, bodies / body, concurrency, args.seconds
                            )
                            for n in SERVICES:
                                cpu_s[mode][n] += cpu[n]
                            # The client's 1 s warm-up is inside the CPU window, so its calls count too.
                            searches[mode] += int(result["calls"]) + int(result["warmup_calls"])
                            client_cpu += float(result["client_cpu_s"])
                            results[mode].append(result)
                    for mode in modes:
                        cpu_ms = {n: cpu_s[mode][n] * 1000 / max(searches[mode], 1) for n in SERVICES}
                        rows[(protocol, concurrency, mode)] = cell(results[mode], cpu_ms)
                for mode, stack in stacks.items():
                    for n in SERVICES:
                        rss[mode][n].append(stack.rss_mb(n))
        finally:
            for stack in stacks.values():
                stack.stop()

    print("measuring the limit again ...", file=sys.stderr, flush=True)
    for mode, f in files.items():
        limits[mode] += limit(f, images, args.limit_seconds)
    load_after = os.getloadavg()
    report(args, identities, load_before, load_after, limits, files, bare, rows, hops, rss, client_cpu)
    return 0


def parse_variant(parser: argparse.ArgumentParser, text: str) -> tuple[str, dict[str, str]]:
    """'LABEL:VAR=VALUE,VAR=VALUE' -> (label, settings); a malformed one stops the bench with a usage error."""
    label, _, pairs = text.partition(":")
    settings = dict(pair.split("=", 1) for pair in pairs.split(",") if "=" in pair)
    if not label or not settings or len(settings) != len(pairs.split(",")):
        parser.error(f"--one-pass-variant {text!r}: expected LABEL:VAR=VALUE[,VAR=VALUE]")
    return label, settings


def report(args, identities, load_before, load_after, limits, files, bare, rows, hops, rss, client_cpu):
    """`limits`, `files`, `bare`: per mode (the models a mode's search runs may differ: --compare-one-pass)."""
    baseline = next(iter(limits))
    cores = os.cpu_count() or 1
    the_limits, limit_cpus = {}, {}
    for mode, measured in limits.items():
        rate_limits, cpu_limits = measured[0::2], measured[1::2]
        the_limits[mode] = statistics.fmean(m.per_s for m in rate_limits)
        limit_cpus[mode] = statistics.fmean(m.cpu_ms for m in cpu_limits)
    print(
        f"\nGateway Search with dynamic batching off and on, against the limit; {identities['classifier']},"
        f" {identities['embedder']}; {args.items} catalogue items in Qdrant Edge; a catalogue 60x80 JPEG query;"
        f" the services, the load client (Node.js, a separate process) and the limit loop on the same {cores} CPUs"
        f" ({platform.machine()}); load average {load_before[0]:.1f} before, {load_after[0]:.1f} after;"
        f" batching in the model services (models): *_BATCH_MAX_DELAY_MS={args.delay_ms:g},"
        f" *_BATCH_MAX_SIZE={args.max_size}; of the gateway's calls (gateway): GATEWAY_BATCH_MAX_SIZE={args.max_size};"
        f" {args.repeats} x {args.seconds:g} s per cell, alternating off and on\n"
    )
    printed: set[tuple[Path, ...]] = set()
    for mode, measured in limits.items():
        served = tuple(files[mode].values())
        if served in printed:
            continue
        printed.add(served)
        rate_limits, cpu_limits = measured[0::2], measured[1::2]
        names = ", ".join(f"{p.parent.name}/{p.name}" for p in served)
        print(
            f"Limit of {mode} (decode + preprocess + {names}, no RPC): "
            + ", ".join(f"{m.per_s:,.0f} images/s ({m.config})" for m in rate_limits)
            + f" at the start and the end; the ratios use the mean, {the_limits[mode]:,.0f}/s. CPU per image: "
            + ", ".join(f"{m.cpu_ms:.2f} ms ({m.config})" for m in cpu_limits)
            + f"; mean {limit_cpus[mode]:.2f} ms, i.e. {cores * 1000 / limit_cpus[mode]:,.0f} images/s on {cores}"
            " idle cores."
        )
        latency = ", ".join(f"{name} {ms:.2f} ms" for name, ms in bare[mode].items())
        print(f"Bare model latency at batch 1 (one onnxruntime thread): {latency}\n")
    print(
        "searches/s and x limit are wall-clock, so they move with the machine's other load; CPU ms per search"
        " (all three services) and x limit by CPU (the bare loop's CPU per image over it) hardly do.\n"
    )
    print(f"| protocol | conc. | mode | calls | errors | p50 ms | p99 ms | searches/s | x limit | / {baseline}", end="")
    print(f" | CPU ms per search: classifier + embedder + gateway | x limit by CPU | / {baseline} by CPU |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for (protocol, concurrency, mode), r in rows.items():
        ratio = cpu_ratio = ""
        cpu = sum(r["cpu_ms"].values())
        the_limit, limit_cpu_ms = the_limits[mode], limit_cpus[mode]
        if mode != baseline:
            off = rows[(protocol, concurrency, baseline)]
            ratio = f"{r['per_s'] / off['per_s']:.2f}x" if off["per_s"] else "-"
            cpu_ratio = f"{sum(off['cpu_ms'].values()) / cpu:.2f}x"
        p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
        p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
        split = " + ".join(f"{r['cpu_ms'][n]:.2f}" for n in SERVICES)
        print(
            f"| {protocol} | {concurrency} | {mode} | {r['calls']} | {r['errors']} | {p50} | {p99}"
            f" | {r['per_s']:.0f} | {r['per_s'] / the_limit:.2f} | {ratio} | {split} = {cpu:.2f}"
            f" | {limit_cpu_ms / cpu:.2f} | {cpu_ratio} |"
        )
    errors = {f"{p} c={c} {m}": r["error_kinds"] for (p, c, m), r in rows.items() if r["errors"]}
    if errors:
        print(f"\nErrors: {errors}")
    print(f"\nThe load client used {client_cpu:.1f} CPU s in all.")

    print(
        "\nOne call at a time (p50 ms, gRPC from the load client; Classify and Embed run concurrently in a Search):\n"
    )
    labels = list(next(iter(hops.values())))
    print("| batching | " + " | ".join(labels) + " |")
    print("| --- |" + " ---: |" * len(labels))
    for mode, values in hops.items():
        print(f"| {mode} | " + " | ".join(f"{values[label]:.2f}" for label in labels) + " |")

    print("\n| service | batching | RSS MB: idle, after each concurrency |")
    print("| --- | --- | --- |")
    for mode, services in rss.items():
        for name, values in services.items():
            print(f"| {name} | {mode} | " + ", ".join(f"{v:.1f}" for v in values) + " |")

    print(f"\nGoals (each mode against {baseline}):")
    for (protocol, concurrency, mode), on in rows.items():
        if mode == baseline or concurrency not in (1, 32):
            continue
        off = rows[(protocol, concurrency, baseline)]
        the_limit, limit_cpu_ms = the_limits[mode], limit_cpus[mode]
        if concurrency == 32:
            on_cpu, off_cpu = sum(on["cpu_ms"].values()), sum(off["cpu_ms"].values())
            print(
                f"  {protocol} c=32 {mode}: {on['per_s']:.0f}/s = {on['per_s'] / the_limit:.2f}x the limit,"
                f" {limit_cpu_ms / on_cpu:.2f}x by CPU (goal >= 0.7); {on['per_s'] / max(off['per_s'], 1e-9):.2f}x"
                f" off, {off_cpu / on_cpu:.2f}x by CPU (goal >= 2.5)"
            )
        else:
            print(
                f"  {protocol} c=1 {mode}: p50 {on['p50_ms']:.2f} ms = {on['p50_ms'] / off['p50_ms']:.2f}x off"
                " (goal <= 1.1),"
                f" {on['p50_ms'] - sum(bare[mode].values()):.2f} ms above its bare models one after the other,"
                f" {on['p50_ms'] - max(bare[mode].values()):.2f} ms above the slower one (goal <= 2)"
            )
    total_errors = sum(int(r["errors"]) for r in rows.values())
    print(f"  errors: {total_errors} (goal 0)")


if __name__ == "__main__":
    sys.exit(main())
