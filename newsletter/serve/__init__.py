"""`newsletter serve`: preview every subscriber's next digest in a browser; host one-click unsubscribe.

Routes (see ``web``): ``/`` every subscriber's next digest or why there is none; ``/s/<email>`` one
subscriber's digest with subject, size, headers, scores and near misses; ``/s/<email>/html`` and
``/s/<email>/text`` the two parts exactly as sent; ``/s/<email>/last`` the last digest sent (rebuilt from
the delivery log); ``/unsubscribe/<token>`` the RFC 8058 endpoint; ``/feedback/more|less/<token>`` the
digests' "more/less like this" links.
Nothing here plans or sends a digest; new dump files are ingested when no run holds the lock.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from urllib.parse import urlsplit

import uvicorn

from newsletter.address import is_loopback
from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.serve.web import create_app

__all__ = ["create_app", "local_hosts", "run_server"]

log = logging.getLogger(__name__)


def run_server(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, new_database: bool = False
) -> None:
    """Serve until interrupted. Bound to loopback, only local Host names (and base_url's) are answered."""
    if not is_loopback(host):
        log.warning(
            "serving on %s: the preview pages show every subscriber's address; expose only /unsubscribe/ "
            "and /feedback/",
            host,
        )
    hosts = local_hosts(settings, host) if is_loopback(host) else None
    app = create_app(settings, allowed_hosts=hosts, new_database=new_database)
    sock = listen(host, port)  # bound before the URL is announced: a busy port is an error, not a lie
    log.warning("preview at http://%s:%d/", host if ":" not in host else f"[{host}]", port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none"))
    with sock:
        server.run(sockets=[sock])


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


def local_hosts(settings: Settings, host: str = "127.0.0.1") -> list[str]:
    """Host names a loopback server answers to: its own, plus base_url's (a local reverse proxy)."""
    hosts = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    public = urlsplit(settings.base_url).hostname if settings.base_url else None
    return sorted(hosts | {public}) if public else sorted(hosts)
