"""A full disk under the Qdrant Edge store: writes are refused with a clear error before qdrant-edge's memory-mapped
files could fault (SIGBUS), reads go on, and a restart on the full disk says why instead of dying.

The disk is a 40 MiB tmpfs mounted for the test (root only; skipped, saying why, where mounting is not allowed).
Each step runs in a child process, so a SIGBUS shows as the child's exit status instead of killing pytest; every
child is bounded by a batch count and a timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fashionsearch.errors import StoreFullError
from fashionsearch.store.backup import write_backup
from fashionsearch.store.base import EmbedderIdentity, StoredPoint
from fashionsearch.store.brute import BruteForceIndex
from testkit.full_disk import fill_up
from testkit.process_stack import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RESERVE_BYTES = 4 * 1024 * 1024
CHILD_TIMEOUT_S = 180

_FILL = """
import json, sys
import numpy as np
from fashionsearch.errors import StoreFullError
from fashionsearch.store.base import EmbedderIdentity, StoredPoint
from fashionsearch.store.edge import EdgeIndex

index = EdgeIndex(sys.argv[1], "catalogue", min_free_bytes=int(sys.argv[2]))
index.ensure_collection(64, EmbedderIdentity("embedder", "1"))
rng = np.random.default_rng(0)
stored, refused = 0, None
for batch in range(2000):  # 40 MiB holds far fewer: the loop ends on the refusal
    points = [
        StoredPoint(stored + i + 1, rng.standard_normal(64).astype(np.float32), {"name": "x" * 200, "gender": "Men"})
        for i in range(64)
    ]
    try:
        index.upsert(points)
    except StoreFullError as full:
        refused = full.message
        break
    stored += len(points)
hits = index.search(np.zeros(64, dtype=np.float32), 3, {"gender": "Men"})
print(json.dumps({"stored": stored, "refused": refused, "count": index.count(), "hits": len(hits)}))
index.close()
"""

_REOPEN = """
import json, sys
from fashionsearch.errors import StoreFullError
from fashionsearch.store.edge import EdgeIndex

try:
    index = EdgeIndex(sys.argv[1], "catalogue", min_free_bytes=int(sys.argv[2]))
except StoreFullError as full:
    print(json.dumps({"refused": full.message}))
else:
    print(json.dumps({"count": index.count()}))
    index.close()
"""


def _child(script: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, f"the store process died with status {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_full_disk_refuses_writes_keeps_reads_and_says_why_at_start(small_disk: Path) -> None:
    filled = _child(_FILL, str(small_disk), str(RESERVE_BYTES))
    assert filled["refused"] is not None, filled
    assert "free" in str(filled["refused"]) and str(small_disk) in str(filled["refused"])
    assert int(filled["stored"]) > 0 and filled["count"] == filled["stored"]  # every acknowledged write is there
    assert filled["hits"] == 3  # reads go on after the refusal

    # A restart on the full disk: loading a shard fills in its files' sparse parts (more than this disk has left),
    # which killed every restart with SIGBUS; now it says why, even with no reserve at all.
    for reserve in (RESERVE_BYTES, 0):
        reopened = _child(_REOPEN, str(small_disk), str(reserve))
        assert "unallocated parts" in str(reopened.get("refused")), reopened


_SWITCH = """
import json, logging, os, sys
import numpy as np
from fashionsearch.errors import StoreFullError
from fashionsearch.store.base import EmbedderIdentity, StoredPoint
from fashionsearch.store.edge import EdgeCatalog
from testkit.full_disk import fill_up

