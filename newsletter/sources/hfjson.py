"""Parser for the Hugging Face daily papers API format (``/api/daily_papers``, format ``hf-json``).

The response is a JSON list; each item looks like (fields we do not use left out)::

    {"paper": {"id": "2403.12345", "title": "...", "summary": "...", "upvotes": 42,
               "authors": [{"name": "Ada Lovelace", ...}, ...],
               "publishedAt": "2024-03-18T17:59:58.000Z", ...},
     "publishedAt": "2024-03-19T01:02:03.000Z", "title": "...", "numComments": 3, ...}

``paper.id``, ``paper.title`` and ``paper.summary`` are required (the outer ``title``/``summary``
stand in when the inner ones are absent); upvotes, comments and authors are optional but must have
the right type (the listing date is read if it can be: nothing depends on it). Authors marked
``hidden`` are left out. The fields a reader may want beyond
those (``ai_summary``, ``ai_keywords``, ``githubRepo``/``githubStars``, ``projectPage``,
``organization``, ``thumbnail``/``mediaUrl(s)``, ``submittedOnDailyAt``) go into ``PaperDetails``;
one of the wrong type is left out rather than rejecting the listing, since the API adds and
reshapes them. Rank is the item's 1-based position. An empty list is a valid, empty dump. The
API's error body (``{"error": "..."}``) is refused with its own message; a ``{"data": [...]}``
wrapper is unwrapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from newsletter.errors import ParseError
from newsletter.models import Dump, Paper, PaperDetails, normalize_arxiv_id
from newsletter.sources.common import dedupe, utf8

log = logging.getLogger(__name__)

FORMAT = "hf-json"
HF_PAPERS = "https://huggingface.co/papers/"
_BOM = b"\xef\xbb\xbf"


class _FieldError(ValueError):
    """A field of one item has the wrong shape; ``field`` is its dotted path inside the item."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def parse_hf_json(data: bytes, source: str) -> Dump:
    """Parse a daily papers API response; raise ParseError naming ``source`` and the line or item."""
    return dump_from_items(_load(data, source), data, source, FORMAT)


def dump_from_items(items: list[Any], data: bytes, source: str, format: str) -> Dump:
    """A Dump of the API's items (the JSON response's, or those a page embeds); ParseError names the item."""
    papers: list[Paper] = []
    for index, item in enumerate(items):
        try:
            papers.append(_paper(item, rank=index + 1))
        except _FieldError as exc:
            where = f"item {index + 1}: {exc.field}: " if exc.field else f"item {index + 1}: "
            raise ParseError(source, None, where + exc.problem) from exc
    return Dump(
        source=source,
        format=format,
        content_hash=hashlib.sha256(data).hexdigest(),
        papers=dedupe(papers, source),
    )


def _load(data: bytes, source: str) -> list[Any]:
    data = data.removeprefix(_BOM)
    if not data.strip():
        raise ParseError(source, 1, "empty file: no JSON in dump")
    text = utf8(data, source)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] == "<":  # a proxy's or a status page's answer where the API's JSON goes
            raise ParseError(source, 1, "an HTML or XML page, not JSON (an error page?)") from exc
        raise ParseError(source, exc.lineno, f"malformed JSON: {exc.msg} (column {exc.colno})") from exc
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits; nesting too deep
        raise ParseError(source, None, f"malformed JSON: {exc}") from exc
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        return value["data"]  # an archiver's {"status", "date", "count", "data": [...]} wrapper
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        problem = f"the API answered with an error, not papers: {value['error'].strip()!r}"
        raise ParseError(source, 1, problem, "fetch this date again later, or delete the file")
    if not isinstance(value, list):
        hint = "expected the response of /api/daily_papers: a JSON list of items"
        raise ParseError(source, 1, f"expected a JSON list of papers, got {_kind(value)}", hint)
    return value


def _paper(item: Any, *, rank: int) -> Paper:
    if not isinstance(item, dict):
        raise _FieldError("", f"expected an object, got {_kind(item)}{_repr_note(item)}")
    inner = _get(item, "paper", dict, required=True)
    arxiv_id = _get(inner, "id", str, required=True, path="paper.id")
    return Paper(
        title=" ".join(_text(item, inner, "title").split()),
        abstract=_text(item, inner, "summary").strip(),
        rank=rank,
        arxiv_id=_arxiv_id(arxiv_id),
        authors=_authors(inner),
        upvotes=_get(inner, "upvotes", int, path="paper.upvotes"),
        comments=_get(item, "numComments", int),
        details=_details(item, inner, arxiv_id),
    )


