"""MJML compiled once per run, then Jinja per subscriber."""

from newsletter.render.helpers import authors_short, excerpt, paper_links, paper_url, safe_url, subject_for
from newsletter.render.renderer import HTML_TEMPLATE, TEXT_TEMPLATE, Renderer, sample_views
from newsletter.render.views import DigestView, ItemView

__all__ = [
    "HTML_TEMPLATE",
    "TEXT_TEMPLATE",
    "DigestView",
    "ItemView",
    "Renderer",
    "authors_short",
    "excerpt",
    "paper_links",
    "paper_url",
    "safe_url",
    "sample_views",
    "subject_for",
]
