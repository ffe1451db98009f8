"""The preview UI's HTML pages: an autoescaping Jinja environment over newsletter/serve_templates/."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

from newsletter.models import StoredPaper, Subscriber
from newsletter.render import paper_url, safe_url
from newsletter.report import BACKING_OFF
from newsletter.selection.select import BOUNCED
from newsletter.sources.clean import clean_abstract

UI_TEMPLATES = Path(__file__).resolve().parent.parent / "serve_templates"

# No script runs on these pages; styles are inline in the page; the digest is framed from this origin.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def subscriber_path(email: str, suffix: str = "") -> str:
    """/s/<email>[/suffix] with the address percent-encoded (it is data from subscribers.yaml)."""
    return f"/s/{quote(email, safe='@')}{suffix}"


def paper_link(paper: StoredPaper) -> str:
    """The link the digest gives this paper (the pipeline cleans the title the same way)."""
    return safe_url(paper_url(paper.arxiv_id, clean_abstract(paper.title)))


def when(value: datetime | None, zone: str = "UTC") -> str:
    """E.g. "Wed 11 Mar 2026 08:00 CET"; "never" for None."""
    if value is None:
        return "never"
    return value.astimezone(ZoneInfo(zone)).strftime("%a %d %b %Y %H:%M %Z")


def relative(value: datetime, now: datetime) -> str:
    """E.g. "in 3 h 20 min", "2 days ago", "now"."""
    delta = value - now
    span = abs(delta)
    if span < timedelta(minutes=1):
        return "now"
    if span >= timedelta(days=2):
        text = f"{span.days} days"
    else:
        hours, minutes = divmod(int(span.total_seconds()) // 60, 60)
        text = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"in {text}" if delta > timedelta(0) else f"{text} ago"


def schedule(subscriber: Subscriber) -> str:
    """When the digests go, as the profile sets them: "weekly at 08:00 on mon", "daily at 00:00", "each-dump".
    A ``weekday`` counts for a weekly subscriber only, ``send_at`` not for each-dump (see due.py): the index
    left out a weekly reader's day, and a daily reader's ignored ``weekday`` was shown as their day."""
    if subscriber.cadence == "each-dump":
        return subscriber.cadence
    text = f"{subscriber.cadence} at {(subscriber.send_at or time(0, 0)).strftime('%H:%M')}"
    weekday = subscriber.weekday if subscriber.cadence == "weekly" else None
    return f"{text} on {weekday}" if weekday else text


def kilobytes(size: int) -> str:
    return f"{size / 1000:.1f} KB"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(UI_TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, kb=kilobytes, clean=clean_abstract, schedule=schedule)
    env.globals.update(
        subscriber_path=subscriber_path,
        paper_link=paper_link,
        relative=relative,
        held=BOUNCED,
        backing_off=BACKING_OFF,
    )
    return env


ENV = _environment()


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``serve_templates/<name>`` as an HTML response with the pages' security headers."""
    html = ENV.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