def _repr_note(item: Any) -> str:
    if isinstance(item, str) and item.lstrip().startswith("{'"):
        return " (a Python repr of an item, not JSON: the file was re-saved by another program)"
    return ""


def _details(item: dict[str, Any], inner: dict[str, Any], paper_id: str) -> PaperDetails:
    """The optional display fields; a value of the wrong shape is left out, not an error."""
    keywords = _loose(inner, "ai_keywords", list) or []
    return PaperDetails(
        ai_summary=_text_or_none(_loose(inner, "ai_summary", str)),
        ai_keywords=tuple(dict.fromkeys(" ".join(k.split()) for k in keywords if _usable_text(k))),
        github_repo=_url(_loose(inner, "githubRepo", str)),
        github_stars=_loose(inner, "githubStars", int),
        project_page=_url(_loose(inner, "projectPage", str)),
        organization=_organization(inner) or _organization(item),
        thumbnail=_url(
            _loose(item, "thumbnail", str) or _loose(item, "mediaUrl", str) or _first_media(inner)
        ),
        listed_at=_moment(_loose(inner, "submittedOnDailyAt", str) or _loose(item, "publishedAt", str)),
        hf_page=HF_PAPERS + quote(paper_id.strip(), safe="/.") if paper_id.strip() else None,
    )


def _loose(obj: dict[str, Any], key: str, kind: type) -> Any:
    try:
        return _get(obj, key, kind)
    except _FieldError as exc:
        log.debug("ignoring %s", exc)
        return None


def _text_or_none(value: str | None) -> str | None:
    return " ".join(value.split()) or None if value else None


def _url(value: str | None) -> str | None:
    value = (value or "").strip()
    return value if value.startswith(("https://", "http://")) and " " not in value else None


def _organization(obj: dict[str, Any]) -> str | None:
    org = _loose(obj, "organization", dict) or {}
    name = _loose(org, "fullname", str) or _loose(org, "name", str)
    return _text_or_none(name)


def _first_media(inner: dict[str, Any]) -> str | None:
    media = _loose(inner, "mediaUrls", list) or []
    return next((m for m in media if _usable_text(m)), None)


def _usable_text(value: Any) -> bool:
    """A list element to keep: text, not blank, valid Unicode (an unpaired surrogate escape would be
    refused by the store, and with it the whole dump)."""
    if not isinstance(value, str) or not value.strip():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _moment(value: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def _get(obj: dict[str, Any], key: str, kind: type, *, required: bool = False, path: str = "") -> Any:
    """``obj[key]`` checked against ``kind``; None when absent (or null) and not required."""
    path = path or key
    value = obj.get(key)
    if value is None:
        if required:
            raise _FieldError(path, "missing")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _FieldError(path, f"expected {_TYPE_NAMES[kind]}, got {_kind(value)}")
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise _FieldError(path, f"{value} is out of range")
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _FieldError(path, "not valid Unicode (an unpaired surrogate escape)") from None
    return value


_INT64 = (-(2**63), 2**63 - 1)  # what SQLite binds (`common.storable` narrows counts to INTEGER)


def _text(item: dict[str, Any], inner: dict[str, Any], key: str) -> str:
    """``paper.<key>``, else the outer ``<key>``; must be a non-empty string for titles."""
    value = _get(inner, key, str, path=f"paper.{key}")
    if value is None:
        value = _get(item, key, str)
    if value is None or (key == "title" and not value.replace("\0", "").strip()):  # NULs: never stored
        raise _FieldError(f"paper.{key}", "missing or empty")
    return value


def _arxiv_id(value: str) -> str | None:
    arxiv_id = normalize_arxiv_id(value)
    if arxiv_id is None:
        log.warning("paper.id %r is not an arXiv id; the paper is keyed by its title", value)
    return arxiv_id


def _authors(inner: dict[str, Any]) -> tuple[str, ...]:
    authors = _get(inner, "authors", list, path="paper.authors") or []
    names: list[str] = []
    for position, author in enumerate(authors):
        path = f"paper.authors[{position}]"
        if not isinstance(author, dict):
            raise _FieldError(path, f"expected an object, got {_kind(author)}")
        if isinstance(author.get("name"), str) and not _usable_text(author["name"]):
            continue  # blank, or an unpaired surrogate: that name is left out, not the whole dump
        name = _get(author, "name", str, path=f"{path}.name")
        if name and name.strip() and author.get("hidden") is not True:
            names.append(" ".join(name.split()))
    return tuple(names)


_TYPE_NAMES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    float: "a number",
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), f"a {type(value).__name__}")
