"""``python -m jobs.backup create|restore|list|compact``: back up the catalogue's collection, restore it blue/green,
and have the gateway fold its own writes into a new graph (compact).

Exit codes: 0 done; 1 failed (nothing switched); 3 refused (the backup's embedder is not the one that serves).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fashionsearch.errors import StoreError
from fashionsearch.store import CollectionCatalog, CollectionInfo, EmbedderIdentity, open_catalog
from fashionsearch.store.backup import (
    BackupInfo,
    backup_name,
    list_backups,
    read_manifest,
    restore_into,
    write_backup,
)
from fashionsearch.store.base import check_name, versioned_name
from fashionsearch.store.lock import StoreLockedError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 3

EPILOG = """\
stores (one of):
  --gateway-http URL   the gateway, which owns its Qdrant Edge store: it writes the backup itself, while it
                       serves and takes writes, into its GATEWAY_BACKUP_DIR (POST /v1/admin/backup, a write key)
  --edge-dir DIR       a Qdrant Edge data directory no gateway serves (create), or beside a running gateway
                       (restore: the new collection is built beside the live one, then the alias switches)
  --qdrant-url URL | --qdrant-path DIR   a Qdrant server (or qdrant-client's local folder)

examples:
  python -m jobs.backup create --gateway-http http://127.0.0.1:8080 --backups data/backups
  python -m jobs.backup list --backups data/backups
  python -m jobs.backup compact --gateway-http http://127.0.0.1:8080
  python -m jobs.backup restore catalogue--embedder-8-20261206T081500123456Z --backups data/backups \\
      --edge-dir data/qdrant-edge

A restore builds a new collection from the backup (into Qdrant Edge, from the shard files a backup of an Edge
collection holds, graph included: no index build; --from-points writes the points and builds the graph instead),
checks its point count against the backup, then switches the alias (--no-switch leaves it) and drops the previous
collection (--keep-old keeps it).
It refuses a backup made by another embedder than the live collection's (or --expect-embedder MODEL@VERSION's).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.backup",
        description="Back up and restore the fashionsearch catalogue (vectors and payloads).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=("create", "restore", "list", "compact"))
    p.add_argument("name", nargs="?", help="restore: the backup's name (see list), or 'latest'")
    p.add_argument("--backups", type=Path, help="the folder of backups (all but compact)")
    p.add_argument("--collection", default="catalogue", help="the alias the gateway serves (default: catalogue)")
    store = p.add_mutually_exclusive_group()
    store.add_argument("--gateway-http", metavar="URL", help="the gateway's HTTP address")
    store.add_argument("--edge-dir", type=Path, help="a Qdrant Edge data directory")
    store.add_argument("--qdrant-url", help="a Qdrant server")
    store.add_argument("--qdrant-path", type=Path, help="qdrant-client's local mode folder")
    p.add_argument("--api-key-env", default="FASHIONSEARCH_API_KEY", help="env var holding the gateway's write key")
    p.add_argument("--expect-embedder", metavar="MODEL@VERSION", help="restore: the embedder that will serve")
    p.add_argument("--no-switch", action="store_true", help="restore: build the collection, leave the alias")
    p.add_argument("--keep-old", action="store_true", help="restore: keep the collection the alias pointed at")
    p.add_argument(
        "--from-points", action="store_true", help="restore: write the points and build the graph, not the shard files"
    )
    p.add_argument("--timeout-s", type=float, default=3600.0, help="the gateway's backup call (default: 3600)")
    p.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def _catalog(args: argparse.Namespace) -> CollectionCatalog:
    if not (args.edge_dir or args.qdrant_url or args.qdrant_path):
        raise StoreError("name the store: --edge-dir, --qdrant-url or --qdrant-path")
    return open_catalog(data_dir=args.edge_dir, qdrant_url=args.qdrant_url, qdrant_path=args.qdrant_path)


def create(args: argparse.Namespace) -> BackupInfo:
    if args.gateway_http:
        return create_through_gateway(args)
    catalog = _catalog(args)
    try:
        collection = catalog.resolve(args.collection)
        if collection is None:
            raise StoreError(f"{catalog.label}: no collection or alias {args.collection}")
        try:
            index = catalog.open(collection)
        except StoreLockedError as locked:
            raise StoreError(f"{locked} (while the gateway serves it, back up through it: --gateway-http)") from None
        try:
            return write_backup(index, args.backups, backup_name(collection), source=f"{catalog.label} {collection}")
        finally:
            catalog.release(index)
    finally:
        catalog.close()


