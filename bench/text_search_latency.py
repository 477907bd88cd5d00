"""Text search latency beside photo search: the three services as processes with the production models.

Starts classifier, embedder (with the text model beside it, models/text-embedder) and gateway (Qdrant Edge store
in a temporary directory), upserts the sample catalogue, then one blocking client makes sequential calls:
SearchText (default match: the nearest photo vectors to the text's vector) and photo Search (default filter) with the
same catalogue, and prints p50/p95/p99 per kind, measured in the same run.

    python bench/text_search_latency.py [--items 998] [--calls 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402

from bench.gateway_latency import timed  # noqa: E402
from fashionsearch.text_contract import TextModelSpec  # noqa: E402
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402
from testkit.catalogue_items import catalogue_items  # noqa: E402
from testkit.process_stack import ProcessStack  # noqa: E402

QUERIES = (
    "women blue kurtas",
    "men black formal shoes",
    "jeens",
    "t shirt",
    "tshirts men",
    "sari",
    "red dress",
    "silver watch women",
    "Puma Men Grey T-shirt",
    "navy blue casual shirt",
    "white sports shoes",
    "brown leather belt men",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=998, help="catalogue items to upsert")
    parser.add_argument("--calls", type=int, default=500, help="sequential calls per kind")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--catalogue", type=Path, default=REPO_ROOT / "sample_catalogue")
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models")
    args = parser.parse_args()
    text_model = TextModelSpec.load(args.models / "text-embedder")

    with tempfile.TemporaryDirectory(prefix="text-bench-") as tmp:
        stack = ProcessStack(
            Path(tmp),
            gateway_env={"GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true"},
            classifier_model_dir=args.models / "classifier",
            embedder_model_dir=args.models / "embedder",
        )
        stack.start()
        try:
            items = catalogue_items(args.catalogue, args.items)
            with grpc.insecure_channel(stack.address("gateway")) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                replies = list(stub.UpsertItems((gateway_pb2.UpsertItemsRequest(item=i) for i in items), timeout=600))
                failed = [r for r in replies if not r.upserted]
                if failed:
                    raise SystemExit(f"{len(failed)} upserts failed, e.g. {failed[0].error.message}")
                images = [item.image for item in items]

                def text(i: int) -> object:
                    request = gateway_pb2.SearchTextRequest(query=QUERIES[i % len(QUERIES)])
                    return stub.SearchText(request, timeout=10)

                def photo(i: int) -> object:
                    return stub.Search(gateway_pb2.SearchRequest(image=images[i % len(images)]), timeout=10)

                for i in range(args.warmup):
                    text(i)
                    photo(i)
                rows = {
                    "SearchText (default match: the text's vector)": timed(text, args.calls),
                    "Search by photo (default: predicted subCategory)": timed(photo, args.calls),
                }
        finally:
            stack.stop()

    print(
        f"Text vs photo search latency through the gateway: {len(items)} catalogue items, text model "
        f"{text_model.identity} (targets {text_model.target}), Qdrant Edge store, 3 services as processes on "
        f"{os.cpu_count()} CPUs ({platform.machine()}), one sequential client"
    )
    print()
    print(f"| {'call':<50} | calls | p50 ms | p95 ms | p99 ms | calls/s |")
    print(f"|{'-' * 52}|------:|-------:|-------:|-------:|--------:|")
    for label, r in rows.items():
        print(
            f"| {label:<50} | {r['calls']:>5} | {r['p50']:6.2f} | {r['p95']:6.2f} | {r['p99']:6.2f} | {r['rps']:7.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
