"""Dump files -> the store, one file per transaction, with a memory of what was refused.

``newsletter ingest FILE`` reports every problem every time. The folder scan of ``run`` (and the
daemon) reports a refused file once, remembers it by the sha256 of its bytes in the store, and skips
it quietly after that (``status`` lists them), so an hourly job does not fail every hour for one bad
file; a file with other content (fixed, or a new one) is read again. Files with an extension no
parser reads (``.html``, ``.md``, ``.pdf`` ...) get one warning, remembered the same way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path, PurePath

from newsletter.errors import ParseError, SourceError, StoreError
from newsletter.report import DumpOutcome, plural
from newsletter.sources import (
    DUMP_GLOBS,
    TooLarge,
    entry_kind,
    list_broken_entries,
    list_dump_files,
    list_other_files,
    named_like_dump,
    parse_dump,
    path_text,
    read_dump_bytes,
    stored_hash,
)
from newsletter.store import Store

__all__ = ["ingest_files", "ingest_folder", "waiting_files", "waiting_note"]

log = logging.getLogger(__name__)

# A parser bug on odd input must reject that file, not stop every later run.
UNEXPECTED_INPUT_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError, RecursionError)
_READ = ", ".join(glob.removeprefix("*") for glob in DUMP_GLOBS)


def ingest_folder(store: Store, folder: Path, now: datetime, *, record: bool = True) -> list[DumpOutcome]:
    """Every dump file in ``folder``; files refused by an earlier scan are skipped quietly. Without
    ``record`` (a preview) a file refused now is not recorded, so the run that next sees it reports it.
    An entry named like a dump that is no file to read (a link to nothing, a FIFO) is reported each
    time, as an unreadable file is: it may be readable next time."""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "dumps folder not found"
        raise SourceError(f"{folder}: {what}", hint="create it or set NEWSLETTER_DUMPS (--dumps)")
    known = store.rejected_keys()
    seen = store.dump_sizes()  # a daemon scans the folder each tick: known files are not parsed again
    outcomes = ingest_files(store, list_dump_files(folder), now, remember=known, seen=seen, record=record)
    broken = [
        _rejected(path_text(p), f"cannot read dump {path_text(p)}: not a regular file but {entry_kind(p)}")
        for p in list_broken_entries(folder)
    ]
    return outcomes + broken + _unreadable(store, list_other_files(folder), known, now, record)


def waiting_files(store: Store, folder: Path) -> list[Path]:
    """The dump files in ``folder`` that a scan would read: neither in the store nor refused before
    (by content, under any name) nor refused unread (too large); none when the folder cannot be listed."""
    try:
        files = list_dump_files(folder)
    except SourceError:
        return []  # the next run reports it
    seen, refused = store.dump_sizes(), {digest for digest, _ in store.rejected_keys()}
    hashes = {path: _stored_hash(path) for path in files}
    return [
        path for path, digest in hashes.items() if digest and digest not in seen and digest not in refused
    ]


def stored_files(store: Store, paths: list[Path]) -> list[Path]:
    """The files among ``paths`` whose content the store holds already (ingested under any name)."""
    if not paths:
        return []
    seen = store.dump_sizes()
    return [path for path in paths if _stored_hash(path) in seen]


def refused_files(store: Store, paths: list[Path]) -> dict[Path, str]:
    """The files among ``paths`` a run refused before, with these bytes at this path: path -> the
    problem recorded (`status` lists them; a scan skips them quietly)."""
    refused = {(r.content_hash, r.path): r.problem for r in store.rejected_files()} if paths else {}
    named = {name for _, name in refused}  # only those are hashed: a serve start read every file twice
    candidates = [path for path in paths if path_text(path) in named]
    found = {path: refused.get((_file_digest(path) or "", path_text(path))) for path in candidates}
    return {path: problem for path, problem in found.items() if problem is not None}


def waiting_note(waiting: list[Path]) -> str | None:
    """What a preview that could not take the run lock leaves out (None: nothing)."""
    if not waiting:
        return None
    names = ", ".join(path_text(Path(path.name)) for path in waiting[:3])
    more = ", ..." if len(waiting) > 3 else ""
    return (
        f"another process holds the run lock (a run, the daemon, or a command such as retry): "
        f"{plural(len(waiting), 'dump file')} not in the store yet left out ({names}{more}); "
        "the next run or daemon tick ingests them"
    )


def _stored_hash(path: Path) -> str | None:
    """The content hash a scan would store ``path`` under; None for a file it refuses unread."""
    try:
        return stored_hash(read_dump_bytes(path))
    except SourceError:
        return None


def ingest_files(
    store: Store,
    paths: Iterable[Path],
    now: datetime,
    *,
    remember: set[tuple[str, str]] | None = None,
    seen: dict[str, int] | None = None,
    record: bool = True,
) -> list[DumpOutcome]:
    """Each file in its own transaction. With ``remember`` (the (content hash, path) pairs refused
    before), one already there is skipped without a report, and (with ``record``) a refused file is
    recorded in the store. A file whose bytes hash to a dump in ``seen`` (content hash -> papers) is
    already in, unparsed."""
    recorded = remember if record else None
    outcomes = [_ingest_one(store, path, now, remember, recorded, seen or {}) for path in paths]
    return [o for o in outcomes if o is not None]


def _ingest_one(
    store: Store,
    path: Path,
    now: datetime,
    remember: set[tuple[str, str]] | None,
    recorded: set[tuple[str, str]] | None,
    seen: dict[str, int],
) -> DumpOutcome | None:
    name = path_text(path)
    try:
        data = read_dump_bytes(path)  # regular files only: a FIFO would block
    except TooLarge as exc:  # its content is the problem: remembered, as a malformed dump is
        digest = _file_digest(path)
        if digest is None or (
            remember is not None and _refused_before(store, remember, digest, name, recorded)
        ):
            return None
        outcome = _rejected(name, str(exc))
        if recorded is not None:
            store.remember_rejected(digest, name, str(exc), now)
        return outcome
    except SourceError as exc:
        return _rejected(name, str(exc))
    digest = hashlib.sha256(data).hexdigest()
    if remember is not None and _refused_before(store, remember, digest, name, recorded):
        log.debug("skipping %s: refused before (see `newsletter status`)", name)
        return None
    if digest in seen:  # a dump's hash is its bytes' (UTF-16 ones excepted: those are parsed again)
        log.debug("%s: already ingested", name)
        return DumpOutcome(name, seen[digest], 0, already=True)
    try:
        result = store.ingest(parse_dump(data, name), now)  # one transaction: all of it or nothing
    except (StoreError, SourceError) as exc:
        content_problem = isinstance(exc, ParseError)
        problem = _not_a_dump(path, str(exc)) if content_problem else str(exc)
        outcome = _rejected(name, problem) if content_problem else _not_now(name, problem)
    except UNEXPECTED_INPUT_ERRORS as exc:
        log.debug("unexpected error reading %s", path, exc_info=True)
        outcome = _rejected(name, f"{name}: cannot read this dump: {type(exc).__name__}: {exc}")
        content_problem = True
    else:  # the store logs what it ingested
        return DumpOutcome(name, result.papers, result.new, result.already)
    if recorded is not None and content_problem and outcome.error:
        store.remember_rejected(digest, name, outcome.error, now)
    return outcome


def _refused_before(
    store: Store,
    known: set[tuple[str, str]],
    digest: str,
    name: str,
    recorded: set[tuple[str, str]] | None,
) -> bool:
    """Whether these bytes were refused before under this file name: at this path, or where the dumps
    folder was before it moved (a new mount point; the old path gone): every refused file was reported
    again. The record then follows the file (with ``recorded``), so `status` finds it. Another name, or
    a copy beside a file still where it was, is another file; so is one on a database several hosts
    share, where a path missing here may be another host's dumps folder (each reports its own)."""
    if (digest, name) in known:
        return True
    if store.shared:
        return False
    moved_from = next((p for h, p in known if h == digest and _moved(p, name)), None)
    if moved_from is None:
        return False
    if recorded is not None:
        store.move_rejected(digest, moved_from, name)
    known.discard((digest, moved_from))
    known.add((digest, name))
    return True


