"""The digest card from real HF listings: links, authors, counts, size, the plain-text part, --json."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.config import PACKAGE_TEMPLATES
from newsletter.models import Scored, StoredPaper
from newsletter.render import DigestView, Renderer
from newsletter.render.cards import item_view
from newsletter.sources import parse_dump, read_dump
from newsletter.store import Store

from .conftest import DATA
from .helpers import cli
from .test_store_helpers import at, db_url

REAL = DATA / "realdata"
LISTING = REAL / "hf-daily_2026-08-21.json"
GMAIL_CLIP_BYTES = 102 * 1024


def _papers(tmp_path: Path) -> list[StoredPaper]:
    with Store(db_url(tmp_path)) as store:
        store.ingest(read_dump(LISTING), at(0))
        papers = store.papers_first_seen_in(1)
    return sorted(papers, key=lambda p: -(p.upvotes or 0))


def _view(papers: list[StoredPaper]) -> DigestView:
    items = tuple(item_view(Scored(p, 0.9, "matches: agents", relevant=True)) for p in papers)
    date = datetime(2026, 8, 21, 7, tzinfo=UTC)
    return DigestView("Ada", "ada@example.org", items, date, "https://example.org/u?t=1", "Note.", "Papers")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PACKAGE_TEMPLATES)


def test_a_ten_paper_digest_of_real_papers_is_well_under_gmails_clip(
    tmp_path: Path, renderer: Renderer
) -> None:
    rendered = renderer.render(_view(_papers(tmp_path)[:10]))
    size = len(rendered.html.encode())
    assert size < GMAIL_CLIP_BYTES // 2, size  # measured 31,848 bytes
    assert rendered.html.count('class="nl-card"') == 10  # every paper in full, none cut to the compact list


def test_the_card_links_the_papers_pages_and_shows_its_counts(tmp_path: Path, renderer: Renderer) -> None:
    top = _papers(tmp_path)[0]
    html = renderer.render(_view([top])).html
    card = html[html.index('class="nl-card"') :]
    assert top.arxiv_id == "2608.19880"
    hrefs = re.findall(r'href="([^"]+)"', card)
    assert hrefs[:6] == [
        "https://arxiv.org/abs/2608.19880",  # the title
        "https://arxiv.org/abs/2608.19880",
        "https://arxiv.org/pdf/2608.19880",
        "https://huggingface.co/papers/2608.19880",
        "https://github.com/google-research/envharness",
        "https://envharness.com/",
    ]
    assert ">Code ★8</a>" in card
    assert "▲</span>&nbsp;163&nbsp;upvotes" in card and "1&nbsp;comment<" in card
    assert "Chengsong Huang, Zifeng Wang, Rujun Han et al." in card and "Google" in card
    assert top.details.ai_summary is not None and top.details.ai_summary in card


def test_the_plain_text_part_carries_the_same_links(tmp_path: Path, renderer: Renderer) -> None:
    rendered = renderer.render(_view(_papers(tmp_path)[:10]))
    html_links = set(re.findall(r'href="(https://[^"]+)"', rendered.html.replace("&amp;", "&")))
    text_links = set(re.findall(r"https://\S+", rendered.text))
    assert len(html_links) > 30
    assert html_links == text_links


def _text_dump(title: str, abstract: str) -> bytes:
    return f"Daily Papers\nby AK and the research community\n\n{title}\n\n{abstract}\n".encode()


def test_a_text_dump_paper_gets_its_arxiv_links_once_another_source_knows_it(tmp_path: Path) -> None:
    hf = read_dump(LISTING)
    known = hf.papers[0]
    text = parse_dump(_text_dump(known.title, known.abstract), "page.txt")
    elsewhere = "We study a question no other listing has. Our method answers it on three benchmarks."
    unknown = parse_dump(_text_dump("A Paper Nobody Else Listed", elsewhere), "other.txt")
    with Store(db_url(tmp_path)) as store:
        store.ingest(text, at(0))
        store.ingest(unknown, at(1))
        (before,) = store.papers_first_seen_in(1)
        assert item_view(Scored(before, 1.0, "", True)).url.startswith("https://arxiv.org/search/")
        store.ingest(hf, at(2))  # the HF API lists it with its id: the same paper (same normalised title)
        (after,) = store.papers_first_seen_in(1)
        (other,) = store.papers_first_seen_in(2)
    view = item_view(Scored(after, 1.0, "", True))
    assert after.arxiv_id == "2608.19880" and after.times_seen == 2
    assert view.url == "https://arxiv.org/abs/2608.19880"
    assert [label for label, _ in view.links] == ["arXiv", "PDF", "HF", "Code ★8", "Project"]
    assert item_view(Scored(other, 1.0, "", True)).url.startswith(
        "https://arxiv.org/search/?searchtype=title"
    )
    assert item_view(Scored(other, 1.0, "", True)).links == ()


SUBSCRIBERS = """
subscribers:
  - email: agents@example.org
    interests: ["LLM agents", "reinforcement learning", "agent environments"]
"""


def test_json_run_reports_carry_the_papers_fields(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "agents.yaml").write_text(SUBSCRIBERS)
    env = {**env, "NEWSLETTER_SUBSCRIBERS": str(tmp_path / "agents.yaml")}
    (Path(env["NEWSLETTER_DUMPS"]) / LISTING.name).write_bytes(LISTING.read_bytes())
    report = json.loads(cli(env, "run", "--json", "--now", "2026-08-21T09:00:00Z").stdout)
    items = {i["arxiv_id"]: i for d in report["digests"] for i in d["items"]}
    env_harness = items["2608.19880"]
    assert env_harness["upvotes"] == 163 and env_harness["comments"] == 1
    assert env_harness["url"] == "https://arxiv.org/abs/2608.19880"
    assert env_harness["links"]["Code"] == "https://github.com/google-research/envharness"
    assert env_harness["authors"][:2] == ["Chengsong Huang", "Zifeng Wang"]
    details = env_harness["details"]
    assert details["github_stars"] == 8 and details["organization"] == "Google"
    assert details["ai_keywords"][0] == "LLM agents" and details["ai_summary"].startswith("EnvHarness and")
    assert details["listed_at"] == "2026-08-21T00:00:00+00:00"
