"""``python -m jobs.indexer``: keep the vector store's catalogue in step with a manifest.

Exit codes: 0 every row indexed (or unchanged); 2 the run completed but some rows were rejected (see the reject
file); 1 the run failed or was interrupted (run the same command again: it resumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from fashionsearch import metrics
from fashionsearch.store import open_catalog
from jobs.indexer.fetch import ImageFetcher
from jobs.indexer.manifest import Manifest, parse_shard
from jobs.indexer.runner import Options, Progress, ProgressMetrics, run
from jobs.indexer.targets import DirectTarget, GatewayTarget, ModelClients, Target

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REJECTS = 2

EPILOG = """\
modes:
  --gateway ADDR                  through the gateway (the Qdrant Edge store's single writer): incremental
                                  adds, updates and --prune.
  --qdrant-url URL | --qdrant-path DIR | --edge-dir DIR, with --embedder ADDR [--classifier ADDR]
                                  straight into the store. The alias (--collection) is updated in place while
                                  its vectors come from the running embedder; otherwise (first run, model
                                  upgrade) a new collection is built beside the live one and the alias is
                                  switched atomically when it is complete. Use --edge-dir only for such a
                                  rebuild or while the gateway is stopped (Edge allows one writer).

examples:
  python -m jobs.indexer --dataset ../shared/data/fashion-product-images-small --gateway localhost:50050
  python -m jobs.indexer --manifest products.jsonl --prune --qdrant-url http://qdrant:6333 \\
      --embedder embedder:50052 --classifier classifier:50051 --shard 3/8

A killed run resumes when started again with the same arguments: items already stored with the same content
hash are skipped.  --shard i/n splits the manifest by a hash of the product id, so n workers (e.g. a Kubernetes
indexed Job with --shard $JOB_COMPLETION_INDEX/n) can run against one Qdrant cluster; run the rebuild's alias
switch once, after all shards, with --switch-only.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.indexer",
        description="Index a product catalogue into the fashionsearch vector store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="folder with styles.csv and images/<id>.jpg")
    source.add_argument("--manifest", type=Path, help="generic manifest: .csv or .jsonl (id, image, name, ...)")
    p.add_argument("--image-root", type=Path, help="folder for relative image paths (default: the manifest's)")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--gateway", metavar="HOST:PORT", help="gateway address")
    dest.add_argument("--qdrant-url", metavar="URL", help="Qdrant server URL (e.g. http://localhost:6333)")
    dest.add_argument("--qdrant-path", type=Path, help="qdrant-client local mode folder (tests, small setups)")
    dest.add_argument("--edge-dir", type=Path, help="Qdrant Edge data directory (the gateway's GATEWAY_DATA_DIR)")
    p.add_argument(
        "--api-key-env",
        default="INDEXER_API_KEY",
        metavar="VAR",
        help="environment variable holding the gateway's write API key (default INDEXER_API_KEY)",
    )
    p.add_argument(
        "--qdrant-api-key-env",
        default="QDRANT_API_KEY",
        metavar="VAR",
        help="environment variable holding Qdrant's API key, for --qdrant-url (default QDRANT_API_KEY; unset: none)",
    )
    p.add_argument("--tls-ca", type=Path, help="PEM CA bundle: talk TLS to the gateway, trusting these CAs")
    p.add_argument("--embedder", metavar="HOST:PORT", help="embedder address (direct modes)")
    p.add_argument("--classifier", metavar="HOST:PORT", help="classifier address, for missing attributes")
    p.add_argument("--collection", default="catalogue", help="collection alias (default: catalogue)")
    p.add_argument("--prune", action="store_true", help="delete stored items that the manifest no longer lists")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="index only shard I of N (default 0/1)")
    p.add_argument("--no-switch", action="store_true", help="rebuild: leave the alias on the old collection")
    p.add_argument(
        "--switch-only",
        action="store_true",
        help="rebuild with shards: only switch the alias to the complete new collection (after all shards ran)",
    )
    p.add_argument("--keep-old", action="store_true", help="rebuild: keep the previous collection after switching")
    p.add_argument(
        "--max-reject-fraction",
        type=float,
        default=0.05,
        help="rebuild: do not switch when more rows than this were rejected (default 0.05)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="items per write batch (default 64)")
    p.add_argument(
        "--inflight", type=int, default=Options.inflight, help=f"write batches in flight (default {Options.inflight})"
    )
    p.add_argument("--fetch-threads", type=int, default=8, help="threads downloading http(s) images (default 8)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="deadline of one service call (default 30)")
    p.add_argument(
        "--url-timeout-s",
        type=float,
        default=10.0,
        help="total deadline of one image download: name lookup, connection, redirects and body (default 10)",
    )
    p.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="also fetch image URLs on loopback, private and link-local addresses (an intranet image server)",
    )
    p.add_argument(
        "--allow-paths-outside-root",
        action="store_true",
        help="a trusted manifest: also read absolute image paths and paths with '..' out of the image root",
    )
    p.add_argument("--rejects", type=Path, default=Path("indexer-rejects.csv"), help="reject file (CSV)")
    p.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument(
        "--progress-every-s",
        type=float,
        help="seconds between progress lines (default 0.2 on a terminal, else 10: one line each, for logs)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the run's progress as Prometheus metrics on this port (/metrics) while it runs",
    )
    p.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def make_target(args: argparse.Namespace) -> Target:
    if args.gateway:
        api_key = os.environ.get(args.api_key_env, "") or None
        tls_ca = args.tls_ca.read_bytes() if args.tls_ca else None
        return GatewayTarget(args.gateway, timeout_s=args.timeout_s, api_key=api_key, tls_ca=tls_ca)
    if not args.embedder:
        raise SystemExit("error: --embedder is required with --qdrant-url, --qdrant-path and --edge-dir")
    models = ModelClients(args.embedder, args.classifier, timeout_s=args.timeout_s, max_batch=args.batch_size)
    catalog = open_catalog(
        data_dir=args.edge_dir,
        qdrant_url=args.qdrant_url,
        qdrant_api_key=os.environ.get(args.qdrant_api_key_env, "") or None,
        qdrant_path=args.qdrant_path,
        timeout_s=int(args.timeout_s),
    )
    # With several shards no worker knows when the others are done: the alias is switched by --switch-only.
    sharded = parse_shard(args.shard)[1] > 1
    return DirectTarget(
        catalog,
        models,
        args.collection,
        switch=not (args.no_switch or sharded),
        keep_old=args.keep_old,
        sharded=sharded,
    )


def switch_only(target: Target, args: argparse.Namespace) -> int:
    if not isinstance(target, DirectTarget):
        print("error: --switch-only needs a direct mode (--qdrant-url, --qdrant-path or --edge-dir)", file=sys.stderr)
        return EXIT_FAILED
    try:
        target.prepare()
        if not target.rebuilding:
            print(f"alias {args.collection} already serves {target.identity}; nothing to switch")
            return EXIT_OK
        target.force_switch()
        for note in target.finish(complete=True):
            print(note)
    finally:
        target.close()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        shard = parse_shard(args.shard)
        manifest = Manifest.dataset(args.dataset) if args.dataset else Manifest.file(args.manifest, args.image_root)
        if not manifest.path.is_file():
            raise ValueError(f"manifest {manifest.path} does not exist")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.batch_size < 1 or args.inflight < 1:
        print("error: --batch-size and --inflight must be at least 1", file=sys.stderr)
        return EXIT_FAILED
    options = Options(
        batch_size=args.batch_size,
        inflight=args.inflight,
        fetch_threads=args.fetch_threads,
        prune=args.prune,
        shard=shard,
        max_reject_fraction=args.max_reject_fraction,
    )
    fetcher = ImageFetcher(
        root=manifest.image_root,
        timeout_s=args.url_timeout_s,
        allow_private_urls=args.allow_private_urls,
        allow_outside_root=args.allow_paths_outside_root,
    )
    measured = args.metrics_port is not None
    total = None if args.no_progress and not measured else manifest.approximate_rows() // shard[1]
    progress_metrics = None
    if measured:
        try:
            listener = metrics.start_listener("::", args.metrics_port)
        except OSError as exc:
            print(f"error: --metrics-port {args.metrics_port}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        progress_metrics = ProgressMetrics(total)
    target = make_target(args)
    if args.switch_only:
        return switch_only(target, args)
    try:
        summary = run(
            manifest,
            target,
            fetcher,
            options,
            rejects_path=args.rejects,
            progress=Progress(
                total, enabled=not args.no_progress, every_s=args.progress_every_s, metrics=progress_metrics
            ),
        )
    finally:
        target.close()
        if measured:
            listener.close()
    print(summary.render(args.rejects))
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2) + "\n", encoding="utf-8")
    if not summary.complete:
        return EXIT_FAILED
    return EXIT_REJECTS if summary.rejected else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
