"""Parser for saved Hugging Face paper pages (format ``hf-html``).

The pages are rendered on the server with their data embedded for the browser: an element such as
``<div class="SVELTE_HYDRATER contents" data-target="DailyPapers" data-props='{...}'>`` carries a
JSON object. The listing pages (``/papers``, ``/papers/date/...``, ``/papers/trending``) embed
``dailyPapers``, a list of the same items the daily papers API answers with; a single paper's page
(``/papers/<id>``) embeds ``PaperContent`` with one ``paper`` in the API's shape. Both go through the
API parser (``hfjson``), so a saved page gives the same papers, fields and errors as the API. The
markup around the data is never read: it changes with every redesign, the embedded data rarely.
"""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from typing import Any

from newsletter.errors import ParseError
from newsletter.models import UNRANKED, Dump
from newsletter.sources.common import utf8
from newsletter.sources.hfjson import dump_from_items

FORMAT = "hf-html"
_LISTING = "dailyPapers"
_HINT = "save a page of https://huggingface.co/papers (the listing or one paper's page), or use its API"


def looks_like_html(data: bytes) -> bool:
    """A document that opens as HTML (``<!doctype html>`` or ``<html``) within its first 1 KB."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


def parse_hf_html(data: bytes, source: str) -> Dump:
    """Parse a saved HF papers page; ParseError names ``source`` and the embedded item or property."""
    items, page_rank = _items(_embedded(data, source), source)
    dump = dump_from_items(items, data, source, FORMAT)
    if page_rank is None:
        return dump
    return dataclasses.replace(
        dump, papers=tuple(dataclasses.replace(p, rank=page_rank) for p in dump.papers)
    )


def _embedded(data: bytes, source: str) -> list[tuple[str, int, str]]:
    """Every ``(data-target, line, data-props)`` of the page, in document order."""
    reader = _PropsReader()
    try:
        reader.feed(utf8(data, source))
        reader.close()
    except AssertionError as exc:  # html.parser's last resort on markup it cannot step over
        raise ParseError(source, reader.getpos()[0], f"unreadable HTML: {exc}") from exc
    return reader.found


def _items(embedded: list[tuple[str, int, str]], source: str) -> tuple[list[Any], int | None]:
    """The listing's items, else the one paper of a paper page as a one-item listing with the rank
    the page states (its day's ``dailyPaperRank``; unranked when it states none: a page is no listing)."""
    values, broken = _decoded(embedded, source)
    for value in values:
        if isinstance(value.get(_LISTING), list):
            return value[_LISTING], None
    for value in values:
        if isinstance(value.get("paper"), dict):
            return [_page_item(value)], _page_rank(value)
    if broken:
        raise broken[0]  # the papers' data may be the part that does not parse
    raise ParseError(source, 1, "an HTML page with no Hugging Face papers data in it", _HINT)


def _decoded(
    embedded: list[tuple[str, int, str]], source: str
) -> tuple[list[dict[str, Any]], list[ParseError]]:
    """The JSON objects embedded in the page, and an error for each that does not parse."""
    values: list[dict[str, Any]] = []
    broken: list[ParseError] = []
    for target, line, props in embedded:
        try:
            value = json.loads(props)
        except (ValueError, RecursionError) as exc:
            problem = f"the page's {target} data is not valid JSON: {exc}"
            broken.append(ParseError(source, line, problem))
            continue
        if isinstance(value, dict):
            values.append(value)
    return values, broken


def _page_item(value: dict[str, Any]) -> dict[str, Any]:
    """A paper page's data as an API item: the paper, its comment count and its organization."""
    return {
        "paper": value["paper"],
        "numComments": _comments(value),
        "organization": value.get("submitterOrganization"),
    }


def _page_rank(value: dict[str, Any]) -> int:
    rank = value.get("dailyPaperRank")
    return rank if isinstance(rank, int) and not isinstance(rank, bool) and 1 <= rank < UNRANKED else UNRANKED


def _comments(value: dict[str, Any]) -> int | None:
    comments = value.get("comments")
    return len(comments) if isinstance(comments, list) else None


class _PropsReader(HTMLParser):
    """Collects the ``data-props`` of elements that name a ``data-target``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        target, props = values.get("data-target"), values.get("data-props")
        if target and props:
            self.found.append((target, self.getpos()[0], props))
