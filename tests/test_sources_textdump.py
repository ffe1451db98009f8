"""The Daily Papers text dump parser, read_dump and list_dump_files."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from newsletter.errors import ParseError, SourceError
from newsletter.models import Dump
from newsletter.sources import DUMP_GLOBS, list_dump_files, parse_dump, read_dump
from newsletter.sources.textdump import is_abstract, parse_text_dump

from .conftest import DATA, SEEDS

SEED_EXPECTATIONS = [
    ("000_95be163fa1be61d3.txt", 81, "Mar 11"),
    ("001_966c48ba57c0d174.txt", 100, "Mar 14"),
    ("002_50ec310dae548771.txt", 100, "Mar 14"),
    ("003_97eda64a6a081b6f.txt", 88, None),
    ("004_d759fe46f3f6a618.txt", 91, "Mar 11"),
]
HEADER = "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\nbyAK and the research community\n\n"
ABSTRACT = (
    "We study how graph networks scale with graph size and propose a sparse message-passing layer. "
    "Experiments on molecules and citation graphs show fast inference with quality that matches attention."
)
SHORT_ABSTRACT = (
    "We show that a tiny recurrent network learns parity in linear time with no attention at all."
)


def _seed(name: str = "000_95be163fa1be61d3.txt") -> bytes:
    return (SEEDS / name).read_bytes()


def _dump(*lines: str) -> bytes:
    """A text dump: the given lines separated by blank lines, after the usual header."""
    return (HEADER + "\n\n".join(lines) + "\n").encode()


def _parse_error(data: bytes, name: str = "bad-dump.txt") -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_text_dump(data, name)
    assert name in str(info.value)
    return info.value


# --- the seeds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count", "listed_on"), SEED_EXPECTATIONS)
def test_seed_parses_to_expected_papers(name: str, count: int, listed_on: str | None) -> None:
    data = _seed(name)
    dump = parse_text_dump(data, name)
    lines = data.decode().split("\n")
    assert len(dump.papers) == count
    assert [paper.rank for paper in dump.papers] == list(range(1, count + 1))
    assert dump.papers[0].title == lines[10]  # line 11 of every seed: the first after its header
    assert dump.papers[-1].title == lines[-3]  # the last title: the line before the last abstract
    assert dump.listed_on == listed_on
    assert dump.format == "hf-text"
    assert dump.source == name
    assert dump.content_hash == hashlib.sha256(data).hexdigest()


def test_seed_papers_have_full_abstracts_and_no_header_lines() -> None:
    dump = parse_text_dump(_seed("003_97eda64a6a081b6f.txt"), "003.txt")
    assert dump.papers[0].abstract.startswith("Transformer achieves promising results on various tasks.")
    assert dump.papers[0].abstract.endswith("holding the whole sequence on a single device.")
    assert len(dump.papers[0].abstract) == 1572
    titles = {paper.title for paper in dump.papers}
    assert not titles & {"new", "Subscribe", "Daily Papers", "by AK and the research community"}
    assert all(paper.arxiv_id is None and paper.authors == () for paper in dump.papers)


def test_all_seeds_parse_through_read_dump() -> None:
    dumps = [read_dump(path) for path in list_dump_files(SEEDS)]
    assert [len(dump.papers) for dump in dumps] == [81, 100, 100, 88, 91]
    assert {dump.format for dump in dumps} == {"hf-text"}


# --- tolerated variations ----------------------------------------------------------------------


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def _trailing_spaces(text: str) -> str:
    return "\n".join(line + "  \t" for line in text.split("\n"))


def _final_newline(text: str) -> str:
    return text + "\n"


def _extra_blank_lines(text: str) -> str:
    return "\n\n" + text.replace("\n\n", "\n\n\n \n") + "\n\n\n"


def _no_blank_lines(text: str) -> str:
    return text.replace("\n\n", "\n")


def _all_at_once(text: str) -> str:
    return _crlf(_trailing_spaces(_extra_blank_lines(text)))


@pytest.mark.parametrize(
    "variant",
    [_crlf, _trailing_spaces, _final_newline, _extra_blank_lines, _no_blank_lines, _all_at_once],
)
@pytest.mark.parametrize("bom", [False, True])
def test_formatting_variants_parse_identically(variant, bom: bool) -> None:
    original = _seed()
    text = original.decode("utf-8")
    assert not text.endswith("\n")  # the seed itself has no final newline
    data = variant(text).encode("utf-8")
    if bom:
        data = b"\xef\xbb\xbf" + data
    reference = parse_text_dump(original, "seed.txt")
    dump = parse_text_dump(data, "seed.txt")
    assert dump.papers == reference.papers
    assert dump.listed_on == "Mar 11"
    assert dump.content_hash == hashlib.sha256(data).hexdigest() != reference.content_hash


def test_old_mac_line_endings_parse() -> None:
    data = _seed().replace(b"\n", b"\r")
    assert len(parse_text_dump(data, "cr.txt").papers) == 81


def test_header_wording_may_change_slightly() -> None:
    header = (
        "New\n\nGet trending papers in your inbox!\n\nSubscribe\n\nDaily papers\n\nby AK & the community\n\n"
    )
    data = (header + "March 12, 2025\n\nA Title\n\n" + ABSTRACT).encode()
    dump = parse_text_dump(data, "reworded.txt")
    assert [paper.title for paper in dump.papers] == ["A Title"]
    assert dump.listed_on == "March 12, 2025"


def test_dump_without_header_or_date_still_parses() -> None:
    dump = parse_text_dump(f"First Title\n\n{ABSTRACT}\n\nSecond Title\n\n{ABSTRACT}".encode(), "bare.txt")
    assert [(p.rank, p.title) for p in dump.papers] == [(1, "First Title"), (2, "Second Title")]
    assert dump.listed_on is None


@pytest.mark.parametrize(
    "first",
    [
        "[CLS] Token Tells Everything Needed for Training-free Efficient MLLMs",  # read as JSON
        "<Think> Less: Efficient Reasoning",  # read as a page
        "Trending Papers in the Research Community",  # read as a header line
    ],
)
def test_a_first_title_that_looks_like_json_markup_or_a_header_is_a_title(first: str) -> None:
    data = f"{first}\n\n{ABSTRACT}\n\nSecond Title\n\n{ABSTRACT}".encode()
    dump = parse_dump(data, "bare.txt")
    assert [p.title for p in dump.papers] == [first, "Second Title"]


def test_entities_in_a_dump_are_decoded() -> None:
    """'Q&amp;A' was kept, shown as such, and the API's 'Q&A' was another paper."""
    dump = parse_text_dump(_dump("Q&amp;A Under Short Contexts", ABSTRACT + " Here L &lt; 4096."), "ent.txt")
    assert dump.papers[0].title == "Q&A Under Short Contexts"
    assert dump.papers[0].abstract.endswith("Here L < 4096.")


