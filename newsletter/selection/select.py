"""Which papers go in each subscriber's digest: their window of new papers, whether they are due, ranking.

A subscriber's *window* is every paper first seen after their watermark (the last dump their previous
digest, or an evaluation that found nothing relevant, covered); a new subscriber's window is every
paper of the dumps ingested in the day up to the latest one that brought new papers (a listing fetched
hourly repeats the day's others; another source may come after it). Either reaches back CATCH_UP (14
days of ingested dumps) at most. Papers sent before are outside every later window, so nothing is sent twice.
Subscribers that share a window are ranked together (`rank_many`), so the cost per subscriber is a few
array operations, and selections stream out without holding one per subscriber.
A subscriber's own papers (those their profile lists as liked or disliked, and those they marked "more" or
"less like this") are no candidates of theirs: they know them (`own_papers`; the ranker still reads them).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from newsletter import interrupt
from newsletter.address import address_key
from newsletter.models import Scored, StoredPaper, Subscriber
from newsletter.rank.base import Ranker
from newsletter.rank.scoring import Catalog
from newsletter.report import BACKING_OFF, WAITING, Timings
from newsletter.selection.due import far_ahead, is_due, latest_slot, slot_served_now
from newsletter.store import RETRY, Store, SubscriberState

BOUNCED = (
    "its address was refused for good (see `newsletter status`); `newsletter retry EMAIL` tries it again"
)
BACKGROUND_DUMPS = 10  # papers first seen in this many recent dumps calibrate the ranker's scores
CATCH_UP = timedelta(days=14)  # a window reaches back no further (by dumps ingested: see catch_up_floor):
# a subscriber back after months is not ranked (and embedded again) over every paper since, for one digest

OWN = {  # why a paper the subscriber named is no candidate of theirs, by where they named it
    "liked": "you listed it as a paper you liked",
    "disliked": "you listed it as a paper to see fewer like",
    "more": "you marked it 'more like this'",
    "less": "you marked it 'less like this'",
}

log = logging.getLogger(__name__)

Groups = dict[int | None, list[Subscriber]]  # subscribers by watermark (one window each)


@dataclass(frozen=True)
class Selection:
    """A subscriber's digest-to-be, or the reason there is none."""

    subscriber: Subscriber
    reason: str = ""  # set when there is nothing to send
    scored: tuple[Scored, ...] = ()  # best first: relevant papers only, or every candidate for a preview
    upto_seq: int = 0  # the latest dump this selection covers
    from_seq: int | None = None  # the subscriber's watermark before it (None: new subscriber)
    serves: datetime | None = None  # the send slot a digest made of it serves (None: each-dump)

    @property
    def chosen(self) -> tuple[Scored, ...]:
        relevant = (s for s in self.scored if s.relevant)
        return tuple(itertools.islice(relevant, self.subscriber.max_items))


