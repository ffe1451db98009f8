"""Dump parsers and fetchers: bytes in a file -> a Dump.

Four formats, told apart by content, not by file name: a JSON document (``[`` or ``{`` first) is
read as the Hugging Face daily papers API format (``hf-json``), an RSS or Atom document as an arXiv
feed (``arxiv``), an HTML document as a saved Hugging Face papers page (``hf-html``), anything else
as a text dump of the Daily Papers page (``hf-text``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
from pathlib import Path

from newsletter.errors import ParseError, SourceError
from newsletter.models import Dump
from newsletter.sources.arxivfeed import looks_like_feed, parse_arxiv_feed
from newsletter.sources.hfhtml import looks_like_html, parse_hf_html
from newsletter.sources.hfjson import parse_hf_json
from newsletter.sources.textdump import parse_text_dump

__all__ = [
    "DUMP_GLOBS",
    "entry_kind",
    "list_broken_entries",
    "list_dump_files",
    "list_other_files",
    "named_like_dump",
    "parse_dump",
    "path_from_text",
    "path_text",
    "read_dump",
]

log = logging.getLogger(__name__)

DUMP_GLOBS = ("*.txt", "*.json", "*.xml", "*.rss", "*.atom", "*.html", "*.htm")
_DUMP_SUFFIXES = frozenset(glob.removeprefix("*") for glob in DUMP_GLOBS)
_TEMP_SUFFIXES = frozenset({".tmp", ".temp", ".part", ".partial", ".crdownload", ".swp"})
_BOM = b"\xef\xbb\xbf"
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")  # path_text's escape of a byte that is not UTF-8
MAX_DUMP_BYTES = 64 * 2**20  # a day's listing is ~100 KB (a fetched one may be at most 16 MB)


def path_text(path: Path) -> str:
    """``path`` as text a database, a log and a terminal all take: a file name that is not UTF-8 (one
    written in Latin-1) keeps its other bytes as ``\\x`` escapes, and so do control and direction
    characters (a newline in a name made a line of its own in an error, one that looked like another)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return _UNPRINTABLE.sub(lambda m: "".join(f"\\x{b:02x}" for b in m.group().encode()), text)


def path_from_text(text: str) -> Path:
    """The path :func:`path_text` gave ``text`` for (its ``\\x`` escapes back to the bytes they stand for)."""
    path = Path(text)
    if path.exists() or "\\x" not in text:
        return path
    return Path(os.fsdecode(_ESCAPED_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode())))


def read_dump(path: Path) -> Dump:
    """Read and parse one dump file; SourceError when unreadable, ParseError when malformed."""
    dump = parse_dump(read_dump_bytes(path), path_text(path))
    log.debug("read %s: %s, %d papers", path, dump.format, len(dump.papers))
    return dump


