"""Writing a file whole: readers (a run, `status`, a mail client) see the old content or the new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # read it the one way there is (read at import, before any thread starts)
    os.umask(mask)
    return mask


_READABLE = 0o666 & ~_umask()  # as open() makes a file


def write_atomic(path: Path, data: bytes, prefix: str = ".", *, readable: bool = False) -> None:
    """Replace ``path`` with ``data``: a temporary file named ``prefix`` + the name in the same folder
    (hidden by default: a folder scan skips it), on disk (fsync) before it is renamed over ``path``.
    Only its owner may read it (messages hold signed links), unless ``readable``: then as the umask
    allows, as open() makes a file (the run report: `status` run by the group)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        if readable:
            temp.chmod(_READABLE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(path)  # os.replace: atomic on POSIX and Windows
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
