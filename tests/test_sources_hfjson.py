"""The Hugging Face /api/daily_papers JSON parser."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from newsletter.errors import ParseError
from newsletter.sources import parse_dump, read_dump
from newsletter.sources.hfjson import parse_hf_json

from .conftest import DATA

FIXTURE = DATA / "dumps" / "hf_daily_papers.json"


def _items() -> list[dict[str, Any]]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _encode(items: Any) -> bytes:
    return json.dumps(items, indent=2).encode()


def _parse_error(data: bytes, name: str = "daily.json") -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_hf_json(data, name)
    assert name in str(info.value)
    return info.value


def test_fixture_parses_with_ids_authors_and_counts() -> None:
    data = FIXTURE.read_bytes()
    dump = parse_hf_json(data, "daily.json")
    assert dump.format == "hf-json"
    assert dump.content_hash == hashlib.sha256(data).hexdigest()
    assert dump.listed_on is None
    assert [paper.rank for paper in dump.papers] == [1, 2, 3]
    assert [paper.arxiv_id for paper in dump.papers] == ["2312.00752", "2111.00396", "2105.13120"]
    first, second, third = dump.papers
    assert [paper.title for paper in dump.papers] == [item["paper"]["title"] for item in _items()]
    assert first.authors == ("Albert Gu", "Tri Dao")
    assert (first.upvotes, first.comments) == (143, 7)
    assert first.abstract.startswith("Foundation models, now powering most of the exciting applications")
    assert first.key == "2312.00752"
    assert second.authors == ("Albert Gu", "Karan Goel")  # "Christopher Ré" is marked hidden
    assert not second.abstract.endswith("\n")
    assert (second.upvotes, second.comments) == (12, 0)
    assert len(third.authors) == 5
    assert third.comments == 1


def test_read_dump_detects_json() -> None:
    dump = read_dump(FIXTURE)
    assert dump.format == "hf-json"
    assert dump.source == str(FIXTURE)
    assert len(dump.papers) == 3


def test_empty_list_is_an_empty_dump() -> None:
    dump = parse_dump(b"  [ ]\n", "empty-day.json")
    assert dump.format == "hf-json"
    assert dump.papers == ()


def test_bom_and_crlf_are_fine() -> None:
    data = b"\xef\xbb\xbf" + FIXTURE.read_bytes().replace(b"\n", b"\r\n")
    assert [p.title for p in parse_hf_json(data, "x").papers] == [
        p.title for p in parse_hf_json(FIXTURE.read_bytes(), "x").papers
    ]


def test_optional_fields_may_be_missing() -> None:
    items = [{"paper": {"id": "2401.00001", "title": "Minimal", "summary": "Short abstract."}}]
    paper = parse_hf_json(_encode(items), "min.json").papers[0]
    assert (paper.authors, paper.upvotes, paper.comments) == ((), None, None)


def test_outer_title_summary_and_date_stand_in() -> None:
    items = [
        {
            "paper": {"id": "2401.00001"},
            "title": "Outer  Title",
            "summary": "Outer summary.",
            "publishedAt": "2024-01-02T03:04:05",
        }
    ]
    paper = parse_hf_json(_encode(items), "outer.json").papers[0]
    assert (paper.title, paper.abstract) == ("Outer Title", "Outer summary.")
    assert paper.details.listed_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_non_arxiv_id_falls_back_to_the_title_key(caplog: pytest.LogCaptureFixture) -> None:
    items = [{"paper": {"id": "not-an-id", "title": "Some Title", "summary": "An abstract."}}]
    paper = parse_hf_json(_encode(items), "odd.json").papers[0]
    assert paper.arxiv_id is None
    assert paper.key == "some title"
    assert "not an arXiv id" in caplog.text


@pytest.mark.parametrize("spelled", ["２４０１.００００１", "٢٤٠١.٠٠٠٠١", "2401.０0001"])
def test_an_id_in_other_digits_than_ascii_is_not_an_arxiv_id(spelled: str) -> None:
    """Full-width or Arabic-Indic digits passed as an arXiv id: broken links, and never the same paper."""
    items = [{"paper": {"id": spelled, "title": "Some Title", "summary": "An abstract."}}]
    paper = parse_hf_json(_encode(items), "digits.json").papers[0]
    assert (paper.arxiv_id, paper.key) == (None, "some title")


def test_duplicate_ids_keep_the_first() -> None:
    items = _items()
    items.append(copy.deepcopy(items[0]))
    items[-1]["paper"]["id"] = "2312.00752v2"
    dump = parse_hf_json(_encode(items), "dupes.json")
    assert [paper.rank for paper in dump.papers] == [1, 2, 3]


def test_two_papers_under_one_arxiv_id_are_warned_about_by_the_id(caplog: pytest.LogCaptureFixture) -> None:
    """The warning said 'rank 1 has its title' of two papers whose titles differ."""
    items = _items()
    items.append(copy.deepcopy(items[0]))
    items[-1]["paper"].update(
        id="2312.00752", title="Another Paper", summary="About something else entirely."
    )
    parse_hf_json(_encode(items), "dupes.json")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["dupes.json: paper at rank 4 left out: rank 1 has its arXiv id 2312.00752"]


def test_malformed_json_names_the_line() -> None:
    data = b'[\n  {"paper": {"id": "2401.00001",\n    "title": "T" "summary": "x"}}\n]'
    error = _parse_error(data, "broken.json")
    assert error.line == 3
    assert "malformed JSON" in error.problem
    assert "broken.json:3" in str(error)


def test_truncated_json_is_malformed() -> None:
    data = FIXTURE.read_bytes()[:2000]
    error = _parse_error(data)
    assert "malformed JSON" in error.problem
    assert error.line == data.count(b"\n") + 1


@pytest.mark.parametrize(
    "data",
    [b"[" * 100_000 + b"]" * 100_000, b'[{"paper": {"upvotes": ' + b"9" * 5000 + b"}}]"],
    ids=["nested too deep", "integer of 5000 digits"],
)
def test_json_that_python_refuses_to_decode_is_malformed(data: bytes) -> None:
    assert "malformed JSON" in _parse_error(data).problem


def test_invalid_utf8_names_the_line() -> None:
    data = b'[\n{"paper": {"id": "2401.00001", "title": "Caf\xe9"}}\n]'
    error = _parse_error(data)
    assert error.line == 2
    assert "UTF-8" in error.problem


@pytest.mark.parametrize("data", [b"", b" \n ", b"\xef\xbb\xbf\n"])
def test_empty_file_is_rejected(data: bytes) -> None:
    assert "empty" in _parse_error(data).problem


def test_object_instead_of_list_is_rejected_with_a_hint() -> None:
    error = _parse_error(b'{"papers": "Rate limit exceeded"}')
    assert "expected a JSON list" in error.problem
    assert "got an object" in error.problem
    assert error.hint is not None
    assert "/api/daily_papers" in error.hint


def test_parse_dump_sends_json_objects_to_the_json_parser() -> None:
    with pytest.raises(ParseError, match="expected a JSON list"):
        parse_dump(b'\n  {"papers": []}', "obj.json")


def _with(path: str, value: Any, index: int = 1) -> bytes:
    """The fixture with one field of item ``index`` (0-based) set, or deleted when value is ...."""
    items = _items()
    target = items[index]
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return _encode(items)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("paper", ..., "item 2: paper: missing"),
        ("paper", "2111.00396", "item 2: paper: expected an object, got a string"),
        ("paper.id", ..., "item 2: paper.id: missing"),
        ("paper.id", 2111.00396, "item 2: paper.id: expected a string, got a number"),
        ("paper.title", "", "item 2: paper.title: missing or empty"),
        ("paper.title", "  ", "item 2: paper.title: missing or empty"),
        ("paper.title", "\0\0", "item 2: paper.title: missing or empty"),  # was stored as ''
        ("paper.summary", ..., "item 2: paper.summary: missing or empty"),
        ("paper.summary", ["x"], "item 2: paper.summary: expected a string, got a list"),
        ("paper.upvotes", "12", "item 2: paper.upvotes: expected an integer, got a string"),
        ("paper.upvotes", True, "item 2: paper.upvotes: expected an integer, got a boolean"),
        ("paper.authors", "Albert Gu", "item 2: paper.authors: expected a list, got a string"),
        ("paper.authors", ["Albert Gu"], "item 2: paper.authors[0]: expected an object, got a string"),
        ("paper.authors", [{"name": 7}], "item 2: paper.authors[0].name: expected a string, got an integer"),
        ("numComments", "none", "item 2: numComments: expected an integer, got a string"),
        ("paper.upvotes", 10**30, "item 2: paper.upvotes: 1000000000000000000000000000000 is out of range"),
        ("paper.title", "bad \ud800 title", "item 2: paper.title: not valid Unicode"),
    ],
)
def test_wrong_shape_names_item_and_field(path: str, value: Any, expected: str) -> None:
    error = _parse_error(_with(path, value), "shape.json")
    assert error.problem.startswith(expected)
    assert error.line is None
    assert str(error).endswith("(shape.json)")


def test_title_missing_inside_and_outside() -> None:
    items = _items()
    del items[2]["paper"]["title"], items[2]["title"]
    assert _parse_error(_encode(items)).problem == "item 3: paper.title: missing or empty"


def test_item_that_is_not_an_object() -> None:
    error = _parse_error(b'[{"paper": {"id": "2401.00001", "title": "T", "summary": "S."}}, 42]')
    assert error.problem == "item 2: expected an object, got an integer"


def test_null_optional_fields_count_as_missing() -> None:
    dump = parse_hf_json(_with("paper.upvotes", None, index=0), "null.json")
    assert dump.papers[0].upvotes is None


REAL = DATA / "realdata"


def test_a_real_listing_keeps_every_field_a_reader_can_use() -> None:
    dump = read_dump(REAL / "hf-daily_2026-08-21.json")
    first = dump.papers[0]
    assert (first.arxiv_id, first.upvotes, first.comments) == ("2608.19880", 163, 1)
    assert first.details.ai_summary is not None
    assert first.details.ai_summary.startswith("EnvHarness and EnvRigger dynamically reshape")
    assert first.details.ai_keywords[:3] == ("LLM agents", "Environment Harness", "EnvHarness")
    assert first.details.github_repo == "https://github.com/google-research/envharness"
    assert first.details.github_stars == 8
    assert first.details.project_page == "https://envharness.com/"
    assert first.details.organization == "Google"
    assert (
        first.details.thumbnail
        == "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2608.19880.png"
    )
    assert first.details.listed_at == datetime(2026, 8, 21, tzinfo=UTC)
    assert first.authors[:2] == ("Chengsong Huang", "Zifeng Wang") and len(first.authors) == 17


def test_authors_marked_hidden_are_left_out() -> None:
    raw = json.loads((REAL / "hf-daily_2024-11-18.json").read_bytes())
    hidden = [
        (item["paper"]["id"], author["name"])
        for item in raw
        for author in item["paper"]["authors"]
        if author.get("hidden")
    ]
    assert len(hidden) == 1
    arxiv_id, name = hidden[0]
    paper = next(p for p in read_dump(REAL / "hf-daily_2024-11-18.json").papers if p.arxiv_id == arxiv_id)
    assert name not in paper.authors
    assert paper.authors  # the others stay


def test_a_detail_of_the_wrong_shape_is_left_out_not_an_error() -> None:
    dump = parse_hf_json(_with("paper.githubStars", "many", index=0), "odd.json")
    assert dump.papers[0].details.github_stars is None
    dump = parse_hf_json(_with("paper.projectPage", "javascript:alert(1)", index=0), "odd.json")
    assert dump.papers[0].details.project_page is None


def test_the_apis_error_body_is_refused_with_its_own_message() -> None:
    with pytest.raises(ParseError) as info:
        read_dump(REAL / "hf-api-error-body_papers.json")
    assert info.value.problem == (
        'the API answered with an error, not papers: "Sorry, we can\'t find the page you are looking for."'
    )


def test_a_data_wrapper_around_objects_is_unwrapped() -> None:
    items = _items()
    wrapped = json.dumps({"status": "success", "date": "2024-03-18", "count": len(items), "data": items})
    dump = parse_hf_json(wrapped.encode(), "wrapped.json")
    assert [p.arxiv_id for p in dump.papers] == [
        p.arxiv_id for p in parse_hf_json(_encode(items), "x").papers
    ]


@pytest.mark.parametrize(
    "name", ["hf-daily_2024-12-11.json", "hf-daily_2025-01-09.json", "hf-daily_2025-01-10.json"]
)
def test_the_archivers_damaged_files_are_refused_with_one_clear_line(name: str) -> None:
    with pytest.raises(ParseError) as info:
        read_dump(REAL / name)
    assert info.value.problem == (
        "item 1: expected an object, got a string "
        "(a Python repr of an item, not JSON: the file was re-saved by another program)"
    )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("2312.00752v2", "2312.00752"),
        ("2312.00752V2", "2312.00752"),  # was kept whole: the same paper new again, sent twice
        ("HEP-TH/9901001", "hep-th/9901001"),
        ("math.na/0501001v1", "math/0501001"),  # arXiv's feeds give an old id without its subject class
        ("math.AG/0601001", "math/0601001"),
    ],
)
def test_an_id_is_one_paper_however_its_version_and_archive_are_spelled(listed: str, expected: str) -> None:
    item = {"paper": {"id": listed, "title": "A Title", "summary": "An abstract."}}
    assert parse_hf_json(_encode([item]), "d.json").papers[0].arxiv_id == expected


def test_a_json_file_holding_a_number_is_refused_as_json() -> None:
    """It was read as a text dump: 'truncated dump: ends with title '42''."""
    with pytest.raises(ParseError, match="expected a JSON list of papers, got an integer"):
        parse_dump(b"42\n", "daily.json")


def test_a_bad_published_date_does_not_reject_the_day() -> None:
    """publishedAt is not used: a value that is no date loses nothing (it rejected the whole dump)."""
    items = _items()
    items[1]["paper"]["publishedAt"] = "yesterday"
    items[2]["publishedAt"] = 17
    assert len(parse_hf_json(_encode(items), "dates.json").papers) == 3
