"""File transport: each message becomes ``<date>_<address>_<digest_id>.eml`` (+ ``.html``) in an outbox.

The date (the UTC day the digest was made; a resend's Date header is later) and the recipient's address
let a person find a digest; the digest id keeps the name unique and the same for every attempt at it.

Writes are atomic (temporary file, fsync, os.replace), so a crash never leaves half a message and
sending the same digest again replaces its own files instead of adding a copy: those under another name
too (an earlier version's ``<digest_id>.eml``, or the address it had before a `rename`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from newsletter.errors import SendError
from newsletter.files import PRIVATE_FOLDER, make_folder, write_atomic
from newsletter.models import OutgoingMessage

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}")
_TEMP_PREFIX = ".tmp-"
# The outbox refuses every write, not just this one (no permission, read-only, full): like an SMTP
# server that is down, the run stops and the rest stays queued instead of waiting out retries per digest.
_OUTBOX_DOWN = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})
_DATE = re.compile(rb"(?:^|\r\n)Date: ([^\r\n]+)", re.IGNORECASE)
_UNSAFE = re.compile(r"[^a-z0-9._@+-]+")


class FileTransport:
    """Delivers into ``outbox``; always accepts unless the disk refuses."""

    uses_parts: ClassVar[bool] = True  # writes the HTML beside the .eml, for a look in a browser
    retries_itself: ClassVar[bool] = False

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self._ready = False
        self._copies: dict[str, list[Path]] = {}  # digest id -> its files in the outbox before this run

    def __enter__(self) -> FileTransport:
        self._prepare()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"FileTransport({str(self.outbox)!r})"

    def send(self, message: OutgoingMessage) -> None:
        name = _file_name(message)
        self._prepare()
        if message.html:
            self._write(self.outbox / f"{name}.html", message.html.encode("utf-8", "replace"))
        self._write(self.outbox / f"{name}.eml", message.raw)
        self._drop_other_names(message.digest_id, name)
        _fsync_dir(self.outbox)
        log.debug("wrote %s.eml for %s", name, message.recipient)

    def _drop_other_names(self, digest_id: str, name: str) -> None:
        """Remove the digest's files under another name than ``name``: an earlier version's
        ``<digest id>.eml``, or those to the address it had before a `rename` (a digest a crash left
        sending is written again to the new one): the digest was in the outbox twice."""
        for earlier in self._copies.pop(digest_id, ()):
            if earlier.name.startswith(f"{name}."):
                continue
            try:
                earlier.unlink(missing_ok=True)
            except OSError as exc:  # the digest is written: a copy left is no failed send
                log.warning("cannot remove %s, an earlier copy of this digest: %s", earlier, exc)

    def _prepare(self) -> None:
        """Create the outbox and remove temporary files a killed run left behind (runs hold a lock)."""
        if self._ready:
            return
        try:
            make_folder(self.outbox, PRIVATE_FOLDER)
            for stale in self.outbox.glob(f"{_TEMP_PREFIX}*"):
                stale.unlink(missing_ok=True)
            self._copies = _copies(self.outbox)
        except OSError as exc:
            raise _outbox_error(f"cannot use outbox {self.outbox}", exc, down=True) from exc
        self._ready = True

    def _write(self, path: Path, data: bytes) -> None:
        try:
            write_atomic(path, data, _TEMP_PREFIX)
        except OSError as exc:
            raise _outbox_error(f"cannot write {path}", exc, down=exc.errno in _OUTBOX_DOWN) from exc


def _copies(outbox: Path) -> dict[str, list[Path]]:
    """The outbox's messages by digest id (one listing a run, not one a message)."""
    found: dict[str, list[Path]] = {}
    for path in outbox.iterdir():
        if path.suffix in (".eml", ".html") and not path.name.startswith(_TEMP_PREFIX):
            found.setdefault(_digest_id_of(path.name), []).append(path)
    return found


def _digest_id_of(name: str) -> str:
    """The digest id of an outbox file's name, <date>_<address>_<id>.<ext> or <id>.<ext>."""
    return name.rpartition(".")[0].rpartition("_")[2]


def _outbox_error(what: str, exc: OSError, *, down: bool) -> SendError:
    hint = "fix the outbox folder (NEWSLETTER_HOME/outbox), then run again" if down else None
    return SendError(f"{what}: {exc.strerror or exc}", hint, transport_down=down)


def _file_name(message: OutgoingMessage) -> str:
    """``2026-03-11_ada@example.org_<digest id>``: the same for every attempt at a digest, never outside
    the outbox (the id is checked, the address reduced to safe characters)."""
    digest_id = message.digest_id
    if not _SAFE_NAME.fullmatch(digest_id) or ".." in digest_id:
        raise SendError(f"digest id {digest_id!r} is not usable as a file name", permanent=True)
    made = message.made_at.astimezone(UTC).strftime("%Y-%m-%d") if message.made_at else _date(message.raw)
    return f"{made}_{file_slug(message.recipient)}_{digest_id}"


def _date(raw: bytes) -> str:
    """The message's Date header as YYYY-MM-DD ('undated' without a readable one)."""
    found = _DATE.search(raw.split(b"\r\n\r\n", 1)[0])
    if found is None:
        return "undated"
    try:
        return parsedate_to_datetime(found.group(1).decode("ascii")).strftime("%Y-%m-%d")
    except (ValueError, TypeError, UnicodeDecodeError):
        return "undated"


def file_slug(address: str) -> str:
    """The address in lower case, each run of other characters than [a-z0-9._@+-] as one '-'."""
    return _UNSAFE.sub("-", address.casefold()).strip("-.")[:80] or "subscriber"


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