def _moved(before: str, now: str) -> bool:
    """Whether the file at ``now`` may be the one refused at ``before``: the same name, and none there now."""
    return PurePath(before).name == PurePath(now).name and not Path(before).exists()


def _not_a_dump(path: Path, problem: str) -> str:
    """A file named like no dump (``ingest notes.md``) is probably not one: say so beside the problem."""
    if named_like_dump(path):
        return problem
    return f"{problem}; not a dump file? (dumps are {_READ} files)"


def _rejected(name: str, problem: str) -> DumpOutcome:
    log.error("rejected %s", problem)
    return DumpOutcome(file=name, error=problem)


def _not_now(name: str, problem: str) -> DumpOutcome:
    """Not the dump's fault (the database failed, a full disk): not remembered, tried again."""
    log.error("not ingested now, the next run tries again: %s", problem)
    return DumpOutcome(file=name, error=problem, later=True)


def _file_digest(path: Path) -> str | None:
    """The file's sha256, read in blocks (it may be any size: a backup, a video); None if unreadable."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _unreadable(
    store: Store, paths: list[Path], known: set[tuple[str, str]], now: datetime, record: bool
) -> list[DumpOutcome]:
    """One warning per file no parser reads, the first time its content is seen."""
    outcomes = []
    for path in paths:
        digest = _file_digest(path)
        if digest is None:
            continue
        name = path_text(path)
        if _refused_before(store, known, digest, name, known if record else None):
            continue
        warning = f"{name}: skipped, not a dump file (run reads {_READ} files)"
        log.warning("%s", warning)
        if record:
            store.remember_rejected(digest, name, warning, now)
        outcomes.append(DumpOutcome(file=name, warning=warning))
    return outcomes
