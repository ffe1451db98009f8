"""Pure text helpers for digests: links, subject line, excerpts, author lists, dates.

They are also registered as Jinja filters (see ``renderer.FILTERS``), so templates and the pipeline
format things the same way.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Protocol
from urllib.parse import SplitResult, quote, quote_plus, urlsplit, urlunsplit

from newsletter.address import ascii_domain
from newsletter.models import normalize_arxiv_id
from newsletter.sources.clean import split_sentences

ARXIV_ABS = "https://arxiv.org/abs/"
ARXIV_PDF = "https://arxiv.org/pdf/"
ARXIV_TITLE_SEARCH = "https://arxiv.org/search/?searchtype=title&query="
SUBJECT_MAX = 90
SAFE_SCHEMES = frozenset({"https", "http", "mailto"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0/C1 controls, line/paragraph separators
# bidirectional marks, embeddings, overrides and isolates: a title with U+202E reads backwards
_BIDI = re.compile(r"[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_URL_JUNK = re.compile(r"[\x00-\x20\x7f]+")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


class HasTitle(Protocol):
    @property
    def title(self) -> str: ...


@lru_cache(maxsize=16384)  # titles, names and reasons repeat across thousands of digests
def one_line(text: str) -> str:
    """Control characters dropped, runs of whitespace (newlines too) collapsed to one space."""
    return " ".join(printable(text).split())


def isolated(text: str) -> str:
    """Text in a right-to-left script between first-strong isolates (U+2068 ... U+2069), as HTML's <bdi>
    keeps it: 'Hi <Arabic name>, 10 new papers' otherwise shows the count before the name."""
    return f"\u2068{text}\u2069" if _right_to_left(text) else text


def left_to_right(text: str) -> str:
    """Each plain-text line that holds right-to-left text led by a left-to-right mark (U+200E): '4. <Hebrew
    title>' otherwise reads right to left, its number at the right end, where the first letter is Hebrew
    (and a wrapped title's next lines with their indent at the right)."""
    return "\n".join(f"\u200e{line}" if _right_to_left(line) else line for line in text.split("\n"))


def _right_to_left(text: str) -> bool:
    return any(unicodedata.bidirectional(c) in ("R", "AL") for c in text)


def printable(text: str) -> str:
    """Control characters (a terminal's escape sequences too) as spaces, bidirectional controls dropped."""
    if text.isprintable():  # fast path: most titles have nothing to clean
        return text
    return _BIDI.sub("", _CONTROL.sub(" ", text))


def clip(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, ending in "…" when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if not text[limit - 1].isspace() and " " in cut[limit // 2 :]:  # mid-word: back up to a space
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-–—") + "…"


def paper_url(arxiv_id: str | None, title: str) -> str:
    """The arXiv abstract page when the id is a real arXiv id, else an arXiv title search."""
    known = normalize_arxiv_id(arxiv_id) if arxiv_id else None
    if known:
        return ARXIV_ABS + quote(known, safe="/.")
    return ARXIV_TITLE_SEARCH + quote_plus(one_line(title))


def paper_links(
    arxiv_id: str | None,
    *,
    hf_page: str | None = None,
    code: str | None = None,
    stars: int | None = None,
    project: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """(label, URL) for each page a paper has: arXiv abstract, PDF, HF page, code (with stars), project."""
    known = normalize_arxiv_id(arxiv_id) if arxiv_id else None
    links: list[tuple[str, str]] = []
    if known:
        links += [
            ("arXiv", ARXIV_ABS + quote(known, safe="/.")),
            ("PDF", ARXIV_PDF + quote(known, safe="/.")),
        ]
    if hf_page:
        links.append(("HF", hf_page))
    if code:
        links.append((f"Code ★{count(stars)}" if stars else "Code", code))
    if project:
        links.append(("Project", project))
    return _distinct((label, url) for label, url in links if safe_url(url) != "#")


def _distinct(links: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Each page linked once: a project page that is the repository, the HF page or the PDF is left out."""
    seen: set[tuple[str, str, str]] = set()
    kept: list[tuple[str, str]] = []
    for label, url in links:
        if _page(url) not in seen:
            seen.add(_page(url))
            kept.append((label, url))
    return tuple(kept)


def _page(url: str) -> tuple[str, str, str]:
    """What tells two links' pages apart: not http or https, the host's case or 'www.', a trailing '/' or
    the fragment (the project page 'http://github.com/x/y#readme' is the code link 'https://github.com/x/y')."""
    parts = urlsplit(_URL_JUNK.sub("", url))  # as safe_url reads it (it let the link through)
    host = parts.netloc.lower().removeprefix("www.")
    if host == "github.com":
        return host, _github_repo(parts.path), _GITHUB_TAB.sub("", parts.query).strip("&")
    return host, parts.path.rstrip("/"), parts.query


_GITHUB_TAB = re.compile(r"(?:^|&)tab=[^&]*")  # ?tab=readme-ov-file: which pane of the repository shows
# a repository's front page by other paths: its default branch's tree or README, its clone URL. Only main
# and master are taken for the default branch: '/tree/gh-pages' or '/tree/v2.0' shows another branch or tag
_GITHUB_FRONT = re.compile(
    r"(?i)^(/[^/]+/[^/]+?)(?:\.git)?(?:/tree/(?:main|master)|/blob/(?:main|master)/readme(?:\.[a-z]+)?)?/*$"
)


def _github_repo(path: str) -> str:
    """'/x/y' for GitHub's '/X/y/tree/main', '/x/y/blob/master/README.md' or '/x/y.git' (names ignore case);
    a folder in the repository ('/x/y/tree/main/docs') or another branch ('/x/y/tree/dev') stays a page of its
    own."""
    front = _GITHUB_FRONT.match(path)
    return (front.group(1) if front else path.rstrip("/")).lower()


def safe_links(links: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (label, URL) pairs whose URL ``safe_url`` lets through, cleaned the same way."""
    if isinstance(links, tuple):  # a paper's links: the same in every digest it is in, twice per digest
        return list(_safe_links(links))
    return [(label, url) for label, url in ((lb, safe_url(u)) for lb, u in links) if url != "#"]


@lru_cache(maxsize=4096)
def _safe_links(links: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple(safe_links(list(links)))


def count(value: int | None) -> str:
    """942 -> '942', 1234 -> '1.2k', 25000 -> '25k'; '' for None."""
    if value is None:
        return ""
    if value < 1000:
        return str(value)
    thousands = value / 1000
    return f"{thousands:.1f}k".replace(".0k", "k") if thousands < 10 else f"{round(thousands)}k"


@lru_cache(maxsize=16384)  # the same papers' links go to many subscribers
def safe_url(url: str) -> str:
    """``url`` when it is absolute http(s) or mailto, else "#" (no javascript:, data:, relative links);
    an http(s) one as ASCII (see _encoded)."""
    cleaned = _URL_JUNK.sub("", url)  # browsers ignore these too: "java\tscript:" is javascript:
    try:
        parts = urlsplit(cleaned)
        scheme = parts.scheme.lower()
        if scheme not in SAFE_SCHEMES:
            return "#"
        return cleaned if scheme == "mailto" else _encoded(parts)
    except ValueError:
        return "#"


_URL_SAFE = "/:@!$&'()*+,;=-._~%?"  # what stays as written: reserved characters and escapes


def _encoded(parts: SplitResult) -> str:
    """The URL with its host in A-labels and the rest percent-encoded where it is not ASCII or holds
    '"', '<', '>', '{', '|'...: a plain-text mail client ends a link at the first of them."""
    netloc = parts.netloc if parts.netloc.isascii() else _ascii_netloc(parts.netloc)
    path, query, fragment = (
        quote(part, safe=_URL_SAFE) for part in (parts.path, parts.query, parts.fragment)
    )
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _ascii_netloc(netloc: str) -> str:
    """user@host:port with the host in A-labels (ValueError for a host no IDNA encodes)."""
    user, at, host_port = netloc.rpartition("@")
    host, colon, port = host_port.rpartition(":")
    if not colon or not (port == "" or (port.isascii() and port.isdigit())):
        host, colon, port = host_port, "", ""
    return quote(user, safe=_URL_SAFE) + at + _ascii_host(host) + colon + port


def _ascii_host(host: str) -> str:
    """IDNA 2008, else IDNA 2003 as browsers still read some names ('i❤.ws'); ValueError for a name
    neither makes into letters, digits, '-', '_' and dots (a quote, a space, a direction override)."""
    for encode in (ascii_domain, lambda name: name.encode("idna").decode("ascii")):
        with contextlib.suppress(ValueError, UnicodeError):
            encoded = encode(host)
            if _HOST_NAME.fullmatch(encoded):
                return encoded
    raise ValueError(f"no ASCII form of the host {host!r}")


_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")


def subject_for(items: Sequence[HasTitle]) -> str:
    """E.g. "3 new papers: Kestrel: Sparse Message Passing… and 2 more" (at most SUBJECT_MAX chars)."""
    count = len(items)
    if count == 0:
        return "No new papers"
    head = "1 new paper: " if count == 1 else f"{count} new papers: "
    tail = "" if count == 1 else f" and {count - 1} more"
    title = one_line(items[0].title) or "(untitled)"
    return head + clip(title, SUBJECT_MAX - len(head) - len(tail)) + tail


@lru_cache(maxsize=4096)  # the same paper goes to many subscribers
def excerpt(text: str, max_sentences: int = 3, max_chars: int = 420) -> str:
    """The first 2-3 sentences of ``text`` that fit in ``max_chars`` (at least one, clipped if long)."""
    # the splitter the excerpt was chosen with: it knows "U.S." and "Eqs."; later text cannot fit anyway
    parts = split_sentences(one_line(text[: max_chars * 3])[: max_chars + 40])
    if not parts:
        return ""
    chosen = [parts[0]]
    for part in parts[1:max_sentences]:
        if len(" ".join([*chosen, part])) > max_chars:
            break
        chosen.append(part)
    return clip(" ".join(chosen), max_chars)


def authors_short(authors: Iterable[str], limit: int = 3) -> str:
    """Names joined with commas; only the first ``limit`` and "et al." when there are more."""
    if isinstance(authors, tuple):  # the usual case: a paper's authors, the same in every digest
        return _authors_short(authors, limit)
    return _authors_short(tuple(authors), limit)


@lru_cache(maxsize=4096)
def _authors_short(authors: tuple[str, ...], limit: int) -> str:
    names = [one_line(a) for a in authors if a.strip()]
    shown = ", ".join(names[:limit])
    return f"{shown} et al." if len(names) > limit else shown


def long_date(value: datetime) -> str:
    """E.g. "Tuesday, 12 March 2024", independent of the process locale."""
    return f"{_WEEKDAYS[value.weekday()]}, {value.day} {_MONTHS[value.month - 1]} {value.year}"


@lru_cache(maxsize=4096)
def wrap(text: str, width: int = 72, indent: str = "", hanging: str | None = None) -> str:
    """Plain-text paragraph filled to ``width`` columns (a wide CJK character takes two, and a line may
    break between two of them); long words (URLs) are never broken. ``hanging``: the indent of the lines
    after the first (default ``indent``)."""
    lines: list[str] = []
    line, used = "", 0
    for word in one_line(text).split(" "):
        for first, unit in enumerate(_units(word)):
            gap = 1 if line and first == 0 else 0
            size = _columns(unit)
            margin = indent if not lines else (indent if hanging is None else hanging)
            if line and len(margin) + used + gap + size > width:
                lines.append(margin + line)
                line, used = unit, size
            else:
                line, used = line + " " * gap + unit, used + gap + size
    if line:
        lines.append((indent if not lines or hanging is None else hanging) + line)
    return "\n".join(lines)


_WIDE = ("W", "F")
_NO_LINE_START = set("、。，．：；！？）」』】〉》’”")  # CJK punctuation stays with the character before


def _units(word: str) -> list[str]:
    """The pieces a line may break between: the word itself, or in Chinese and Japanese text each
    ideograph or kana (Korean puts spaces between words). A URL is one piece, up to the punctuation
    or space after it; a word with an address in it is never broken."""
    if word.isascii() or "@" in word or not any(_breaks_around(c) for c in word):
        return [word]
    units: list[str] = []
    start = 0
    for url in _URL_IN_TEXT.finditer(word):
        _add_cjk_units(units, word[start : url.start()])
        units.append(url.group())
        start = url.end()
    _add_cjk_units(units, word[start:])
    return units


_URL_IN_TEXT = re.compile(r"https?://[^\s、。，．：；！？）」』】〉》]+")


def _add_cjk_units(units: list[str], text: str) -> None:
    for char in text:
        if units and _joins(units[-1], char):
            units[-1] += char
        else:
            units.append(char)


def _joins(before: str, char: str) -> bool:
    """Whether ``char`` stays on the line of the text ``before`` it: punctuation that may not start a
    line, a combining mark, a joiner or variation selector or skin tone, the rest of a Latin run."""
    if char in _NO_LINE_START or unicodedata.category(char) in ("Mn", "Me", "Mc", "Cf", "Sk"):
        return True
    if before.endswith("\u200d"):  # after a zero-width joiner: one emoji
        return True
    return not _breaks_around(char) and not _breaks_around(before[-1])


def _breaks_around(char: str) -> bool:
    """An ideograph or kana (a line may break before and after it)."""
    return char not in _NO_LINE_START and unicodedata.name(char, "").startswith(_BREAKABLE)


_BREAKABLE = ("CJK ", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC", "FULLWIDTH", "HALFWIDTH KATAKANA")


def _columns(text: str) -> int:
    return len(text) + sum(1 for c in text if unicodedata.east_asian_width(c) in _WIDE)
