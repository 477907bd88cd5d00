"""Exclusive locks that keep two processes from writing one Qdrant Edge store.

Qdrant Edge locks a shard only once the shard exists, so two processes on an empty data directory would both create
it, and the second would delete the folder the first has open (its acknowledged writes then vanish at the next
restart).  These locks come first: an ``fcntl.flock`` on a lock file, taken before anything is created and held until
the process lets go (the kernel drops it when the process dies, so a crash leaves no stale lock).  The holder's pid
and role are written in the file for the error message of whoever comes second, which fails at once.

Lock files are never deleted: a process waiting on a lock file that someone removed would lock a file nobody else
can see (the same reason qdrant-client's local mode keeps its ``.lock``).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from fashionsearch.errors import StoreError


class StoreLockedError(StoreError):
    """Another process (or another handle in this one) holds the store directory."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    pid, _, role = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"another process (pid {pid}{', ' + role if role else ''})"


class StoreLock:
    """An exclusive lock on ``lock_file``, held from construction until release() or the end of the process."""

    def __init__(self, lock_file: str | os.PathLike[str], *, guards: str, role: str | None = None) -> None:
        """``guards`` names what is locked (for the message); ``role`` says who holds it (default: this program)."""
        self.path = Path(lock_file)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"{guards} is in use by {_holder(self.path)}; stop it first") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {role or process_role()}\n".encode(), 0)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let go of the lock; idempotent.  The file stays (see the module docstring)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)  # closing the only descriptor of the open file drops the flock


def lock_path(data_dir: str | os.PathLike[str], collection: str) -> Path:
    """The lock file of a collection: beside its folder, so that dropping the folder leaves the lock in place."""
    return Path(data_dir) / f"{collection}.lock"


def process_role() -> str:
    """What this process is, for the lock file: e.g. ``python -m services.gateway``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
