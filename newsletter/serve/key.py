"""The preview key: the pages that show every subscriber's address ask for it, as Jupyter's token does.

A Host header and the absence of proxy headers say nothing of who is asking: another user of this
machine, or a TCP forwarder (``ssh -R``, socat, stunnel) in front of `serve`, writes what it likes. The
key is NEWSLETTER_SERVE_KEY, or one made once (``secrets.token_urlsafe``) in ``serve-key`` in the state
folder, readable by its owner only. ``?key=K`` on a preview URL sets it as a cookie.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.app import make_state_folder
from newsletter.config import MIN_SIGNING_KEY, Settings, toml_line
from newsletter.errors import ConfigError

log = logging.getLogger(__name__)

KEY_FILE = "serve-key"
COOKIE = "newsletter-preview-key"  # and the port: cookie_name
KEY_BYTES = 24  # secrets.token_urlsafe(24): 32 characters


@dataclass(frozen=True)
class PreviewKey:
    """The key and where it came from: ``file``, or NEWSLETTER_SERVE_KEY when None."""

    value: str
    file: Path | None = None
    setting: str = field(default="NEWSLETTER_SERVE_KEY", compare=False)  # or newsletter.toml's line

    def matches(self, given: str | None) -> bool:
        """Whether ``given`` is the key, compared in constant time."""
        return given is not None and hmac.compare_digest(given.encode(), self.value.encode())

    @property
    def where(self) -> str:
        """Where a person finds the key, for the 403 page and a start line that may be logged."""
        return f"the file {self.file}" if self.file else self.setting

    def __repr__(self) -> str:  # never the value, wherever the object is printed
        return f"PreviewKey(file={self.file!r})"


def cookie_name(port: int | None) -> str:
    """The cookie for the preview key of the serve on ``port`` (as the browser addresses it). A browser
    keeps a host's cookies for all its ports: two serves (two state folders) on one host would each
    overwrite the other's key, and the first 403 again (Jupyter names its cookie by port too)."""
    return f"{COOKIE}-{port}" if port else COOKIE


def _serve_key_setting() -> str:
    """Where the serve_key setting is: the variable, else newsletter.toml (a start line named the
    variable for a key only the file held)."""
    if "NEWSLETTER_SERVE_KEY" in os.environ:
        return "NEWSLETTER_SERVE_KEY"
    line, name = toml_line("serve_key")
    return f"newsletter.toml ({name}, line {line})" if line else "NEWSLETTER_SERVE_KEY"


def preview_key(settings: Settings) -> PreviewKey:
    """NEWSLETTER_SERVE_KEY, or the state folder's ``serve-key`` (made on first use)."""
    if settings.serve_key is not None:
        return PreviewKey(settings.serve_key.get_secret_value(), setting=_serve_key_setting())
    if not settings.home.is_dir():  # made once: run_server made it already (and warned, as root)
        make_state_folder(settings)
    path = settings.home / KEY_FILE
    return PreviewKey(_kept(path) or _made(path), path)


def _kept(path: Path) -> str | None:
    """The key in ``path``; None when there is none, or none to keep (the file was removed then)."""
    fd = _opened(path)
    if fd is None:
        return None
    with os.fdopen(fd, encoding="ascii", errors="replace") as file:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        key = file.read().strip()
    problem = _unfit(mode, key)
    if problem is None:
        return key
    log.warning(  # the URL serve prints holds the key on a terminal only: the file says it anywhere
        "the preview key %s %s: a new one is made there (read it from that file, or open the URL serve "
        "prints on a terminal)",
        path,
        problem,
    )
    path.unlink()
    return None


def _opened(path: Path) -> int | None:
    """``path`` opened for reading, if it is a regular file; None when there is none. O_NONBLOCK: a FIFO
    there would block the open until a writer came (serve hung at start), a directory opens and fails
    only on read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the preview key {path}: {exc.strerror}") from None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    raise ConfigError(f"the preview key {path} is not a file", hint="remove it: serve makes a new key then")


def _unfit(mode: int, key: str) -> str | None:
    """Why a kept key is not used, or None."""
    if mode & 0o077:
        return f"could be read by others (mode {mode:o}, not 600)"
    if len(key) < MIN_SIGNING_KEY:
        return "held no key" if not key else "held a key too short to keep anyone out"
    return None


def _made(path: Path) -> str:
    """A new key, written to ``path`` (mode 600). Written whole to a file of its own, then linked into
    place: another serve starting at once never reads it empty (O_EXCL on ``path`` itself would let it,
    and call it "held no key" and remove it). If theirs is linked first, theirs is the key."""
    key = secrets.token_urlsafe(KEY_BYTES)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        _write_new(draft, key)
        os.link(draft, path)
    except FileExistsError:  # another serve made it just now: theirs is the key
        return _kept(path) or _made(path)
    except OSError as exc:
        raise ConfigError(f"cannot write the preview key {path}: {exc.strerror}") from None
    finally:
        draft.unlink(missing_ok=True)
    return key


def _write_new(path: Path, key: str) -> None:
    """``key`` written to the new file ``path``, mode 600 (made here or not at all: O_EXCL)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, 0o600), "w", encoding="ascii") as file:
        file.write(key + "\n")
