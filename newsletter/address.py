"""One reading of an email address, used everywhere: the store key, the unsubscribe token and routing.

Domains are read with IDNA 2008 and the UTS 46 mapping (non-transitional), as email-validator reads
them when subscribers.yaml is validated: ``straße.example`` stays ``straße.example``
(``xn--strae-oqa.example`` on the wire). Python's ``idna`` codec is IDNA 2003, which maps ß to ss and
would send such a subscriber's mail to another domain; ``str.casefold`` does the same to keys.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import urlsplit

import idna

__all__ = ["address_key", "ascii_domain"]

_HOST_LABELS = re.compile(rb"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")  # letters, digits, '-', '_'


def address_key(email: str) -> str:
    """The identity of an address: local part in lower case (it is ASCII), domain in its Unicode form.

    ``Bob@Straße.Example`` and ``bob@xn--strae-oqa.example`` have one key, ``bob@strasse.example``
    another. Text that is not an address with a valid domain is lower-cased as it is.
    """
    text = email.strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return text.lower()
    return f"{local.lower()}@{_unicode_domain(domain)}"


def ascii_domain(domain: str) -> str:
    """The domain as sent over SMTP (A-labels); ValueError when it is not a valid IDNA 2008 name."""
    if domain.isascii() and "xn--" not in domain.lower():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"invalid domain {domain!r}: {exc}") from None


@lru_cache(maxsize=4096)
def _unicode_domain(domain: str) -> str:
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.lower()  # the common case, and what UTS 46 maps it to
    try:
        return str(idna.decode(idna.encode(domain, uts46=True)))
    except (idna.IDNAError, UnicodeError):
        return domain.lower()


def is_host_name(host: str) -> bool:
    """Whether ``host`` can be looked up: an IP address, or a name whose labels IDNA can encode (no empty
    label as in ``mail..example.org``, none over 63 characters)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna")
    except UnicodeError:
        return False
    return bool(_HOST_LABELS.fullmatch(ascii_host))  # no ':', '@', '/': a URL with a password passed


def is_http_url(url: str) -> bool:
    """An http(s) URL with a host name (see is_host_name) and a port, if any, that is a number up to
    65535, and no control character (urlsplit drops some, httpx refuses them later); its parts are never
    quoted back (a password in it may be half read as the port)."""
    if not url.isprintable():
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number, or out of range)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and is_host_name(parts.hostname or "")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): a host name that never leaves the machine."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)