class Selector:
    def __init__(self, store: Store, ranker: Ranker, timings: Timings | None = None) -> None:
        self.store = store
        self.ranker = ranker
        self.timings = timings or Timings()
        self._feedback: dict[str, dict[str, list[str]]] = {}
        self._named = Catalog(())  # the papers the ranked subscribers liked, disliked or marked

    def select(
        self,
        subscribers: Iterable[Subscriber],
        now: datetime,
        *,
        ignore_due: bool = False,
        every_paper: bool = False,
        stopped: Callable[[], bool] = lambda: False,
    ) -> Iterator[Selection]:
        """One Selection per subscriber, grouped by window (not in input order).

        ``ignore_due`` previews a digest that is not due yet; ``every_paper`` keeps the papers that
        were not relevant too (best first), for showing near misses. Once ``stopped()`` turns true
        while the papers are embedded, the subscribers due wait for the next run.
        """
        waiting = self._backing_off(now)
        for selection in self._select(subscribers, now, ignore_due, every_paper, stopped):
            yield _waits(selection, waiting)

    def _select(
        self,
        subscribers: Iterable[Subscriber],
        now: datetime,
        ignore_due: bool,
        every_paper: bool,
        stopped: Callable[[], bool],
    ) -> Iterator[Selection]:
        latest = self.store.latest_dump_seq()
        if latest is None:
            yield from (Selection(s, reason="nothing new") for s in subscribers)
            return
        with self.timings("select"):
            states = self.store.subscriber_states()
            unsubscribed = self.store.unsubscribed_emails()
            self._feedback = self.store.feedback_marks()
        groups = yield from _by_watermark(subscribers, states, unsubscribed)
        windows = self._windows(groups, latest, states, now)
        due = yield from _due_by_watermark(groups, windows, states, now, ignore_due)
        ranked = [sub for group in due.values() for sub in group]
        # an idle tick embeds nothing; the named papers are the ranked subscribers' only
        if ranked and not self._prepared(ranked, windows.values(), latest, stopped):
            yield from (Selection(sub, reason=WAITING) for sub in ranked)
            return
        for mark, group in due.items():
            for selection in self._rank(group, windows[mark], latest, mark, every_paper):
                yield replace(selection, serves=_slot_served_now(selection.subscriber, states, now))

    def _windows(
        self, groups: Groups, latest: int, states: dict[str, SubscriberState], now: datetime
    ) -> dict[int | None, list[StoredPaper]]:
        """Each watermark's window (see _window)."""
        floor = catch_up_floor(self.store, now)
        windows = {mark: self._window(mark, latest, floor) for mark in groups}
        listed = (states.get(address_key(s.email)) for group in groups.values() for s in group)
        _warn_if_ahead([state for state in listed if state is not None], now)  # not those it skips anyway
        return windows

    def _prepared(
        self,
        ranked: list[Subscriber],
        windows: Iterable[list[StoredPaper]],
        latest: int,
        stopped: Callable[[], bool],
    ) -> bool:
        """The ranker prepared for ``ranked``'s windows; False once ``stopped()`` turned true meanwhile."""
        try:
            with interrupt.stoppable(stopped):  # a SIGTERM waited out minutes of embedding
                self._named = Catalog(self._liked_or_marked(ranked))
                self._prepare(windows, latest, list(self._named.papers))
        except interrupt.Stopped:
            return False
        return True

    def triage(
        self, subscribers: Iterable[Subscriber], now: datetime
    ) -> tuple[list[Subscriber], list[Selection]]:
        """The subscribers a run may have a digest for, and why each other one has none; reads a few rows,
        ranks nothing. A coordinator hands out only the first (a daemon ticks every few minutes)."""
        waiting = self._backing_off(now)
        if self.store.latest_dump_seq() is None:  # as select words it: before anything else
            return [], [_waits(Selection(s, reason="nothing new"), waiting) for s in subscribers]
        latest = self.store.latest_paper_seq()
        states = self.store.subscriber_states()
        unsubscribed = self.store.unsubscribed_emails()
        floor = catch_up_floor(self.store, now)
        work: list[Subscriber] = []
        idle: list[Selection] = []
        for sub in subscribers:
            state = states.get(address_key(sub.email))
            reason = _idle_reason(sub, state, unsubscribed, latest, floor, now)
            if reason == "nothing new" and state is not None:  # served as select serves it
                mark, serves = state.watermark_seq or 0, _served_empty(sub, states, now)
                idle.append(_waits(Selection(sub, reason=reason, upto_seq=mark, serves=serves), waiting))
            elif reason:
                idle.append(_waits(Selection(sub, reason=reason), waiting))
            else:
                work.append(sub)
        return work, idle

    def _backing_off(self, now: datetime) -> set[str]:
        """The subscribers a server refused a digest for that waits out its backoff (address keys)."""
        with self.timings("select"):
            records = self.store.deliveries([RETRY], with_items=False)
        return {address_key(r.email) for r in records if r.not_before is not None and r.not_before > now}

    def prepare_around(self, papers: list[StoredPaper], subscriber: Subscriber) -> None:
        """Prepare the ranker as a run would, with ``papers`` as the candidates (`newsletter explain`)."""
        self._feedback = self.store.feedback_marks()
        self._prepare([papers], self.store.latest_dump_seq() or 0, self._liked_or_marked([subscriber]))

    def _liked_or_marked(self, subscribers: Iterable[Subscriber]) -> list[StoredPaper]:
        with self.timings("select"):
            return liked_or_marked(self.store, subscribers, self._feedback)

    def _window(self, mark: int | None, latest: int, floor: int) -> list[StoredPaper]:
        """The papers of dumps after ``mark`` (and after ``floor``: CATCH_UP ago), up to ``latest``:
        the digest's watermark, so a dump ingested meanwhile (another machine's) is the next window's,
        not sent twice."""
        with self.timings("select"):
            if mark is None:  # a first digest: the papers of the day's dumps up to the last that brought any
                return [p for p in self.store.newest_listing(upto=latest) if p.first_dump_seq > floor]
            return self.store.papers_first_seen_after(max(mark, floor), upto=latest)

    def _prepare(self, windows: Iterable[list[StoredPaper]], latest: int, named: list[StoredPaper]) -> None:
        """Per-paper work once per run: the candidates, the papers profiles name, recent papers."""
        with self.timings("rank"):
            pool = {p.id: p for window in [*windows, named] for p in window}
            background = self.store.papers_first_seen_after(max(0, latest - BACKGROUND_DUMPS), upto=latest)
            self.ranker.prepare(list(pool.values()), background)

    def _rank(
        self,
        subscribers: Sequence[Subscriber],
        window: list[StoredPaper],
        latest: int,
        mark: int | None,
        every_paper: bool,
    ) -> Iterator[Selection]:
        if not window:
            yield from (Selection(s, reason="nothing new") for s in subscribers)
            return
        wanted = not every_paper  # a digest: just its relevant papers, up to max_items
        owns = self._owns(subscribers, window)
        profiles = (
            _room(with_feedback(s, self._feedback), len(owns.get(i, ()))) for i, s in enumerate(subscribers)
        )
        ranked = self.ranker.rank_many(window, profiles, only_relevant=wanted, capped=wanted)
        for i, (sub, scored) in enumerate(
            zip(subscribers, self.timings.iterate("rank", ranked), strict=True)
        ):
            own = owns.get(i, set())
            kept = tuple(s for s in scored if s.paper.id not in own)
            selection = Selection(sub, scored=kept, upto_seq=latest, from_seq=mark)
            yield selection if selection.chosen else replace(selection, reason="nothing relevant")

    def _owns(self, subscribers: Sequence[Subscriber], window: list[StoredPaper]) -> dict[int, set[int]]:
        """Subscriber's place -> ids of their own papers in the window (see own_papers), where any."""
        ids = {p.id for p in window}
        owns = (
            (i, own_papers(s, self._feedback, self._named).keys() & ids) for i, s in enumerate(subscribers)
        )
        return {i: own for i, own in owns if own}


