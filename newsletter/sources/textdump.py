"""Parser for text dumps of the Hugging Face Daily Papers page (format ``hf-text``).

A dump looks like this (blank lines between every line)::

    new
    Get trending papers in your email inbox!
    Subscribe
    Daily Papers                       <- only in some variants
    by AK and the research community   <- also seen as "byAK and ..."
    Mar 11                             <- optional date line
    <title of paper 1>
    <abstract of paper 1, one long line>
    <title of paper 2>
    ...

Header lines are recognised by loose patterns, not byte for byte. A title is one short line; an
abstract is one line of prose (long, or ending with a full stop). Each paper keeps its 1-based
position in the dump as its rank.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from newsletter.errors import ParseError
from newsletter.models import Dump, Paper, unescape
from newsletter.sources.common import dedupe, utf8

log = logging.getLogger(__name__)

FORMAT = "hf-text"
MAX_TITLE_CHARS = 300  # longer lines are always prose (seed titles are <= 180 chars)
MIN_SHORT_ABSTRACT_WORDS = 15  # a line under MAX_TITLE_CHARS is an abstract only with this many words

_BOM = b"\xef\xbb\xbf"
_BINARY_MAGIC = (b"%PDF-", b"\x1f\x8b", b"PK\x03\x04", b"\x89PNG", b"\xff\xd8\xff", b"GIF8")
_CONTROL_BYTES = frozenset(range(32)) - {9, 10, 12, 13} | {127}
# Whole lines, or how they open: a first title may say "Trending Papers" or "Research Community".
_HEADER_LINE = re.compile(
    r"^(new|subscribe|daily papers)$|^get trending papers\b|^by\s*ak\b",
    re.IGNORECASE,
)
_DATE_LINE = re.compile(
    r"^((jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(st|nd|rd|th)?(,?\s+\d{4})?"
    r"|\d{4}-\d{2}-\d{2})$",
    re.IGNORECASE,
)
_HTML_LINE = re.compile(r"^(<!doctype\s+html|<html|<head|<body|</html|<\?xml)\b", re.IGNORECASE)
_TAG_START = re.compile(r"^<[!?/a-zA-Z]")
_SENTENCE_END = re.compile(r"([.!?][\"')\]]*|https?://\S+)$")
_PROSE_END = re.compile(r"([.!][\"')\]]*|https?://\S+)$")  # as a sentence ends, but a question may be a title


@dataclass(frozen=True, slots=True)
class _Line:
    number: int  # 1-based line number in the file
    text: str  # stripped, never empty


def parse_text_dump(data: bytes, source: str) -> Dump:
    """Parse a Daily Papers text dump; raise ParseError naming ``source`` and the line."""
    lines = _content_lines(_decode(data, source))
    if not lines:
        raise ParseError(source, 1, "empty file: no text in dump")
    _reject_html(lines, source)
    start, listed_on = _skip_header(lines)
    try:
        papers = _pair_papers(lines[start:], source)
    except ParseError:
        _reject_markup(lines, source)  # a fragment of a page: say so rather than which line failed
        raise
    if not papers:
        raise ParseError(source, lines[-1].number, "no papers in dump (only header lines)")
    return Dump(
        source=source,
        format=FORMAT,
        content_hash=hashlib.sha256(data).hexdigest(),
        papers=dedupe(papers, source),
        listed_on=listed_on,
    )


def _decode(data: bytes, source: str) -> str:
    data = data.removeprefix(_BOM)
    if not data.strip():
        raise ParseError(source, 1, "empty file: no text in dump")
    _reject_binary(data, source)
    return utf8(data, source)


def _reject_binary(data: bytes, source: str) -> None:
    if data.startswith(_BINARY_MAGIC):
        raise ParseError(source, 1, "binary data, not a text dump")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ParseError(source, _line_at(data, nul), "binary data (NUL byte), not a text dump")
    sample = data[:8192]
    controls = sum(1 for byte in sample if byte in _CONTROL_BYTES)
    if controls * 100 > len(sample):
        problem = f"binary data ({controls} control bytes in the first 8 KB), not a text dump"
        raise ParseError(source, 1, problem)


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _content_lines(text: str) -> list[_Line]:
    """Non-blank lines, stripped, with their 1-based numbers (CRLF and CR count as newlines)."""
    raw = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [_Line(number, line.strip()) for number, line in enumerate(raw, start=1) if line.strip()]


def _reject_markup(lines: list[_Line], source: str) -> None:
    """A file opening with a tag that does not read as a dump. A dump may open so: its first title
    can be "<Think> Less: ..."."""
    if _TAG_START.match(lines[0].text):
        raise ParseError(source, lines[0].number, "an HTML/XML page, not a text dump")


def _reject_html(lines: list[_Line], source: str) -> None:
    for line in lines:
        if _HTML_LINE.match(line.text):
            raise ParseError(source, line.number, "an HTML page, not a text dump")


def _skip_header(lines: list[_Line]) -> tuple[int, str | None]:
    """Index of the first line after the header and the optional date line, and that date."""
    listed_on = None
    index = 0
    while index < len(lines) and _is_header_or_date(lines[index].text):
        if listed_on is None and _DATE_LINE.match(lines[index].text):
            listed_on = lines[index].text
        index += 1
    if index == 0:
        log.debug("no header lines recognised; reading papers from line %s", lines[0].number)
    return index, listed_on


def _is_header_or_date(text: str) -> bool:
    return len(text) <= 80 and bool(_HEADER_LINE.search(text) or _DATE_LINE.match(text))


def is_abstract(text: str) -> bool:
    """True when a line reads as an abstract (long prose) rather than a title (one short line)."""
    if len(text) > MAX_TITLE_CHARS:
        return True
    return len(text.split()) >= MIN_SHORT_ABSTRACT_WORDS and bool(_PROSE_END.search(text))


def _pair_papers(lines: list[_Line], source: str) -> list[Paper]:
    papers: list[Paper] = []
    title: _Line | None = None
    for line in lines:
        if title is None:
            title = _expect_title(line, source)
            continue
        if not is_abstract(line.text):
            raise _title_without_abstract(title, line, source, first=not papers, last=line is lines[-1])
        title_text, abstract = unescape(" ".join(title.text.split())), unescape(line.text)
        papers.append(Paper(title=title_text, abstract=abstract, rank=len(papers) + 1))
        title = None
    if title is not None:
        raise ParseError(source, title.number, f"truncated dump: ends with title {_quote(title.text)}")
    _warn_if_cut(papers, source)
    return papers


def _expect_title(line: _Line, source: str) -> _Line:
    if is_abstract(line.text):
        hint = "each paper is a one-line title followed by a one-line abstract"
        raise ParseError(source, line.number, "abstract without a title", hint)
    return line


def _title_without_abstract(title: _Line, line: _Line, source: str, *, first: bool, last: bool) -> ParseError:
    if last:
        problem = f"truncated dump: ends before the abstract of {_quote(title.text)} (line {title.number})"
        return ParseError(source, line.number, problem)
    hint = "if this is a header line, the page layout may have changed" if first else None
    return ParseError(source, title.number, f"title without abstract: {_quote(title.text)}", hint)


def _warn_if_cut(papers: list[Paper], source: str) -> None:
    """A dump cut off mid-abstract may end without a full stop; so do a few real abstracts."""
    if papers and not _SENTENCE_END.search(papers[-1].abstract):
        log.warning("%s: the last abstract ends without a full stop; the dump may be truncated", source)


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
