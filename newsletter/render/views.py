"""What a template sees: plain frozen values, built by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ItemView:
    """One paper in a digest.

    ``excerpt`` is display text (the listing's summary, or the abstract's sentences that state the
    contribution and the matched phrase); the bundled templates trim it to at most three sentences.
    ``rank`` is the paper's trending rank, ``times_seen`` how many listings it appeared in. ``links``
    are (label, URL) pairs: arXiv abstract, PDF, HF page, code, project page, whichever exist.
    ``upvotes``/``comments`` are the listing's counts (HF), None when the source has none.
    ``more_url`` and ``less_url`` are the signed "more/less like this" links
    ("" when NEWSLETTER_BASE_URL or the secret is not set).
    """

    title: str
    url: str
    excerpt: str
    why: str
    rank: int | None  # None: no trending listing ranked it (an arXiv feed's paper)
    score: float
    authors: tuple[str, ...] = ()
    arxiv_id: str | None = None
    times_seen: int = 1
    links: tuple[tuple[str, str], ...] = ()
    upvotes: int | None = None
    comments: int | None = None
    organization: str | None = None
    thumbnail: str | None = None
    keywords: tuple[str, ...] = ()
    listed_at: datetime | None = None
    more_url: str = ""
    less_url: str = ""


@dataclass(frozen=True, slots=True)
class DigestView:
    """Everything a digest template sees (as ``view``)."""

    subscriber_name: str  # may be ""
    subscriber_email: str
    items: tuple[ItemView, ...]
    date: datetime  # the digest date, in the subscriber's time zone
    unsubscribe_url: str  # https one-click page or a mailto: URL
    preferences_note: str  # e.g. "You get this because you subscribed with ada@example.org."
    list_name: str  # e.g. "Trending Papers"
