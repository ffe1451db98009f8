"""Clicks held for the store: an unsubscribe or a "more/less like this" that came while the database
could not take it (locked past its busy timeout by a long write, or down for maintenance); and digests a
server accepted whose 'sent' the database could not take (store/session.py), which would otherwise be
reported 'unknown' and sent twice by `retry --unknown`.

Mailbox providers send RFC 8058 one-click unsubscribes once and do not retry, so `serve` must not
answer "try again later". It appends the click to ``held-clicks.jsonl`` in the state folder (flushed
to disk before the reader is told it is done) and records it once the database answers: the next run
takes the file before it sends anything, and `serve` tries again at its next click and every minute.
Recording is idempotent (an unsubscribe keeps its first time, feedback replaces feedback on the same
paper), so a click recorded but not yet cleared from the file is harmless when recorded again.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

from filelock import FileLock, Timeout

from newsletter.errors import StoreError
from newsletter.files import lock_file, make_folder, write_atomic
from newsletter.models import StoredPaper
from newsletter.store import Store
from newsletter.store.lock import owner_hint

log = logging.getLogger(__name__)

HELD_FILE = "held-clicks.jsonl"
MAX_HELD_BYTES = 16 * 2**20  # ~100,000 clicks: past that, feedback is refused (503), not the disk filled;
# an unsubscribe is still held (a line an address at most: feedback posted over and over must not lose it)

Kind = Literal["unsubscribe", "more", "less", "sent"]


@dataclass(frozen=True)
class Click:
    kind: Kind
    email: str
    at: datetime
    paper: str | None = None  # a feedback click's paper key
    digest: str | None = None  # a digest sent: its id and Message-ID
    message_id: str | None = None

    def to_line(self) -> str:
        return json.dumps({**asdict(self), "at": self.at.isoformat()}) + "\n"


def hold(home: Path, click: Click) -> None:
    """Append ``click`` to the state folder's file, on disk before this returns (StoreError if not)."""
    try:
        make_folder(home)
        with _locked(home, "ab+") as held:
            if _already_held(held, click):  # a one-click link posted over and over: one line
                return
            size = held.seek(0, os.SEEK_END)
            if size > MAX_HELD_BYTES and click.kind in ("more", "less"):  # many links posted over and over
                raise StoreError(
                    f"cannot hold a click in {home / HELD_FILE}: it holds {size} bytes of clicks already, "
                    "while the database is unavailable"
                )
            line = click.to_line().encode()
            held.write(line if _at_line_start(held) else b"\n" + line)  # after a line cut short
            held.flush()
            os.fsync(held.fileno())
    except OSError as exc:
        raise StoreError(_not_held(home, click, exc.strerror or str(exc))) from exc
    if click.kind == "sent":
        log.warning(
            "digest %s was sent: that is held in %s until the database takes it", click.digest, HELD_FILE
        )
    else:
        log.warning("%s of %s held in %s until the database takes it", click.kind, click.email, HELD_FILE)


def _not_held(home: Path, click: Click, why: str) -> str:
    """Why ``click`` could not be held; a digest's acceptance is no click (a run's full disk says so)."""
    if click.kind != "sent":
        return f"cannot hold a click in {home / HELD_FILE}: {why}"
    return (
        f"digest {click.digest} was sent, but neither the database nor {home / HELD_FILE} "
        f"could record it ({why}): `newsletter status` shows it, and what the next run does with it"
    )


def hold_sent(home: Path, pairs: Sequence[tuple[str, str]], when: datetime) -> None:
    """Hold the (digest id, Message-ID) pairs a server accepted at ``when``, for the database to record."""
    for digest_id, message_id in pairs:
        hold(home, Click("sent", "", when, digest=digest_id, message_id=message_id))


def _already_held(held: IO[bytes], click: Click) -> bool:
    """Whether this unsubscribe is held already (an unsubscribe keeps its first time: a repeat adds
    nothing). Feedback is always held again: its time decides against feedback recorded meanwhile."""
    if click.kind != "unsubscribe":
        return False
    held.seek(0)
    return any(b'"unsubscribe"' in line and _is_unsubscribe_of(line, click.email) for line in held)


def _is_unsubscribe_of(line: bytes, email: str) -> bool:
    try:
        data = json.loads(line.decode())
    except (ValueError, UnicodeDecodeError):  # a line cut short: record_held says so, once
        return False
    return isinstance(data, dict) and data.get("kind") == "unsubscribe" and data.get("email") == email


