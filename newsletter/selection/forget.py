"""Forgetting the embedding vectors no run will read again, so the state database does not keep every
paper's vectors (some 20-30 KB a paper: 8-12 MB a day at arXiv's 400 new papers) for as long as it runs.

A run reads the vectors of its subscribers' windows (the papers first seen after their watermarks,
14 days back at most; an address held after a bounce has none until `retry EMAIL`),
of the papers first seen in the last ``BACKGROUND_DUMPS`` dumps, of the papers subscribers liked or
marked, and of the bundled reference papers (no rows of the store). After a run, the vectors of every
other paper are deleted. Nothing is lost: `explain` of an older paper, or a subscriber back in the
file with an old watermark, embeds those papers again. Profile texts' vectors (by hash) are kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime

from newsletter.address import address_key
from newsletter.models import Subscriber
from newsletter.rank.base import Ranker
from newsletter.rank.reference import reference_papers
from newsletter.rank.semantic import SemanticRanker
from newsletter.selection.select import BACKGROUND_DUMPS, catch_up_floor, liked_or_marked
from newsletter.store import Store
from newsletter.store.vectors import StoreVectorCache

log = logging.getLogger(__name__)

CHUNK = 200  # papers forgotten per transaction: about 2,400 vector rows


def forget_old_vectors(
    store: Store,
    ranker: Ranker,
    subscribers: Sequence[Subscriber],
    stop: threading.Event | None = None,
    now: datetime | None = None,
) -> int:
    """Delete the stored vectors of the papers no run reads again, CHUNK papers a transaction (a short
    write lock; ``stop`` ends it between two); how many vectors went."""
    if not isinstance(ranker, SemanticRanker) or not isinstance(ranker.cache, StoreVectorCache):
        return 0  # a lexical ranker stores no vectors
    horizon = last_dump_done_with(store, subscribers, now)
    old = ranker.cache.papers_embedded(ranker.embedder.name, horizon) if horizon > 0 else []
    if not old:
        return 0
    named = liked_or_marked(store, subscribers, store.feedback_marks())
    kept = {p.key for p in (*named, *reference_papers())}
    unread = [p for p in old if p.key not in kept]  # a listed reference paper has its key
    gone = 0
    for start in range(0, len(unread), CHUNK):
        if stop is not None and stop.is_set():
            break
        gone += ranker.cache.delete(ranker.vector_keys(unread[start : start + CHUNK]))
    log.info("forgot %d vectors of papers first seen in dump %d or before", gone, horizon)
    return gone


def _first_window_mark(store: Store, newest: int) -> int:
    """The watermark a first digest's window (the papers of the day's dumps, see Selector._window) starts
    after: before the earliest of them was first seen."""
    return min((p.first_dump_seq for p in store.newest_listing()), default=newest) - 1


def last_dump_done_with(store: Store, subscribers: Sequence[Subscriber], now: datetime | None = None) -> int:
    """The latest dump whose new papers are in no subscriber's window and not among the recent papers
    a run calibrates on (0: none); subscribers not in the file, unsubscribed, or held after a bounce
    (until `retry EMAIL`, which embeds their window again) do not count, and no window reaches back
    past CATCH_UP before ``now``."""
    latest, newest = store.latest_dump_seq(), store.latest_paper_seq()
    if latest is None or newest is None:
        return 0
    states, unsubscribed = store.subscriber_states(), store.unsubscribed_emails()
    marks, first = [latest], _first_window_mark(store, newest)
    for sub in subscribers:
        key = address_key(sub.email)
        state = states.get(key)
        if key in unsubscribed or (state is not None and state.bounced_at is not None):
            continue
        mark = state.watermark_seq if state else None
        marks.append(first if mark is None else mark)
    floor = catch_up_floor(store, now) if now is not None else 0
    return max(0, min(latest - BACKGROUND_DUMPS, max(min(marks), floor)))
