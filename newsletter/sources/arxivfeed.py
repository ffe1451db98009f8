"""Parser for arXiv feeds: the RSS 2.0 category feeds (rss.arxiv.org) and Atom (the export API, format
``arxiv``), read with feedparser.

An RSS item's description reads ``arXiv:2609.26811v1 Announce Type: new \\nAbstract: ...`` and its
``arxiv:announce_type`` says why it is listed today: ``new`` (a new submission) and ``cross`` (a
cross-list from another category) are new papers; ``replace`` and ``replace-cross`` are new versions
of papers announced before, so they are left out of the dump: a paper is never new twice. Atom
entries (the API) are all kept. Ids lose their version (``2609.26811v1`` -> ``2609.26811``), so the
same paper from the HF API and from arXiv is one paper.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

import feedparser

from newsletter.errors import ParseError
from newsletter.models import Dump, Paper, PaperDetails, normalize_arxiv_id
from newsletter.sources.common import dedupe

log = logging.getLogger(__name__)

FORMAT = "arxiv"
NEW_ANNOUNCE_TYPES = frozenset({"new", "cross"})
ARXIV_NAMESPACE = "http://arxiv.org/schemas/atom"
# An arXiv id where a feed puts one: the whole value, or after an abs/pdf URL, an OAI name or "arXiv:".
# Not anywhere in a value: a DOI (10.1145/3580305.3599256) holds what reads like an id.
_ID = re.compile(
    r"(?:^|arxiv\.org/(?:abs|pdf)/|oai:arxiv\.org:|arxiv:)"
    r"(\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?(?:\.pdf)?/?(?:[?#]\S*)?$",
    re.IGNORECASE | re.ASCII,
)
_RSS_PREFIX = re.compile(r"^\s*arXiv:\S+\s+Announce Type:\s*\S+\s*(?:Abstract:\s*)?", re.IGNORECASE)
_AUTHOR_SPLIT = re.compile(r",\s*|\s+and\s+")
_SUFFIX = re.compile(r"(?:Jr|Sr)\.?|I{2,3}|IV", re.IGNORECASE)


def looks_like_feed(data: bytes) -> bool:
    """XML that opens as an RSS or Atom document (the root element within the first 1 KB)."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<rss", b"<feed")) and (b"<rss" in head or b"<feed" in head)


def parse_arxiv_feed(data: bytes, source: str) -> Dump:
    """Parse an arXiv RSS or Atom document; ParseError names ``source`` and the line or entry.

    Titles and abstracts are plain text, though RSS calls a description HTML: feedparser's HTML
    clean-up would turn "Q&A" into "Q&amp;A" and delete "<think>" or "x<y ... y>x", so it is off.
    """
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    _refuse_broken(parsed, source)
    _name_announce_type(parsed)
    entries = [(number, e) for number, e in enumerate(parsed.entries, start=1) if _is_new(e)]
    skipped = len(parsed.entries) - len(entries)
    if skipped:
        log.info("%s: %d replaced paper(s) left out (new versions, not new papers)", source, skipped)
    atom = str(parsed.get("version", "")).startswith("atom")
    papers = [
        _paper(entry, rank, number, source, atom) for rank, (number, entry) in enumerate(entries, start=1)
    ]
    return Dump(
        source=source,
        format=FORMAT,
        content_hash=hashlib.sha256(data).hexdigest(),
        papers=dedupe(papers, source),
        listed_on=_day(parsed.feed.get("published_parsed")),
    )


def _refuse_broken(parsed: Any, source: str) -> None:
    problem = parsed.get("bozo_exception")
    if parsed.get("bozo") and not isinstance(problem, feedparser.CharacterEncodingOverride):
        line = problem.getLineNumber() if hasattr(problem, "getLineNumber") else None
        raise ParseError(source, line, f"malformed feed: {getattr(problem, 'getMessage', lambda: problem)()}")
    if not parsed.get("version"):
        raise ParseError(source, 1, "not an RSS or Atom feed")
    for entry in parsed.entries:
        if "/api/errors" in entry.get("id", ""):  # the export API reports a bad query as an entry
            raise ParseError(
                source, None, f"the arXiv API answered with an error: {entry.get('summary', '')!r}"
            )


def _name_announce_type(parsed: Any) -> None:
    """feedparser names an element of a namespace it does not know by the document's own prefix: under
    ``xmlns:ax=`` the announce type was ``ax_announce_type``, unread, and a replaced paper counted as new."""
    prefixes = [p for p, uri in parsed.get("namespaces", {}).items() if uri.rstrip("/") == ARXIV_NAMESPACE]
    for entry in parsed.entries:
        for prefix in prefixes:
            key = f"{prefix.lower()}_announce_type"  # feedparser lowercases the element's name, prefix too
            if key in entry:
                entry.setdefault("arxiv_announce_type", entry[key])


def _is_new(entry: Any) -> bool:
    kind = str(entry.get("arxiv_announce_type", "new")).strip().lower()
    return kind in NEW_ANNOUNCE_TYPES


def _paper(entry: Any, rank: int, number: int, source: str, atom: bool) -> Paper:
    """``number``: the entry's place in the feed, replaced papers counted (as a reader counts them)."""
    title = " ".join(str(entry.get("title", "")).split())
    if not title:
        raise ParseError(source, None, f"entry {number}: no title ({entry.get('id') or entry.get('link')!r})")
    arxiv_id = _arxiv_id(entry)
    if arxiv_id is None:
        log.warning(
            "%s: entry %d has no arXiv id (%r); it is keyed by its title", source, number, entry.get("id")
        )
    return Paper(
        title=title,
        abstract=_RSS_PREFIX.sub("", str(entry.get("summary", ""))).strip(),
        rank=rank,
        arxiv_id=arxiv_id,
        authors=_authors(entry, atom),
        details=PaperDetails(listed_at=_moment(entry.get("published_parsed"))),
    )


def _arxiv_id(entry: Any) -> str | None:
    for field in ("id", "link"):
        found = _ID.search(str(entry.get(field, "")).strip())
        if found:
            return normalize_arxiv_id(found.group(1))
    return None


def _authors(entry: Any, atom: bool) -> tuple[str, ...]:
    """The arXiv API's Atom lists one author per element ("Smith, John" is one); RSS, and the Atom of
    rss.arxiv.org (its entries carry an announce type), put them all in one dc:creator, separated by
    commas and "and", where a suffix ("Jr.") belongs to the name before it."""
    given = [" ".join(str(a.get("name", "")).split()) for a in entry.get("authors", [])]
    one_each = atom and "arxiv_announce_type" not in entry
    return tuple(n for n in (given if one_each else [n for g in given for n in _rss_names(g)]) if n)


def _rss_names(creators: str) -> list[str]:
    names: list[str] = []
    for part in _AUTHOR_SPLIT.split(creators):
        if names and _SUFFIX.fullmatch(part.strip()):
            names[-1] += f", {part.strip()}"
        else:
            names.append(part.strip())
    return names


def _moment(parsed: time.struct_time | None) -> datetime | None:
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC) if parsed else None


def _day(parsed: time.struct_time | None) -> str | None:
    moment = _moment(parsed)
    return moment.date().isoformat() if moment else None
