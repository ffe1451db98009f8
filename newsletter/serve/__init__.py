"""`newsletter serve`: preview every subscriber's next digest in a browser; host one-click unsubscribe.

Routes (see ``web``): ``/`` every subscriber's next digest or why there is none; ``/s/<email>`` one
subscriber's digest with subject, size, headers, scores and near misses; ``/s/<email>/html`` and
``/s/<email>/text`` the two parts exactly as sent; ``/s/<email>/last`` the last digest sent (rebuilt from
the delivery log); ``/unsubscribe/<token>`` the RFC 8058 endpoint; ``/feedback/more|less/<token>`` the
digests' "more/less like this" links.
Every route but the emails' links asks for the preview key (see ``key``).
Nothing here plans or sends a digest; new dump files are ingested when no run holds the lock.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

import uvicorn

from newsletter.address import is_loopback
from newsletter.app import make_state_folder
from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.serve.key import PreviewKey, preview_key
from newsletter.serve.web import LOOPBACK_NAMES, create_app, host_name

__all__ = [
    "answered_hosts",
    "create_app",
    "local_hosts",
    "preview_key",
    "public_host",
    "run_server",
    "start_line",
]

log = logging.getLogger(__name__)


def run_server(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    new_database: bool = False,
    also: Sequence[str] = (),
    public: Sequence[str] = (),
) -> None:
    """Serve until interrupted. The preview pages answer local Host names only (loopback, the address
    listened on, ``also``); base_url's host gets only the emails' links; any other name gets 400."""
    make_state_folder(settings)  # a folder that cannot be made is one error now, not one per page
    key = preview_key(settings)
    previews = local_hosts(host, also)
    if not is_loopback(host):
        log.warning(
            "serving on %s: the preview pages answer only to %s (a loopback name not given to "
            "--allow-host from this machine only; anyone who reaches another of them with the preview "
            "key sees every subscriber's address); %s gets only /unsubscribe/ and /feedback/",
            host,
            ", ".join(previews),
            public_host(settings) or "NEWSLETTER_BASE_URL's host",
        )
    app = create_app(
        settings,
        allowed_hosts=answered_hosts(settings, host, also, public),
        preview_hosts=previews,
        open_hosts=[_bracketed(name) for name in also if name.strip()],
        new_database=new_database,
        key=key,
    )
    sock = listen(host, port)  # bound before the URL is announced: a busy port is an error, not a lie
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, _bracketed(host))  # noqa: S104 - no name to browse to
    if sys.stderr is not None:  # None: started with stderr closed (`2>&-`), nowhere to say it
        line = start_line(f"http://{shown}:{port}/", key, terminal=sys.stderr.isatty())
        print(line, file=sys.stderr, flush=True)  # no log line: nothing is wrong
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none"))
    with sock:
        server.run(sockets=[sock])


def start_line(url: str, key: PreviewKey, *, terminal: bool) -> str:
    """The URL to open: with the key on a terminal (as Jupyter prints it); elsewhere (a journal, a pipe,
    a log file) without it, and where the key is: it never reaches a log."""
    if terminal:
        return f"preview at {url}?key={quote(key.value, safe='')}"
    return f"preview at {url} (add ?key= and the preview key, in {key.where}: not printed off a terminal)"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or a ConfigError saying why not (e.g. the port is in use)."""
    if not host.strip():
        raise ConfigError("--host is empty: give an address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:  # a negative errno is the resolver's: "Name or service not known"
        reason = (
            os.strerror(exc.errno) if exc.errno and exc.errno > 0 else _first_part(exc.strerror or str(exc))
        )
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason}",
            hint="another program uses that port: pick another with --port" if _in_use(exc) else None,
        ) from None


def _first_part(text: str) -> str:
    return text.split(" (while attempting", 1)[0]


def _in_use(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE


WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - every interface: no one name to answer to


def local_hosts(host: str = "127.0.0.1", also: Sequence[str] = ()) -> list[str]:
    """Host names the preview pages answer to: loopback's, the address listened on, and ``also``."""
    hosts = set(LOOPBACK_NAMES) | {_bracketed(name) for name in also if name.strip()}
    if host not in WILDCARDS:
        hosts.add(_bracketed(host))
    return sorted(hosts)


def _bracketed(name: str) -> str:
    """A name as a Host header carries it: an IPv6 address in brackets (fd00::5 -> [fd00::5])."""
    name = name.strip().lower()
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def public_host(settings: Settings) -> str | None:
    """NEWSLETTER_BASE_URL's host name: the emails' links come to it (through a reverse proxy)."""
    host = urlsplit(settings.base_url).hostname if settings.base_url else None
    return (f"[{host}]" if ":" in host else host.lower()) if host else None


def answered_hosts(
    settings: Settings, host: str = "127.0.0.1", also: Sequence[str] = (), public: Sequence[str] = ()
) -> list[str]:
    """Every Host name `serve` answers (the preview pages' and base_url's, and ``public``: an old base
    URL's, for the links of emails already sent); others get 400, so a DNS rebinding page cannot read
    the previews, wherever the server listens. Only ``also`` and the local names get the previews."""
    names = {_public_name(name) for name in public if name.strip()}
    base = public_host(settings)
    return sorted(set(local_hosts(host, also)) | names | ({base} if base else set()))


def _public_name(name: str) -> str:
    """A --public-host as a Host header names it: the help calls it an old base URL's, so a URL gives its
    host, and a port is dropped (a Host header's port is not compared); anything else is refused, not
    kept as a name no request carries (the old emails' unsubscribe links got 400)."""
    text = name.strip()
    host = urlsplit(text).hostname if "://" in text else None
    if host is None and "/" not in text and "@" not in text:
        host = text if text.count(":") > 1 and not text.startswith("[") else host_name(text)
    if not host:
        raise ConfigError(
            f"--public-host {name!r} is no host name",
            hint="give the old base URL's host, e.g. old.example.org",
        )
    return _bracketed(host.strip("[]")) if ":" in host.strip("[]") else host.lower()