def _admin_call(args: argparse.Namespace, what: str) -> dict[str, Any]:
    """POST /v1/admin/<what> on the gateway with the write key; its JSON answer."""
    key = os.environ.get(args.api_key_env, "")
    request = urllib.request.Request(
        args.gateway_http.rstrip("/") + f"/v1/admin/{what}", data=b"{}", method="POST",
        headers={"content-type": "application/json", **({"x-api-key": key} if key else {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=args.timeout_s) as response:  # noqa: S310 - an operator's URL
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as refused:
        raise StoreError(f"the gateway refused the {what}: HTTP {refused.code} {refused.read()[:500]!r}") from None
    except (urllib.error.URLError, OSError) as down:
        raise StoreError(f"cannot reach the gateway at {args.gateway_http}: {down}") from None


def create_through_gateway(args: argparse.Namespace) -> BackupInfo:
    return read_manifest(args.backups / _admin_call(args, "backup")["backup"])


def _expected_embedder(args: argparse.Namespace, live_info: CollectionInfo | None) -> EmbedderIdentity | None:
    if args.expect_embedder:
        model, sep, version = args.expect_embedder.rpartition("@")
        if not sep or not model or not version:
            raise StoreError(f"--expect-embedder {args.expect_embedder!r}: write MODEL@VERSION, e.g. embedder@8")
        return EmbedderIdentity(model, version)
    return live_info.embedder if live_info is not None else None


def restore(args: argparse.Namespace) -> int:
    backups = list_backups(args.backups)
    if not args.name:
        raise StoreError("restore needs the backup's name (python -m jobs.backup list), or 'latest'")
    chosen = backups[-1] if args.name == "latest" and backups else read_manifest(args.backups / args.name)
    catalog = _catalog(args)
    try:
        live = catalog.resolve(args.collection)
        expected = _expected_embedder(args, catalog.info(live) if live else None)
        if expected is not None and chosen.embedder != expected:
            print(
                f"refused: backup {chosen.name} holds vectors of {chosen.embedder}, but {expected} serves"
                f" {args.collection}; its vectors would not be comparable with the queries'"
                " (restore with --expect-embedder once that embedder serves again, or re-index)",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")  # to the microsecond: two restores in one second
        target = check_name(f"{versioned_name(args.collection, chosen.embedder)}-restored-{stamp}")
        index = catalog.open(target)
        try:
            count = restore_into(index, chosen, shard_copy=not args.from_points)
        except BaseException:
            catalog.release(index)
            catalog.drop(target)
            raise
        catalog.release(index)
        print(f"restored {count} points of backup {chosen.name} into {target}")
        if args.no_switch:
            print(f"alias {args.collection} not switched (--no-switch)")
            return EXIT_OK
        catalog.switch(args.collection, target)
        print(f"alias {args.collection} switched to {target}")
        if live is not None and live != target and not args.keep_old:
            dropped = catalog.drop(live)
            print(f"previous collection {live} " + ("dropped" if dropped else "is still open: its holder drops it"))
        return EXIT_OK
    finally:
        catalog.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "compact":
            if not args.gateway_http:
                raise StoreError("compact runs in the gateway, which owns the store: --gateway-http URL")
            done = _admin_call(args, "compact")
            print(
                f"compacted {done['previous']} into {done['collection']}: {done['points']} points,"
                f" {done['replayed_writes']} writes replayed, {done['seconds']:.1f} s"
            )
            return EXIT_OK
        if args.backups is None:
            raise StoreError(f"{args.command} needs --backups DIR")
        if args.command == "list":
            for b in list_backups(args.backups):
                print(
                    f"{b.name}  {b.created}  {b.embedder}  dim {b.dim}  {b.points} points"
                    f"  {b.size_bytes / 2**20:.1f} MiB  {b.seconds:.1f} s  ({b.source})"
                )
            return EXIT_OK
        if args.command == "create":
            made = create(args)
            print(f"backup {made.name}: {made.points} points of {made.embedder} in {made.seconds:.1f} s -> {made.path}")
            return EXIT_OK
        return restore(args)
    except StoreError as failed:
        print(f"error: {failed}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
