"""Saved Hugging Face papers pages (HTML): the data the page embeds, read like the API's items."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from newsletter.errors import ParseError
from newsletter.models import UNRANKED
from newsletter.sources import list_dump_files, parse_dump, read_dump
from newsletter.sources.hfjson import parse_hf_json

from .conftest import DATA
from .helpers import cli

REAL = DATA / "realdata"
PAPER_PAGE = REAL / "hf-paper-page_2509.24002.html"
LISTING = REAL / "hf-daily_2026-08-21.json"


def _listing_page(items: Any, *, target: str = "DailyPapers") -> bytes:
    """A listing page as huggingface.co/papers serves it: the items JSON in an escaped attribute."""
    props = html.escape(json.dumps({"dailyPapers": items, "periodType": "day"}), quote=True)
    widget = '<div class="SVELTE_HYDRATER contents" data-props="{}" data-target="ThemeSwitcher"></div>'
    return (
        "<!DOCTYPE html>\n<html><head><title>Daily Papers</title></head><body>\n"
        f'{widget}\n<main><div class="SVELTE_HYDRATER contents" data-target="{target}"\n'
        f'  data-props="{props}"><h3>placeholder markup</h3></div></main></body></html>\n'
    ).encode()


def _error(data: bytes, name: str = "page.html") -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_dump(data, name)
    assert "\n" not in str(info.value) and name in str(info.value)
    return info.value


def test_a_real_paper_page_gives_its_paper_with_every_field() -> None:
    dump = read_dump(PAPER_PAGE)
    assert dump.format == "hf-html"
    [paper] = dump.papers
    assert paper.title.startswith("MCPMark: A Benchmark for Stress-Testing")
    assert paper.arxiv_id == "2509.24002" and paper.rank == 1
    assert paper.authors[:2] == ("Zijian Wu", "Xiangyan Liu")
    assert (paper.upvotes, paper.comments) == (118, 2)
    assert paper.abstract.startswith("MCP standardizes how LLMs interact with external systems")
    assert paper.details.organization == "National University of Singapore"
    assert paper.details.github_repo == "https://github.com/eval-sys/mcpmark"
    assert paper.details.ai_summary and paper.details.ai_summary.startswith("MCPMark is a comprehensive")
    assert paper.details.hf_page == "https://huggingface.co/papers/2509.24002"


@pytest.mark.parametrize(("stated", "rank"), [(4, 4), (None, UNRANKED), ("1", UNRANKED)])
def test_a_paper_page_ranks_its_paper_as_the_page_states_not_first(stated: object, rank: int) -> None:
    """A page is no listing: without its day's rank the paper was '#1 trending'."""
    page = PAPER_PAGE.read_text()
    assert page.count('"dailyPaperRank":1,') == 1
    data = page.replace(
        '"dailyPaperRank":1,', "" if stated is None else f'"dailyPaperRank":{json.dumps(stated)},'
    )
    [paper] = parse_dump(data.encode(), "page.html").papers
    assert paper.rank == rank


def test_a_listing_page_gives_the_same_papers_as_the_api_answer_it_embeds() -> None:
    items = json.loads(LISTING.read_bytes())
    from_page = parse_dump(_listing_page(items), "papers.html")
    from_api = parse_hf_json(LISTING.read_bytes(), "daily.json")
    assert from_page.format == "hf-html" and len(from_page.papers) == len(from_api.papers) > 10
    assert from_page.papers == from_api.papers


def test_a_page_without_papers_data_is_refused_in_one_line() -> None:
    page = b"<!doctype html><html><body><p>Sign in to see the papers</p></body></html>"
    error = _error(page)
    assert "an HTML page with no Hugging Face papers data in it" in str(error)
    assert error.line == 1  # the file and its line, as every dump error names them


def test_a_page_that_is_not_utf8_is_refused_at_its_line() -> None:
    """Bytes that are not UTF-8 were read as U+FFFD: 'Zijián' was stored as 'Ziji\ufffdn'."""
    page = PAPER_PAGE.read_bytes()
    line = page[: page.index(b"Zijian Wu")].count(b"\n") + 1
    error = _error(page.replace(b"Zijian Wu", "Zijián Wü".encode("latin-1"), 1))
    assert error.line == line and "invalid UTF-8 (byte 0xe1)" in str(error)


def test_broken_embedded_json_names_the_widget_and_the_line() -> None:
    page = _listing_page([]).replace(b"dailyPapers&quot;", b"dailyPapers&quot;&quot;", 1)
    error = _error(page)
    assert error.line == 4 and "the page's DailyPapers data is not valid JSON" in str(error)


def test_a_bad_item_is_named_as_the_api_parser_names_it() -> None:
    items = json.loads(LISTING.read_bytes())
    del items[1]["paper"]["id"]
    assert "item 2: paper.id: missing" in str(_error(_listing_page(items)))


def test_a_saved_page_in_the_dumps_folder_is_ingested(env: dict[str, str], tmp_path: Path) -> None:
    dumps = Path(env["NEWSLETTER_DUMPS"])
    shutil.copy(PAPER_PAGE, dumps / "2025-10-01.html")
    assert [p.name for p in list_dump_files(dumps)] == ["2025-10-01.html"]
    report = json.loads(cli(env, "run", "--json", "--now", "2025-10-01T09:00:00Z").stdout)
    [dump] = report["dumps"]
    assert dump["papers"] == 1 and not dump["error"] and not dump["warning"]