def _by_watermark(
    subscribers: Iterable[Subscriber], states: dict[str, SubscriberState], unsubscribed: set[str]
) -> Generator[Selection, None, Groups]:
    """The subscribers still sent to, by watermark; yields why each other one has no digest."""
    groups: Groups = defaultdict(list)
    for sub in subscribers:
        if address_key(sub.email) in unsubscribed:
            yield Selection(sub, reason="unsubscribed")
            continue
        state = states.get(address_key(sub.email))
        if state is not None and state.bounced_at is not None:
            yield Selection(sub, reason=BOUNCED)
            continue
        groups[state.watermark_seq if state else None].append(sub)
    return groups


def _due_by_watermark(
    groups: Groups,
    windows: dict[int | None, list[StoredPaper]],
    states: dict[str, SubscriberState],
    now: datetime,
    ignore_due: bool,
) -> Generator[Selection, None, Groups]:
    """The subscribers due a digest with something new, by watermark; yields why each other one has none."""
    due: Groups = defaultdict(list)
    for mark, group in groups.items():
        if not windows[mark]:  # "nothing new" says more than "not due"
            for s in group:  # a due send time with nothing new is served (see _served_empty)
                serves = _served_empty(s, states, now)
                yield Selection(s, reason="nothing new", upto_seq=mark or 0, serves=serves)
            continue
        for sub in group:
            if ignore_due or _is_due(sub, states, now):
                due[mark].append(sub)
            else:
                yield Selection(sub, reason="not due")
    return due


def _room(profile: Subscriber, own: int) -> Subscriber:
    """The profile with room for its ``own`` papers among the candidates beyond max_items: the ranker
    scores them (no candidate's score depends on another's), and they are taken out after."""
    return profile.model_copy(update={"max_items": profile.max_items + own}) if own else profile


def _waits(selection: Selection, waiting: set[str]) -> Selection:
    """'nothing new' says too little of a subscriber whose refused digest waits to be tried again."""
    if selection.reason == "nothing new" and address_key(selection.subscriber.email) in waiting:
        return replace(selection, reason=BACKING_OFF)
    return selection


def catch_up_floor(store: Store, now: datetime) -> int:
    """The last dump no window reaches: the one before the first ingested since CATCH_UP ago, by order
    of ingestion, so only dumps known to be old are cut (a dump ingested later under an old ``--now``
    cuts nothing before it); with none that recent, the latest. A dump stamped far ahead (a ``--now``
    years away) keeps every later one in reach until then: the cost of a longer window, not a loss."""
    first = store.first_dump_since(now - CATCH_UP)
    return first - 1 if first is not None else store.latest_dump_seq() or 0


def liked_or_marked(
    store: Store, subscribers: Iterable[Subscriber], feedback: dict[str, dict[str, list[str]]]
) -> list[StoredPaper]:
    """The stored papers the subscribers liked, disliked or marked, however old: the ranker reads a liked
    paper from its text only when it is prepared, and older ones fell out of what a run prepares."""
    profiles = [with_feedback(s, feedback) for s in subscribers]
    return store.papers_named({i for p in profiles for i in (*p.liked, *p.disliked)})


