"""A paper as a digest shows it: its card for the templates (ItemView) and its line in the run report."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from newsletter.feedback import FeedbackLinks
from newsletter.models import UNRANKED, Scored, StoredPaper
from newsletter.render.excerpts import point_excerpt
from newsletter.render.helpers import paper_links, paper_url
from newsletter.render.views import ItemView
from newsletter.report import ItemReport
from newsletter.sources.clean import clean_abstract


def item_reports(scored: Sequence[Scored]) -> tuple[ItemReport, ...]:
    return tuple(item_report(s) for s in scored)


def item_report(scored: Scored) -> ItemReport:
    paper = scored.paper
    _title, url, links = _display(paper)
    return ItemReport(
        paper.key,
        paper.title,
        round(scored.score, 4),
        scored.why,
        arxiv_id=paper.arxiv_id,
        url=url,
        authors=paper.authors,
        upvotes=paper.upvotes,
        comments=paper.comments,
        links={label.split(" ")[0]: link for label, link in links},
        details=paper.details.to_json(),
    )


def item_view(scored: Scored, feedback: FeedbackLinks | None = None) -> ItemView:
    paper = scored.paper
    title, url, links = _display(paper)
    return ItemView(
        title=title,
        url=url,
        excerpt=point_excerpt(paper, scored.why),
        why=scored.why,
        rank=paper.best_rank if paper.best_rank < UNRANKED else None,
        score=scored.score,
        authors=paper.authors,
        arxiv_id=paper.arxiv_id,
        times_seen=paper.times_seen,
        links=links,
        upvotes=paper.upvotes,
        comments=paper.comments,
        organization=paper.details.organization,
        thumbnail=paper.details.thumbnail,
        keywords=paper.details.ai_keywords,
        listed_at=paper.details.listed_at,
        more_url=feedback.more if feedback else "",
        less_url=feedback.less if feedback else "",
    )


@functools.lru_cache(maxsize=4096)
def _display(paper: StoredPaper) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """Cleaned title, its link and the paper's other pages: once per paper, not once per subscriber."""
    title = clean_abstract(paper.title)
    details = paper.details
    links = paper_links(
        paper.arxiv_id,
        hf_page=details.hf_page,
        code=details.github_repo,
        stars=details.github_stars,
        project=details.project_page,
    )
    return title, paper_url(paper.arxiv_id, title), links