@pytest.mark.parametrize(
    "text", ["AI&ethics: A Study", "Macro&micro Views", "Search&copy Rules", "&notit; Is Text"]
)
def test_an_ampersand_that_starts_a_word_is_no_entity(text: str) -> None:
    """html.unescape read old entity names without their ';': 'AI&ethics' was stored as 'AIðics'."""
    url = "https://x.org/d?lang=en&region=eu&copy=1"
    dump = parse_text_dump(_dump(text, f"{ABSTRACT} Data: {url}."), "amp.txt")
    assert dump.papers[0].title == text
    assert dump.papers[0].abstract.endswith(f"Data: {url}.")


@pytest.mark.parametrize("end", ["(see Table 1.)", "at https://example.org/code", "works!"])
def test_a_short_abstract_may_end_with_a_bracket_a_link_or_an_exclamation(end: str) -> None:
    short = f"We show that a tiny recurrent network learns parity in linear time, as reported {end}"
    dump = parse_text_dump(_dump("Parity Is Easy", short, "Second Title", ABSTRACT), "short.txt")
    assert [p.abstract for p in dump.papers] == [short, ABSTRACT]


def test_short_abstract_that_reads_as_a_sentence_is_accepted() -> None:
    dump = parse_text_dump(_dump("Parity Is Easy", SHORT_ABSTRACT), "short.txt")
    assert dump.papers[0].abstract == SHORT_ABSTRACT


def test_inner_whitespace_in_titles_is_collapsed() -> None:
    dump = parse_text_dump(_dump("A   Title\twith  gaps", ABSTRACT), "gaps.txt")
    assert dump.papers[0].title == "A Title with gaps"