def own_papers(
    subscriber: Subscriber, feedback: dict[str, dict[str, list[str]]], named: Catalog
) -> dict[int, str]:
    """Stored paper id -> why it is no candidate of the subscriber's (OWN): each paper their profile lists
    as liked or disliked and each they marked, found in ``named`` (at least those papers) as the ranker
    finds a liked paper, and every paper that shares a title they named. Telling a reader of a paper they
    named themselves is no news."""
    listed = {"liked": subscriber.liked, "disliked": subscriber.disliked}
    # a title names every paper that bears it: the reader cannot have meant one of them more than another
    rows: list[tuple[str, int | None]] = [
        (where, row) for where, items in listed.items() for item in items for row in named.find_all(item)
    ]
    # a mark holds the very paper's key, never a title another paper may have taken since
    marked = feedback.get(address_key(subscriber.email), {})
    rows += [(kind, named.keys.get(key)) for kind, keys in marked.items() for key in keys]
    own: dict[int, str] = {}
    for where, row in rows:
        if row is not None:
            own.setdefault(named.papers[row].id, OWN[where])
    return own


def with_feedback(subscriber: Subscriber, feedback: dict[str, dict[str, list[str]]]) -> Subscriber:
    """The subscriber as the ranker reads them: papers marked "more" are liked, "less" disliked."""
    marked = feedback.get(address_key(subscriber.email))
    if not marked:
        return subscriber
    liked = (*subscriber.liked, *marked["more"])
    disliked = (*subscriber.disliked, *marked["less"])
    return subscriber.model_copy(update={"liked": liked, "disliked": disliked})


def _idle_reason(
    sub: Subscriber,
    state: SubscriberState | None,
    unsubscribed: set[str],
    latest: int | None,
    floor: int,
    now: datetime,
) -> str:
    """Why ``select`` would give ``sub`` no digest without ranking (as it words it), or ""."""
    if address_key(sub.email) in unsubscribed:
        return "unsubscribed"
    if state is not None and state.bounced_at is not None:
        return BOUNCED
    mark = state.watermark_seq if state else None
    if latest is None or latest <= (floor if mark is None else max(mark, floor)):  # as _window sees it
        return "nothing new"
    if state is None:
        return ""
    return "" if is_due(sub, state.last_digest_at, now, state.served_slot) else "not due"


def _warn_if_ahead(states: Iterable[SubscriberState], now: datetime) -> None:
    """One line when last digests were made well after this run's clock (see due.far_ahead)."""
    ahead = [
        s.last_digest_at for s in states if s.last_digest_at is not None and far_ahead(s.last_digest_at, now)
    ]
    if ahead:
        log.warning(
            "%s after this run's clock (the latest %s, now %s): the clock went back, or a run had a --now "
            "in the future; %s due now",
            _whose_last_digest(len(ahead)),
            f"{max(ahead):%Y-%m-%d %H:%M}",
            f"{now:%Y-%m-%d %H:%M}",
            "it is" if len(ahead) == 1 else "they are",
        )


def _whose_last_digest(count: int) -> str:
    if count == 1:
        return "1 subscriber's last digest was made"
    return f"{count} subscribers' last digests were made"


def _is_due(subscriber: Subscriber, states: dict[str, SubscriberState], now: datetime) -> bool:
    state = states.get(address_key(subscriber.email))
    return state is None or is_due(subscriber, state.last_digest_at, now, state.served_slot)


def _served_empty(
    subscriber: Subscriber, states: dict[str, SubscriberState], now: datetime
) -> datetime | None:
    """The send time a due subscriber with nothing to send has served (None: not due, each-dump, or no
    digest yet). Left due, the first paper to come later went out at once, at any hour (03:00 for an
    08:00 send_at), and the next send time sent again. The latest one, even after a last digest made
    far ahead: taking the coming one (as a digest sent then does), the papers of its morning waited a day."""
    state = states.get(address_key(subscriber.email))
    if state is None or state.last_digest_at is None or state.watermark_seq is None:
        return None
    if subscriber.cadence == "each-dump" or not _is_due(subscriber, states, now):
        return None
    return latest_slot(subscriber, now)  # not a coming one, as a first digest may take: none went out


def _slot_served_now(
    subscriber: Subscriber, states: dict[str, SubscriberState], now: datetime
) -> datetime | None:
    state = states.get(address_key(subscriber.email))
    return slot_served_now(subscriber, state.last_digest_at if state else None, now)
