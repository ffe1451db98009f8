"""`newsletter explain EMAIL PAPER`: a paper's score against the subscriber's bar, its best column, and
why it was or was not sent.

A paper in the subscriber's next digest's window is scored as the preview scores it (serve's
near-miss view), so its place among the relevant papers and max_items can be told; any other paper
is scored now against the same background a run uses. Both read the feedback given so far. A paper
the subscriber named (liked, disliked or marked) is scored too, but is never theirs to be sent. A paper
a digest held is shown with the score and reason stored with it too: what decided it then (an older
version's ranker, or other settings, may have scored it otherwise than today's).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsletter.errors import NewsletterError
from newsletter.models import Scored, StoredPaper, Subscriber, normalize_title
from newsletter.pipeline import Pipeline
from newsletter.rank.breakdown import Breakdown, breakdown
from newsletter.rank.scoring import Catalog
from newsletter.render.helpers import printable
from newsletter.report import plural
from newsletter.selection.select import (
    CATCH_UP,
    Selection,
    Selector,
    catch_up_floor,
    liked_or_marked,
    own_papers,
    with_feedback,
)
from newsletter.store import DeliveryRecord, Store
from newsletter.store.papers import MIN_TITLE_PART
from newsletter.store.records import DeliveryItem

TITLES_LISTED = 5  # papers named when a part of a title fits several


class UnknownPaper(NewsletterError):
    """No paper with that arXiv id or title in the store."""


@dataclass(frozen=True)
class Explanation:
    paper: StoredPaper
    scored: Scored  # as ranked now
    breakdown: Breakdown
    verdict: str  # why it was or was not sent
    as_sent: tuple[DeliveryRecord, DeliveryItem] | None = None  # the digest that held it, as stored

    def lines(self) -> list[str]:
        b = self.breakdown
        against = f" against a bar of {b.bar:.3f}" if b.bar is not None else ""
        score = f"{self.scored.score:.3f}{against}"
        if b.unsupported:  # listed just under the bar it cleared: say so, with the score it had
            score = f"{b.best:.3f}{against}, held under it"
        out = [
            self.paper.title,
            f"  score {score}: {self.scored.why}",
            f"  best column: {b.column}",
        ]
        if b.penalty:
            out.append(f"  less like a paper you marked: -{b.penalty:.3f}")
        out.append(f"  {self.verdict}")
        if self.as_sent is not None:
            out[-1:] = _then(self.as_sent, self.scored, out[-1])
        return [printable(line) for line in out]  # titles come from dumps


def _then(as_sent: tuple[DeliveryRecord, DeliveryItem], now: Scored, verdict: str) -> list[str]:
    """The verdict, and the score and reason stored with the digest that held the paper (what decided
    it then) when they differ from today's; the same twice read as if they had changed."""
    record, item = as_sent
    then = f"score {item.score:.3f}: {item.why}"
    if then == f"score {now.score:.3f}: {now.why}":
        return [f"{verdict}, scored then as today"]
    when = record.created_at.strftime("%Y-%m-%d %H:%M UTC")
    return [verdict, f"  as ranked for that digest ({when}): {then}; the score above is today's"]


def find(store: Store, item: str) -> StoredPaper:
    """The paper an arXiv id or title names, else the one paper whose title holds ``item``
    ("DumpsterCluster" for "DumpsterCluster: From ..."), or UnknownPaper."""
    paper = store.find_paper(item) or _titled_with(store, item)
    namesakes = store.papers_named([item])
    if len(namesakes) > 1:  # a title two papers share: marking "the first" would mark a stranger
        ids = ", ".join(p.arxiv_id or p.key for p in namesakes)
        raise UnknownPaper(f"{len(namesakes)} papers are titled {item!r}: {ids}", hint="give its arXiv id")
    return paper


def _titled_with(store: Store, item: str) -> StoredPaper:
    """The one paper whose title holds ``item``; several or none is UnknownPaper, naming them."""
    found = store.papers_titled_with(item, limit=TITLES_LISTED + 1)
    if len(found) == 1:
        return found[0]
    if not found and len(normalize_title(item)) < MIN_TITLE_PART:
        raise UnknownPaper(
            f"{item!r} is too short to match a part of a title ({MIN_TITLE_PART} characters at least)",
            hint="give more of its title, or its arXiv id",
        )
    if not found:
        raise UnknownPaper(
            f"no paper {item!r} in the store",
            hint="give its arXiv id or its title (or a part of it) as the listing shows it",
        )
    listed = "; ".join(printable(_titled(p)) for p in found[:TITLES_LISTED])
    more = ", and more" if len(found) > TITLES_LISTED else ""
    raise UnknownPaper(
        f"papers whose title holds {item!r}: {listed}{more}", hint="give more of its title, or its arXiv id"
    )


def _titled(paper: StoredPaper) -> str:
    return f"{paper.title} ({paper.arxiv_id})" if paper.arxiv_id else paper.title


def explain(pipeline: Pipeline, subscriber: Subscriber, item: str, now: datetime) -> Explanation:
    paper = find(pipeline.store, item)
    selection, _ = pipeline.preview(subscriber, now)
    scored = next((s for s in selection.scored if s.paper.id == paper.id), None)
    records = pipeline.store.deliveries(email=subscriber.email)
    held = _holding(records, paper)
    sent = _as_sent(*held) if held else ""
    if scored is None:
        scored = _rank_alone(pipeline, subscriber, paper)
    breakdown = _breakdown(pipeline, subscriber, paper)
    if scored in selection.scored:
        verdict = _in_window(selection, scored, breakdown)
    else:
        covering = _covering(pipeline.store, records, paper)
        cut = _past_the_limit(pipeline.store, subscriber, paper, covering, now)
        own = _own(pipeline.store, subscriber, paper)
        verdict = sent or own or _outside_window(selection, scored, breakdown, covering, cut)
    return Explanation(paper, scored, breakdown, verdict, held if sent and verdict == sent else None)


