"""One run at a time per state folder: an OS file lock on ``home/run.lock``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from newsletter.errors import LockedError, StoreError

LOCK_NAME = "run.lock"


@contextmanager
def run_lock(home: Path, timeout: float = 0.0) -> Iterator[None]:
    """Hold the state folder's run lock for the block, or raise LockedError at once (after ``timeout`` s).

    The OS releases the lock when the holder dies, so a crashed run (kill -9) never leaves it stuck.
    """
    path = Path(home) / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create the state folder {path.parent}: {error.strerror}") from None
    lock = FileLock(path, timeout=timeout, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise LockedError(
            f"another run holds {path}",
            hint="wait for it to finish; the lock goes away when that process exits",
        ) from None
    try:
        yield
    finally:
        lock.release()
