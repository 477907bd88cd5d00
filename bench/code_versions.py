"""Gateway Search of two versions of the code side by side, in one run on the same cores.

bench/gateway_batching.py compares configurations of one checkout; this compares checkouts. Each stack runs the
services of its own checkout (classifier, embedder, gateway as processes, Qdrant Edge, the sample catalogue
upserted), all serving the same model folders, with the batching as deployed (bench/gateway_batching.py's
--compare-one-pass stacks): "float, two calls" of the older checkout (the models as served before issue 30),
then "one pass" of the older checkout and of this one. The cells alternate between the stacks, so all see the
same machine; each round starts one stack later, so none always runs right after the same other one. The load
comes from bench/client/loadgen.mjs (Node.js; `npm ci --prefix bench/client` once).

    git -C . archive BASE | tar -x -C /tmp/before     # the older code, e.g. main before a change
    python bench/code_versions.py /tmp/before [--concurrency 1,32] [--seconds 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.gateway_batching import (  # noqa: E402
    ONE_PASS_AUTO,
    SERVICES,
    TWO_CALLS_FLOAT,
    check_client,
    measured_load,
    upsert,
)
from fashionsearch.v1 import gateway_pb2  # noqa: E402
from testkit.catalogue_items import catalogue_items  # noqa: E402
from testkit.process_stack import ProcessStack  # noqa: E402

BATCHING = {
    "CLASSIFIER_BATCH_MAX_DELAY_MS": "2",
    "EMBEDDER_BATCH_MAX_DELAY_MS": "2",
    "CLASSIFIER_BATCH_MAX_SIZE": "32",
    "EMBEDDER_BATCH_MAX_SIZE": "32",
    "GATEWAY_BATCH_MAX_SIZE": "32",
}


def start(root: Path, code_root: Path, env: dict[str, str], model_dirs: dict[str, Path]) -> ProcessStack:
    stack = ProcessStack(
        root,
        gateway_env={"GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true", **_prefixed(env, "GATEWAY_")},
        classifier_env=_prefixed(env, "CLASSIFIER_"),
        embedder_env=_prefixed(env, "EMBEDDER_"),
        classifier_model_dir=model_dirs["classifier"],
        embedder_model_dir=model_dirs["embedder"],
        code_root=code_root,
    )
    return stack.start()


def _prefixed(env: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(prefix)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "before", type=Path, nargs="?", help="the older checkout (a folder with its services/ and fashionsearch/)"
    )
    parser.add_argument("--classifier-model-dir", type=Path, default=REPO_ROOT / "models" / "classifier")
    parser.add_argument("--embedder-model-dir", type=Path, default=REPO_ROOT / "models" / "embedder")
    parser.add_argument("--items", type=int, default=998)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the stacks (the table shows medians)")
    args = parser.parse_args()
    if args.before is None:  # `make bench` runs every script without arguments: there is nothing to compare
        print("bench/code_versions.py: give the older checkout to compare with (see --help); skipped", file=sys.stderr)
        return 0
    check_client()
    before = args.before.resolve()
    if not (before / "services" / "gateway").is_dir():
        raise SystemExit(f"{before} is not a checkout of this repository (no services/gateway)")
    model_dirs = {"classifier": args.classifier_model_dir, "embedder": args.embedder_model_dir}
    stacks_wanted: dict[str, tuple[Path, dict[str, str]]] = {
        "float, two calls (before)": (before, {**BATCHING, **TWO_CALLS_FLOAT}),
        "one pass (before)": (before, {**BATCHING, **ONE_PASS_AUTO}),
        "one pass (this code)": (REPO_ROOT, {**BATCHING, **ONE_PASS_AUTO}),
    }
    items = catalogue_items(REPO_ROOT / "sample_catalogue", args.items)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-code-versions-") as tmp:
        body = Path(tmp) / "search.bin"
        body.write_bytes(gateway_pb2.SearchRequest(image=items[0].image).SerializeToString())
        stacks: dict[str, ProcessStack] = {}
        try:
            for number, (label, (code_root, env)) in enumerate(stacks_wanted.items()):
                print(f"starting {label} ...", file=sys.stderr, flush=True)
                stacks[label] = start(Path(tmp) / f"stack{number}", code_root, env, model_dirs)
                upsert(stacks[label], items)
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                results: dict[str, list[dict[str, Any]]] = {label: [] for label in stacks}
                cpu_s = {label: dict.fromkeys(SERVICES, 0.0) for label in stacks}
                searches = dict.fromkeys(stacks, 0)
                order = list(stacks.items())
                for round_number in range(args.repeats):
                    # Each round starts one stack later, so no stack always follows the same one.
                    shift = round_number % len(order)
                    for label, stack in order[shift:] + order[:shift]:
                        target, method = stack.address("gateway"), "/fashionsearch.v1.Gateway/Search"
                        cell = f"c={concurrency} {label}"
                        result, cpu = measured_load(
                            stack, cell, "grpc", target, method, body, concurrency, args.seconds
                        )
                        for n in SERVICES:
                            cpu_s[label][n] += cpu[n]
                        searches[label] += int(result["calls"]) + int(result["warmup_calls"])  # both in the window
                        results[label].append(result)
                for label in stacks:
                    rows[(concurrency, label)] = {
                        "errors": sum(int(r["errors"]) for r in results[label]),
                        "p50_ms": statistics.median(float(r["p50_ms"] or 0) for r in results[label]),
                        "per_s": statistics.median(float(r["per_s"]) for r in results[label]),
                        "cpu_ms": {n: cpu_s[label][n] * 1000 / max(searches[label], 1) for n in SERVICES},
                    }
        finally:
            for stack in stacks.values():
                stack.stop()
    load_after = os.getloadavg()
    print(
        f"\nGateway Search over gRPC, {args.items} catalogue items, a 60x80 catalogue JPEG query; before: {before};"
        f" load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min), on {os.cpu_count()} CPUs;"
        f" medians of {args.repeats} x {args.seconds:g} s per cell\n"
    )
    print(
        "| conc. | stack | errors | p50 ms | searches/s | / float (before) | / one pass (before) |"
        " CPU ms per search: classifier + embedder + gateway |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for (concurrency, label), row in rows.items():
        floats, one_pass = rows[(concurrency, "float, two calls (before)")], rows[(concurrency, "one pass (before)")]
        cpu = row["cpu_ms"]
        print(
            f"| {concurrency} | {label} | {row['errors']} | {row['p50_ms']:.1f} | {row['per_s']:.0f} |"
            f" {row['per_s'] / floats['per_s']:.2f}x (p50 {row['p50_ms'] / floats['p50_ms']:.2f}x) |"
            f" {row['per_s'] / one_pass['per_s']:.2f}x |"
            f" {cpu['classifier']:.2f} + {cpu['embedder']:.2f} + {cpu['gateway']:.2f} = {sum(cpu.values()):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