def _own(store: Store, subscriber: Subscriber, paper: StoredPaper) -> str:
    """Why the paper is no candidate for the subscriber, as select rules it (own_papers), or ""."""
    feedback = store.feedback_marks()
    named = Catalog(liked_or_marked(store, [subscriber], feedback))
    why = own_papers(subscriber, feedback, named).get(paper.id)
    return f"not sent: {why}" if why else ""


def _past_the_limit(
    store: Store, subscriber: Subscriber, paper: StoredPaper, covering: DeliveryRecord | None, now: datetime
) -> str:
    """How sure it is that CATCH_UP kept the paper from every digest: "" (not), "certain" (it came
    after the subscriber's watermark, so no run weighed it, and the limit cuts it now; a new
    subscriber's window is the latest listing's papers) or "likely" (the digest whose watermark passed it
    was made when the limit cut it; an evaluation that sent nothing, leaving no record, may have
    weighed it before)."""
    state = store.subscriber_state(subscriber.email)
    mark = state.watermark_seq if state else None
    if mark is None:  # a first digest: every paper of the day's dumps (Selector._window)
        unweighed = paper.id in {p.id for p in store.newest_listing()}
    else:
        unweighed = paper.first_dump_seq > mark
    if unweighed:
        return "certain" if paper.first_dump_seq <= catch_up_floor(store, now) else ""
    if covering is not None and paper.first_dump_seq <= catch_up_floor(store, covering.created_at):
        return "likely"
    return ""


def _rank_alone(pipeline: Pipeline, subscriber: Subscriber, paper: StoredPaper) -> Scored:
    """The paper scored now, against the background a run would prepare."""
    Selector(pipeline.store, pipeline.ranker).prepare_around([paper], subscriber)
    (scored,) = pipeline.ranker.rank([paper], with_feedback(subscriber, pipeline.store.feedback_marks()))
    return scored


def _breakdown(pipeline: Pipeline, subscriber: Subscriber, paper: StoredPaper) -> Breakdown:
    profiled = with_feedback(subscriber, pipeline.store.feedback_marks())
    return breakdown(pipeline.ranker, paper, profiled)


def _holding(records: list[DeliveryRecord], paper: StoredPaper) -> tuple[DeliveryRecord, DeliveryItem] | None:
    """The digest that held the paper, and its item there (score and reason as ranked then)."""
    for record in records:
        for item in record.items:
            if item.paper.id == paper.id:
                return record, item
    return None


def _as_sent(record: DeliveryRecord, item: DeliveryItem) -> str:
    when, position = record.created_at.strftime("%Y-%m-%d %H:%M UTC"), item.position
    if record.status == "sent":
        return f"sent: paper {position} of the digest of {when}"
    return f"in the digest of {when} (paper {position}), which is {record.status}"


def _in_window(selection: Selection, scored: Scored, breakdown: Breakdown) -> str:
    if scored in selection.chosen:
        return f"in the next digest: paper {selection.chosen.index(scored) + 1} of {len(selection.chosen)}"
    if scored.relevant:
        place = [s for s in selection.scored if s.relevant].index(scored) + 1
        return (
            f"left out of the next digest: relevant paper {place}, past max_items ({len(selection.chosen)})"
        )
    return f"left out of the next digest: {_why_not(breakdown)}"


def _covering(store: Store, records: list[DeliveryRecord], paper: StoredPaper) -> DeliveryRecord | None:
    """The digest whose window held the paper's dump: after the previous digest's watermark (a first
    digest: the latest listing that brought new papers, see Selector._window), up to its own. An
    evaluation that sent nothing moves a watermark too, without a record: the paper may have been weighed
    then, so the verdict says "most likely"."""
    before: int | None = None
    for record in records:  # oldest first
        upto = record.watermark_seq or 0
        if before is None:
            weighed = paper.first_dump_seq <= upto and paper.id in {p.id for p in store.newest_listing(upto)}
        else:
            weighed = before < paper.first_dump_seq <= upto
        if weighed:
            return record
        before = upto
    return None


def _outside_window(
    selection: Selection, scored: Scored, breakdown: Breakdown, covering: DeliveryRecord | None, cut: str
) -> str:
    if selection.reason == "unsubscribed":
        return "not sent: this address unsubscribed"
    if not scored.relevant:
        return f"not sent: {_why_not(breakdown)}"
    if cut:
        return (
            f"not sent: {'most likely ' if cut == 'likely' else ''}it was listed more than "
            f"{CATCH_UP.days} days before a digest could weigh it (a window reaches back "
            f"{CATCH_UP.days} days at most)"
        )
    if covering is not None and len(covering.items) >= selection.subscriber.max_items:
        when, full = covering.created_at.strftime("%Y-%m-%d %H:%M UTC"), plural(len(covering.items), "paper")
        return (
            f"not sent: weighed for the digest of {when}, which was full ({full}, max_items): most "
            "likely it was past them; a paper is weighed for one digest only"
        )
    return (
        "not sent: it came before this subscriber's window (a first digest holds only the papers of "
        "the dumps of the day up to the latest that brought new ones; `prune --sent` forgets older "
        "digests, and what they held) or scored below the bar then; it would count now"
    )


def _why_not(breakdown: Breakdown) -> str:
    if breakdown.excluded:
        return "it is about a topic you excluded"
    if breakdown.penalty and breakdown.bar is not None and breakdown.best >= breakdown.bar:
        return "it is too much like a paper you marked 'less like this'"
    if breakdown.unsupported:
        return "it clears the bar, but states none of your interests and shares few words with your profile"
    return "its score is below the bar"