def read_dump_bytes(path: Path) -> bytes:
    """A dump file's bytes; SourceError when unreadable or not a regular file (a FIFO, a device)."""
    try:
        data = _read_regular_file(path)
    except _TooLarge as exc:
        raise TooLarge(
            f"cannot read dump {path_text(path)}: {exc.size:,} bytes, more than a listing can be "
            f"(at most {MAX_DUMP_BYTES // 2**20} MB)",
            hint="move other files out of the dumps folder",
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SourceError(f"cannot read dump {path_text(path)}: {reason}") from exc
    if data is None:
        raise SourceError(f"cannot read dump {path_text(path)}: not a regular file")
    return data


class TooLarge(SourceError):
    """A file in the dumps folder too large to be a listing (refused unread)."""


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _read_regular_file(path: Path) -> bytes | None:
    """The file's bytes; None for a FIFO, a device or a socket, which could block or never end.

    Opened without blocking (a FIFO with no writer would wait forever in open), then checked on the
    open descriptor, so the file cannot be swapped between the check and the read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > MAX_DUMP_BYTES:  # read whole, it would take that much memory, or more
            raise _TooLarge(info.st_size)
        data = handle.read(MAX_DUMP_BYTES + 1)
        if len(data) > MAX_DUMP_BYTES:  # grown since
            raise _TooLarge(len(data))
        return data


def parse_dump(data: bytes, source: str) -> Dump:
    """Parse dump bytes, choosing the format from the content."""
    data = _as_utf8(data, source)
    if _looks_like_json(data) or (source.lower().endswith(".json") and _parses_as_json(data)):
        return _json_else_text(data, source)  # a .json file holding 42 is a JSON number, not a title
    if b"<rdf:rdf" in data[:1024].lower():
        raise ParseError(
            source, 1, "an RSS 1.0 (RDF) feed, arXiv's format before 2024: use its RSS 2.0 or Atom"
        )
    if looks_like_feed(data):
        return parse_arxiv_feed(data, source)
    if looks_like_html(data):
        return parse_hf_html(data, source)
    return parse_text_dump(data, source)


def _json_else_text(data: bytes, source: str) -> Dump:
    """The API's JSON; else, when it is no JSON at all, a text dump whose first title opens with a
    bracket ("[CLS] Token Tells Everything..."); else the JSON problem."""
    try:
        return parse_hf_json(data, source)
    except ParseError as problem:
        if _parses_as_json(data):
            raise
        try:
            return parse_text_dump(data, source)
        except ParseError:
            raise problem from None


def _parses_as_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def _looks_like_json(data: bytes) -> bool:
    head = data.removeprefix(_BOM).strip()
    return head[:1] in (b"[", b"{") or head in (b"null", b"true", b"false")


def stored_hash(data: bytes) -> str:
    """The content hash a dump of these bytes is stored under (UTF-16 is read, and hashed, as UTF-8)."""
    with contextlib.suppress(ParseError):  # invalid UTF-16: refused when parsed
        data = _as_utf8(data, "")
    return hashlib.sha256(data).hexdigest()


def _as_utf8(data: bytes, source: str) -> bytes:
    """UTF-16 with its byte-order mark (some Windows tools save so) as UTF-8; other bytes as they are."""
    if not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data
    try:
        return data.decode("utf-16").encode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(source, None, f"not valid UTF-16 after its byte-order mark: {exc.reason}") from None


def list_dump_files(folder: Path) -> list[Path]:
    """Dump files in ``folder`` (not recursive), sorted by name; hidden and temporary files skipped."""
    if not folder.is_dir():
        raise SourceError(f"dumps folder {folder} does not exist or is not a folder")
    try:
        found = _named_like_dumps(folder)
        files = [path for path in found if _is_dump_file(path)]
    except OSError as exc:
        raise SourceError(f"cannot list dumps in {folder}: {exc.strerror or exc}") from exc
    return sorted(files, key=lambda path: path.name)


def list_broken_entries(folder: Path) -> list[Path]:
    """Entries named like dumps that are no file to read: a link to nothing, a FIFO, a device."""
    try:
        found = _named_like_dumps(folder)
        broken = [p for p in found if not p.is_file() and not p.is_dir() and _is_dump_file(p, regular=False)]
    except OSError as exc:
        raise SourceError(f"cannot list dumps in {folder}: {exc.strerror or exc}") from exc
    return sorted(broken, key=lambda path: path.name)


def entry_kind(path: Path) -> str:
    """What an entry that is no regular file is, in words: 'a link to nothing', 'a named pipe' ..."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a link to nothing" if path.is_symlink() else "gone"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    kinds = {stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}
    return next((kind for test, kind in kinds.items() if test(mode)), "a device")


def list_other_files(folder: Path) -> list[Path]:
    """Files in ``folder`` that are not dumps by their extension (nor hidden or temporary), by name."""
    dumps = set(list_dump_files(folder))
    try:
        others = [p for p in folder.iterdir() if p not in dumps and _is_dump_file(p)]
    except OSError as exc:
        raise SourceError(f"cannot list dumps in {folder}: {exc.strerror or exc}") from exc
    return sorted(others, key=lambda path: path.name)


def named_like_dump(path: Path) -> bool:
    """Whether ``path`` has a dump's extension, in any case (``LISTING.TXT`` too)."""
    return path.suffix.lower() in _DUMP_SUFFIXES


def _named_like_dumps(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if named_like_dump(path)]


def _is_dump_file(path: Path, *, regular: bool = True) -> bool:
    name = path.name
    temporary = name.endswith("~") or any(suffix.lower() in _TEMP_SUFFIXES for suffix in path.suffixes)
    if name.startswith((".", "~", "#")) or temporary:
        log.debug("skipping %s: hidden or temporary file", path)
        return False
    return path.is_file() or not regular