def test_duplicate_title_keeps_the_first_and_its_position(caplog: pytest.LogCaptureFixture) -> None:
    data = _dump("GraphSAGE", ABSTRACT, "ResNet", ABSTRACT, "GRAPHSAGE ", SHORT_ABSTRACT, "AlexNet", ABSTRACT)
    with caplog.at_level(logging.INFO, logger="newsletter.sources.common"):
        dump = parse_text_dump(data, "dupes.txt")
    assert [(p.rank, p.title) for p in dump.papers] == [(1, "GraphSAGE"), (2, "ResNet"), (4, "AlexNet")]
    assert dump.papers[0].abstract == ABSTRACT
    assert "duplicate paper at rank 3" in caplog.text


def test_small_fixture() -> None:
    dump = read_dump(DATA / "dumps" / "three_papers.txt")
    assert len(dump.papers) == 3
    assert dump.listed_on == "Mar 12"
    assert dump.papers[2].title == "An EMO Joint Pruning with Multiple Sub-networks: Fast and Effect"


def test_last_abstract_without_full_stop_is_kept_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    cut = f"{ABSTRACT} {ABSTRACT} And more work on long contexts in many settings"
    with caplog.at_level(logging.WARNING, logger="newsletter.sources.textdump"):
        dump = parse_text_dump(_dump("A Title", cut), "cut.txt")
    assert dump.papers[0].abstract == cut
    assert "may be truncated" in caplog.text


# --- rejected dumps ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   \n\n \r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n\n"])
def test_empty_file_is_rejected(data: bytes) -> None:
    error = _parse_error(data, "empty.txt")
    assert error.line == 1
    assert "empty" in error.problem
    assert str(error).endswith("(empty.txt:1)")


def test_binary_data_is_rejected_at_the_nul_byte() -> None:
    data = b"new\n\nSubscribe\n\nsome\x00binary\x00\x01\x02"
    error = _parse_error(data, "blob.txt")
    assert error.line == 5
    assert "binary" in error.problem


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + bytes(range(256)), b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"])
def test_known_binary_formats_are_rejected(data: bytes) -> None:
    error = _parse_error(data, "image.txt")
    assert error.line == 1
    assert "binary" in error.problem


def test_control_characters_count_as_binary() -> None:
    data = bytes([1, 2, 3, 4, 5, 6, 7, 8, 11, 14]) * 20 + b"text"
    assert "binary" in _parse_error(data).problem


def test_invalid_utf8_names_the_line() -> None:
    data = _dump("A Title", ABSTRACT, "Caf\xe9 Title", ABSTRACT).replace("Caf\xe9".encode(), b"Caf\xe9")
    error = _parse_error(data, "latin1.txt")
    assert error.line == 13
    assert "UTF-8" in error.problem
    assert "latin1.txt:13" in str(error)


def test_html_page_is_rejected() -> None:
    data = (
        b'\n<!DOCTYPE html>\n<html lang="en">\n<head><title>Daily Papers</title></head>\n<body></body></html>'
    )
    error = _parse_error(data, "papers.html.txt")
    assert error.line == 2
    assert "HTML" in error.problem


def test_html_inside_a_dump_is_rejected_at_its_line() -> None:
    data = _dump("A Title", ABSTRACT, "<html>", "<body>broken</body>")
    error = _parse_error(data)
    assert error.line == 13
    assert "HTML" in error.problem


def test_title_without_abstract_names_the_title_line() -> None:
    data = _dump("First Title", ABSTRACT, "Orphan Title", "Third Title", ABSTRACT)
    error = _parse_error(data, "orphan.txt")
    assert error.line == 13
    assert "title without abstract" in error.problem
    assert "Orphan Title" in error.problem
    assert "orphan.txt:13" in str(error)


def test_first_title_without_abstract_hints_at_a_changed_header() -> None:
    data = ("new\n\nTrending this week\n\nSubscribe\n\nA Title\n\n" + ABSTRACT).encode()
    error = _parse_error(data, "layout.txt")
    assert error.line == 3
    assert error.hint is not None
    assert "header" in error.hint


def test_abstract_without_title_is_rejected() -> None:
    data = _dump("First Title", ABSTRACT, ABSTRACT)
    error = _parse_error(data)
    assert error.line == 13
    assert "abstract without a title" in error.problem


