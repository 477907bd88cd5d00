"""The gateway on a full disk, as separate processes (tiny fixture models, Qdrant Edge on a 40 MiB tmpfs): once the
disk fills (here from elsewhere, a ballast file), a write is refused with RESOURCE_EXHAUSTED and the reason, the
gateway keeps serving searches, and a restart on the full disk is one readable ERROR line and exit status 1, not
SIGBUS in a crash loop. Root only (mount); skipped, saying why, where mounting is not allowed. Bounded: a few
dozen items, deadlines on every call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from fashionsearch.store.edge import free_bytes
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc
from testkit.catalogue_items import catalogue_items
from testkit.process_stack import REPO_ROOT, ProcessStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RESERVE_MB = 8


def _upsert(stub: gateway_pb2_grpc.GatewayStub, items: list[gateway_pb2.CatalogueItem]) -> list:
    return list(stub.UpsertItems((gateway_pb2.UpsertItemsRequest(item=i) for i in items), timeout=60))


def test_a_full_disk_refuses_writes_keeps_searches_and_a_restart_says_why(tmp_path: Path, small_disk: Path) -> None:
    items = catalogue_items(REPO_ROOT / "sample_catalogue", 24)
    data_dir = small_disk / "store"
    env = {
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_STORE_MIN_FREE_MB": str(RESERVE_MB),
        "GATEWAY_ALLOW_UNAUTHENTICATED_WRITES": "true",
        "GATEWAY_LOG_LEVEL": "INFO",
    }
    stack = ProcessStack(tmp_path / "stack", gateway_env=env).start()
    try:
        with grpc.insecure_channel(stack.address("gateway")) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            assert all(r.upserted for r in _upsert(stub, items[:12]))
            # Something else fills the disk to just under the reserve.
            (small_disk / "ballast").write_bytes(b"\0" * max(0, free_bytes(small_disk) - (RESERVE_MB - 2) * 2**20))
            refused = _upsert(stub, items[12:])
            assert refused and not any(r.upserted for r in refused)
            error = refused[0].error
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "MiB free" in error.message, error
            search = gateway_pb2.SearchRequest(image=items[0].image, filter_mode=gateway_pb2.FILTER_MODE_NONE)
            hits = stub.Search(search, timeout=30).hits
            assert hits, "searches go on after the refusal"
            assert stub.GetStats(gateway_pb2.GetStatsRequest(), timeout=10).item_count == 12
        log = stack.log("gateway").read_text()
        assert "vector store refused upsert" in log and "Traceback" not in log
    finally:
        codes = stack.stop()
    assert codes.get("gateway") == 0, codes

    restart = subprocess.run(
        [sys.executable, "-m", "services.gateway"],
        cwd=REPO_ROOT,
        env={**os.environ, **stack.env("gateway")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (restart.stdout + restart.stderr).strip()
    assert restart.returncode == 1, f"status {restart.returncode}: {output[-2000:]}"
    errors = [line for line in output.splitlines() if '"level": "ERROR"' in line]
    assert len(errors) == 1 and "cannot start" in errors[0] and "MiB free" in errors[0], output[-2000:]
    assert "Traceback" not in output