def _at_line_start(held: IO[bytes]) -> bool:
    if held.seek(0, os.SEEK_END) == 0:
        return True
    held.seek(-1, os.SEEK_END)
    return held.read(1) == b"\n"


def anything_held(home: Path) -> bool:
    """Whether the state folder holds clicks (an emptied file holds none: no lock is taken for it)."""
    try:
        return (home / HELD_FILE).stat().st_size > 0
    except OSError:
        return False


def held_kinds(home: Path) -> Counter[str]:
    """How many clicks of each kind the state folder holds, read and left as they are (for `status`)."""
    if not anything_held(home):
        return Counter()
    try:
        clicks, _ = _held_now(home)
    except OSError:  # gone meanwhile, or not ours to read: `run` names the file
        return Counter()
    return Counter(click.kind for click in clicks)


def record_held(home: Path, store: Store, *, wait: bool = True) -> int:
    """Record every held click, then take them out of the file; the number recorded. A database error
    leaves the file as it was (raised: a run must not send past an unsubscribe it could not record).
    Without ``wait``, nothing is done while another process or thread is at it (0).

    The file is locked only to be read and to be cut, not while the database takes the clicks: a new
    click that finds the database locked is held at once, not after this one's busy timeout."""
    if not anything_held(home):  # the usual case: no lock file made either
        return 0
    try:
        with FileLock(lock_file(home / f"{HELD_FILE}.recording"), timeout=-1 if wait else 0):
            clicks, taken = _held_now(home)
            for click in clicks:
                record_click(store, click, held=True)
            _cut(home, taken)
    except (FileNotFoundError, Timeout):  # nothing held (the usual case), or someone else records it
        return 0
    except OSError as exc:  # a file in the way: named, as a lock file root made is
        raise StoreError(
            f"cannot take the held clicks in {home / HELD_FILE}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename else ""),
            hint=owner_hint(exc),
        ) from exc
    if clicks:
        log.info("recorded %d held clicks from %s", len(clicks), HELD_FILE)
    return len(clicks)


def record_click(store: Store, click: Click, *, held: bool = False) -> StoredPaper | None:
    """Record one click; for feedback, the paper it names (None: no such paper, nothing recorded). A
    ``held`` one may be older than what was recorded since: it then changes nothing."""
    if click.kind == "unsubscribe":
        store.record_unsubscribe(click.email, click.at)
        return None
    if click.kind == "sent":
        store.sent_after_all(click.digest or "", click.message_id or "", click.at)
        return None
    return store.record_feedback(click.email, click.paper or "", click.kind, click.at, if_newer=held)


def _held_now(home: Path) -> tuple[list[Click], bytes]:
    """The clicks held so far, and the bytes they take at the start of the file (clicks come after)."""
    with _locked(home, "rb") as held:
        data = held.read()
    return list(_read(io.BytesIO(data))), data


def _cut(home: Path, taken: bytes) -> None:
    """Take ``taken``, recorded, out of the start of the file; the clicks held since stay in it. A file
    that no longer starts with them (emptied by a `serve` of an earlier version, still running after an
    upgrade, which then held another click) is kept whole: recording a click again changes nothing."""
    with _locked(home, "rb+") as held:
        data = held.read()
        if not data.startswith(taken):
            return
        if rest := data[len(taken) :]:
            write_atomic(home / HELD_FILE, rest, readable=True)  # as `hold` made it
        else:
            held.truncate(0)


def _read(held: IO[bytes]) -> Iterator[Click]:
    for number, line in enumerate(held, start=1):
        try:
            data = json.loads(line.decode())
            at = datetime.fromisoformat(data["at"])
            yield Click(
                data["kind"], data["email"], at, data.get("paper"), data.get("digest"), data.get("message_id")
            )
        except (ValueError, KeyError, TypeError):  # a line a full disk cut short (or UnicodeDecodeError)
            log.warning("%s:%d: not a held click, skipped", HELD_FILE, number)


@contextlib.contextmanager
def _locked(home: Path, mode: str, timeout: float = -1) -> Iterator[IO[bytes]]:
    """The file, open in binary ``mode`` under an exclusive lock (a file beside it, as the run lock is
    taken): a click is never appended while a run records and empties the file."""
    with (
        FileLock(lock_file(home / f"{HELD_FILE}.lock"), timeout=timeout),
        open(home / HELD_FILE, mode, opener=_made) as held,
    ):
        yield held


def _made(path: str, flags: int) -> int:
    """The file made as write_atomic makes a readable one (`serve` as the group holds clicks), never
    writable by all (umask 000): anyone could append an unsubscribe, or a digest 'sent'."""
    return os.open(path, flags, 0o664)