def test_dump_ending_with_a_title_is_truncated() -> None:
    data = _dump("First Title", ABSTRACT, "Second Title", ABSTRACT, "Dangling Title")
    error = _parse_error(data, "cut.txt")
    assert error.line == 17
    assert "truncated" in error.problem
    assert "Dangling Title" in error.problem


def test_dump_cut_early_in_the_last_abstract_is_truncated() -> None:
    data = (HEADER + "First Title\n\n" + ABSTRACT + "\n\nSecond Title\n\nWe study how seq").encode()
    error = _parse_error(data, "cut.txt")
    assert error.line == 15
    assert "truncated" in error.problem
    assert "Second Title" in error.problem


def test_truncated_seed_is_rejected() -> None:
    data = _seed()
    cut = data[: data.rindex(b"\n\n")]  # drops the last abstract: the file now ends with a title
    error = _parse_error(cut, "000.txt")
    assert error.line == cut.count(b"\n") + 1
    assert "SALMONN" in error.problem


@pytest.mark.parametrize("data", [HEADER.encode(), (HEADER + "Mar 11\n").encode()])
def test_header_without_papers_is_rejected(data: bytes) -> None:
    error = _parse_error(data, "nothing.txt")
    assert error.line == data.decode().rstrip("\n").count("\n") + 1
    assert "no papers" in error.problem


# --- title or abstract? ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("A Benchmark Study on Calibration", False),
        ("Which Shortcut Cues Will DNNs Choose? A Study from the Parameter-Space Perspective", False),
        ("It's Not a Modality Gap: Characterizing and Addressing the Contrastive Gap", False),
        (ABSTRACT, True),
        (SHORT_ABSTRACT, True),
        ("We study parity.", False),  # too short to tell from a title
        ("x" * 301, True),
    ],
)
def test_is_abstract(line: str, expected: bool) -> None:
    assert is_abstract(line) is expected


def test_no_seed_title_reads_as_an_abstract_and_no_abstract_as_a_title() -> None:
    papers = [paper for path in SEEDS.glob("*.txt") for paper in read_dump(path).papers]
    assert len(papers) == 460
    assert not any(is_abstract(paper.title) for paper in papers)
    assert all(is_abstract(paper.abstract) for paper in papers)


# --- read_dump, parse_dump, list_dump_files ----------------------------------------------------


def test_read_dump_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(SourceError) as info:
        read_dump(missing)
    assert not isinstance(info.value, ParseError)
    assert str(missing) in str(info.value)


def test_read_dump_on_a_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read dump"):
        read_dump(tmp_path)


def test_read_dump_parse_errors_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ParseError) as info:
        read_dump(path)
    assert f"{path}:1" in str(info.value)


def test_parse_dump_detects_text() -> None:
    dump = parse_dump(_seed(), "seed")
    assert isinstance(dump, Dump)
    assert dump.format == "hf-text"


def test_list_dump_files_sorted_and_filtered(tmp_path: Path) -> None:
    names = [
        "b.txt",
        "a.json",
        "c.txt",
        ".hidden.txt",
        "d.txt.tmp",
        "e.json.part",
        "f.part.txt",
        "g.md",
        "h.txt~",
        "I.TXT",
        "j.Json",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub.txt").mkdir()
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "z.txt").write_text("x")
    assert [path.name for path in list_dump_files(tmp_path)] == [
        "I.TXT",
        "a.json",
        "b.txt",
        "c.txt",
        "j.Json",
    ]
    assert DUMP_GLOBS == ("*.txt", "*.json", "*.xml", "*.rss", "*.atom", "*.html", "*.htm")


def test_list_dump_files_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        list_dump_files(tmp_path / "missing")


def test_list_dump_files_on_seeds() -> None:
    assert [path.name for path in list_dump_files(SEEDS)] == [row[0] for row in SEED_EXPECTATIONS]


def test_a_title_two_papers_share_in_one_dump_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """Without ids the second paper cannot be told apart, and was dropped with an info line only."""
    other = "Another abstract entirely, about a second system with its own method and its own results. " * 3
    with caplog.at_level("INFO"):
        dump = parse_text_dump(
            _dump("Technical Report", ABSTRACT, "Technical Report", other.strip()), "two.txt"
        )
        again = parse_text_dump(_dump("Technical Report", ABSTRACT, "Technical Report", ABSTRACT), "same.txt")
    assert len(dump.papers) == len(again.papers) == 1
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["two.txt: paper at rank 2 left out: rank 1 has its title"]
