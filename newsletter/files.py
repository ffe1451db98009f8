"""Writing a file whole: readers (a run, `status`, a mail client) see the old content or the new one.
Reading a file a person wrote: UTF-8, or an error that says where it is not."""

from __future__ import annotations

import codecs
import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # read it the one way there is (read at import, before any thread starts)
    os.umask(mask)
    return mask


_READABLE = 0o664 & ~_umask()  # as open() makes a file, but never writable by all (umask 000)
# the folders we make, less what the umask takes: the state folder's group may reach it (`serve` as
# www-data holds clicks there, `status` reads the run report) but nobody else may write there (under
# umask 000 anyone could swap its files); the outbox and previews are the owner's alone (their names
# hold addresses, their files signed links)
SHARED_FOLDER = 0o775
PRIVATE_FOLDER = 0o700


def make_folder(path: Path, mode: int = SHARED_FOLDER) -> None:
    """``path`` made if missing, in ``mode`` (its missing parents in SHARED_FOLDER's); a folder that
    is there is left as it is (the user made it, in the mode they chose). OSError as mkdir raises it."""
    try:
        path.mkdir(mode, exist_ok=True)
    except FileNotFoundError:
        make_folder(path.parent)
        path.mkdir(mode, exist_ok=True)


def lock_file(path: Path) -> Path:
    """``path``, made first if missing as open() makes a file, but never writable by all (umask 000): filelock
    makes it 0666 less the umask, and sets a mode given to it past the umask. OSError as open() raises it."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o664))
    return path


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


# a UTF-32 LE mark starts with the UTF-16 LE one: looked for first
_WIDE_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class NotUtf8(ValueError):
    """A file a person wrote that is not UTF-8: what it is instead, or the line of its first bad byte."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem if line is None else f"line {line}: {problem}")
        self.problem, self.line = problem, line

    def at(self, name: object) -> str:
        """``name:line: problem``, as errors name a place in a file."""
        return f"{name}:{self.line}: {self.problem}" if self.line else f"{name}: {self.problem}"


def read_utf8(path: Path) -> str:
    """The text of a file a person wrote (settings, subscribers), with the byte order mark Windows
    Notepad puts first dropped. NotUtf8 for a UTF-16 or UTF-32 file (PowerShell's ``>`` writes UTF-16)
    or one with a byte that is not UTF-8 (a Latin-1 "ü"); OSError as reading raises it."""
    return utf8_text(path.read_bytes())


def utf8_text(data: bytes) -> str:
    """What :func:`read_utf8` reads of a file's ``data``."""
    for mark, encoding in _WIDE_MARKS:
        if data.startswith(mark):
            raise NotUtf8(f"the file is {encoding}: save it as UTF-8")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise NotUtf8(f"byte 0x{data[exc.start]:02x} is not UTF-8: save the file as UTF-8", line) from None