class Count(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []
    def emit(self, record):
        self.lines.append((record.getMessage(), record.exc_info is not None))

warnings = Count()
logging.getLogger("fashionsearch.store").addHandler(warnings)
root, identity = sys.argv[1], EmbedderIdentity("embedder", "1")
catalog = EdgeCatalog(root, min_free_bytes=int(sys.argv[2]))
live = catalog.live("catalogue")  # the gateway's index: no collection yet, created fresh (no reload to fill in)
live.ensure_collection(64, identity)
live.upsert([StoredPoint(1, np.ones(64, dtype=np.float32), {"name": "live"})])
built = catalog.open("cat-b")  # a rebuild or restore beside it
built.ensure_collection(64, identity)
built.close()
out = {}
filler = fill_up(root)  # another tenant of the volume takes what is left
try:
    catalog.switch("catalogue", "cat-b")
except StoreFullError as full:
    out["switch"] = full.message
out["alias"] = catalog.resolve("catalogue")
out["leftovers"] = sorted(name for name in os.listdir(root) if name.endswith(".tmp"))
filler.unlink()
catalog.switch("catalogue", "cat-b")  # room for the pointer now, not for loading cat-b's shard
warnings.lines.clear()
out["served"] = [len(live.search(np.ones(64, dtype=np.float32), 3, {})) for _ in range(20)]
out["warnings"] = warnings.lines
print(json.dumps(out))
live.close()
"""


def test_an_alias_switch_on_a_full_disk_is_refused_and_the_live_collection_keeps_serving(small_disk: Path) -> None:
    switched = _child(_SWITCH, str(small_disk), str(RESERVE_BYTES))
    # The pointer file cannot be written: a clear refusal naming the disk, the alias where it was, nothing left over.
    assert "switching alias catalogue to cat-b refused" in str(switched.get("switch")), switched
    assert str(small_disk) in str(switched["switch"])
    assert switched["alias"] == "catalogue" and switched["leftovers"] == []
    # The alias moved but the new collection cannot be loaded on this disk: the gateway keeps serving the one it
    # has, and says why once (not a traceback per request).
    assert switched["served"] == [1] * 20
    [(message, with_traceback)] = switched["warnings"]
    assert "cat-b" in message and "free" in message and not with_traceback, switched["warnings"]


def test_a_backup_onto_a_full_disk_is_refused_and_leaves_nothing_behind(small_disk: Path) -> None:
    index = BruteForceIndex()
    index.ensure_collection(8, EmbedderIdentity("embedder", "1"))
    index.upsert([StoredPoint(i, np.full(8, i, dtype=np.float32), {"name": "x" * 200}) for i in range(1, 2001)])
    filler = fill_up(small_disk)  # what else lives on the backups' volume
    backups = small_disk / "backups"
    with pytest.raises(StoreFullError, match="is full") as refused:
        write_backup(index, backups, "catalogue-1", source="test")
    assert str(backups) in refused.value.message
    assert list(backups.iterdir()) == []  # no .partial- copy left to fill the disk further
    filler.unlink()
    assert write_backup(index, backups, "catalogue-2", source="test").points == 2000


_CLOSE = """
import json, sys
import numpy as np
from fashionsearch.errors import StoreFullError
from fashionsearch.store.base import EmbedderIdentity, StoredPoint
from fashionsearch.store.edge import EdgeIndex
from testkit.full_disk import fill_up

index = EdgeIndex(sys.argv[1], "catalogue", min_free_bytes=int(sys.argv[2]))
index.ensure_collection(64, EmbedderIdentity("embedder", "1"))
index.upsert([StoredPoint(i, np.full(64, i, dtype=np.float32), {"name": "x"}) for i in range(1, 65)])
fill_up(sys.argv[1])  # another tenant of the volume takes the rest
try:
    index.close()
except StoreFullError as full:
    print(json.dumps({"refused": full.message}))
else:
    print(json.dumps({"closed": True}))
"""


def test_closing_a_collection_on_a_full_disk_says_why(small_disk: Path) -> None:
    # qdrant-edge's flush fails on the full disk with a plain Exception; the gateway's shutdown logs what it says.
    # (Checked by hand on a 160 MiB tmpfs, where a reopen fits: every acknowledged point is back, from the WAL.)
    closed = _child(_CLOSE, str(small_disk), str(RESERVE_BYTES))
    assert "could not flush" in str(closed.get("refused")) and str(small_disk) in str(closed["refused"]), closed
