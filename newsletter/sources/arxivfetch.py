"""``ArxivSource``: an arXiv RSS category feed (``GET {base_url}/rss/cs.LG+cs.CL``) as dump files.

Same machinery as ``hf-daily`` (``fetch.HttpSource``): retries with backoff on 5xx/429 honouring
``Retry-After``, ETag/Last-Modified sent back as conditional headers, each response validated with
the ``arxiv`` parser before it is written (atomically) as ``arxiv-<categories>-<date>-<sha8>.xml``
in the dumps folder, and only when its listing changed. A feed without new papers (arXiv announces
nothing on weekends) writes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from newsletter.sources.arxivfeed import parse_arxiv_feed
from newsletter.sources.fetch import HttpSource, _Seen, _StateFile, listing_hash, seen_from

__all__ = ["DEFAULT_ARXIV_BASE_URL", "ArxivSource"]

log = logging.getLogger(__name__)

DEFAULT_ARXIV_BASE_URL = "https://rss.arxiv.org"
_FEED = "feed"  # the one entry under this feed's URL in the state file


class ArxivSource(HttpSource):
    """New submissions (and cross-lists) in arXiv categories, from their RSS feed."""

    name = "arxiv"
    accept = "application/rss+xml, application/xml;q=0.9, */*;q=0.1"

    def __init__(
        self,
        dumps_dir: Path,
        state_dir: Path,
        *,
        categories: Sequence[str],
        base_url: str = DEFAULT_ARXIV_BASE_URL,
        client: httpx.Client | None = None,
        timeout: float = 20.0,
        max_retries: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        if not categories:
            raise ValueError("categories must name at least one arXiv category")
        self.categories = tuple(categories)
        options = {"client": client, "timeout": timeout, "max_retries": max_retries, "sleep": sleep}
        super().__init__(dumps_dir, state_dir, base_url=base_url, stop=stop, **options)  # type: ignore[arg-type]
        self._state = _StateFile(state_dir / f"{self.name}.json", self.url)  # one entry per feed URL

    def __repr__(self) -> str:
        return f"ArxivSource({self.base_url!r}, categories={list(self.categories)})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/rss/{'+'.join(self.categories)}"

    def fetch(self, now: datetime) -> list[Path]:
        """Fetch the feed once; return the dump file written (none when nothing changed)."""
        seen = self._state.load(keep=[_FEED])
        before = seen.get(_FEED, _Seen())
        try:
            with self._session() as client:
                reply = self._conditional_get(client, self.url, before)
            if reply.status == 304:
                log.debug("%s: not modified", self.url)
                return []
            dump = parse_arxiv_feed(reply.body, self.url)  # ParseError (a SourceError) names the URL
            listing = listing_hash(dump)
            if not dump.papers or listing == before.sha256:
                log.debug("%s: no new papers listed", self.url)
                seen[_FEED] = seen_from(reply, listing)
                return []
            day = dump.listed_on or now.astimezone(UTC).date().isoformat()
            name = f"arxiv-{'+'.join(self.categories)}-{day}-{dump.content_hash[:8]}.xml"
            path = self._save(name, reply.body, dump.content_hash)
            seen[_FEED] = seen_from(reply, listing)  # only once saved: a failed write fetches it again
        finally:
            self._state.save(seen)
        return [path] if path else []
