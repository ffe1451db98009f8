"""Writing a file whole: readers (a run, `status`, a mail client) see the old content or the new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, prefix: str = ".") -> None:
    """Replace ``path`` with ``data``: a temporary file named ``prefix`` + the name in the same folder
    (hidden by default: a folder scan skips it), on disk (fsync) before it is renamed over ``path``."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(path)  # os.replace: atomic on POSIX and Windows
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
