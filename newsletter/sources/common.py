"""Helpers both dump parsers use."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

from newsletter.errors import ParseError
from newsletter.models import Paper

log = logging.getLogger(__name__)

INT32 = (-(2**31), 2**31 - 1)  # PostgreSQL's INTEGER: the store's count columns
TITLE_CHARS = 500  # the title is an indexed key: PostgreSQL's btree holds at most 2,704 bytes
ID_CHARS = 64  # papers.arxiv_id is a VARCHAR(64)


def utf8(data: bytes, source: str) -> str:
    """``data`` decoded as UTF-8; a ParseError at the line of the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ParseError(source, line, f"invalid UTF-8 (byte 0x{data[exc.start]:02x})") from exc


def dedupe(papers: list[Paper], source: str) -> tuple[Paper, ...]:
    """Keep the first of papers listed twice (same arXiv id, or same normalised title without one),
    each made :func:`storable`."""
    seen: dict[str, Paper] = {}
    for paper in (storable(p, source) for p in papers):
        first = seen.setdefault(paper.key, paper)
        if first is paper:
            continue
        if paper.abstract_key != first.abstract_key:  # a title or an arXiv id two listings share
            what = f"arXiv id {paper.arxiv_id}" if paper.arxiv_id else "title"
            log.warning(
                "%s: paper at rank %s left out: rank %s has its %s", source, paper.rank, first.rank, what
            )
        else:
            log.info("%s: duplicate paper at rank %s dropped: %s", source, paper.rank, paper.key)
    return tuple(seen.values())


def storable(paper: Paper, source: str = "") -> Paper:
    """``paper`` as both databases store it alike: NUL characters dropped from its text, a count
    outside PostgreSQL's INTEGER, a date no UTC timestamp holds or an id over ``ID_CHARS`` left out
    (as a value of the wrong shape is), a title cut to ``TITLE_CHARS``. SQLite would keep these where
    PostgreSQL refuses the whole dump, and a state could not move from one to the other."""
    fitted = _fitted(paper)
    if fitted.arxiv_id is not None and len(fitted.arxiv_id) > ID_CHARS:  # not a real one: keyed by title
        fitted = dataclasses.replace(fitted, arxiv_id=None)
    if len(fitted.title) > TITLE_CHARS:
        fitted = dataclasses.replace(fitted, title=fitted.title[: TITLE_CHARS - 1].rstrip() + "…")
    if fitted != paper:
        log.warning(
            "%s: paper at rank %s: a NUL, a number, date or id out of range, or a title over %d chars cut",
            source,
            paper.rank,
            TITLE_CHARS,
        )
    return fitted


def _fitted(value: Any) -> Any:
    """``value`` with each of its parts made storable (see :func:`storable`)."""
    match value:
        case str():
            return value.replace("\x00", "")
        case bool():
            return value
        case int():
            return value if INT32[0] <= value <= INT32[1] else None
        case datetime():
            return _utc_or_none(value)
        case tuple():
            return tuple(_fitted(item) for item in value)
        case _ if dataclasses.is_dataclass(value) and not isinstance(value, type):
            parts = {f.name: _fitted(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return dataclasses.replace(value, **parts)
    return value


def _utc_or_none(moment: datetime) -> datetime | None:
    try:
        moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return moment
