"""arXiv RSS and Atom feeds: parsed with feedparser, new vs replaced papers, one paper across sources."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.errors import ParseError
from newsletter.models import UNRANKED
from newsletter.sources import list_dump_files, parse_dump, read_dump
from newsletter.store import Store

from .conftest import DATA
from .test_store_helpers import at, db_url

REAL = DATA / "realdata"
RSS = REAL / "arxiv-rss_2026-09-24.xml"


def test_an_rss_feed_ingests_the_new_and_cross_listed_papers_with_ids_authors_and_abstracts() -> None:
    dump = read_dump(RSS)
    assert dump.format == "arxiv" and dump.listed_on == "2026-09-24"
    assert [p.arxiv_id for p in dump.papers] == ["2609.26811", "2609.26820", "2205.06398"]  # new, new, cross
    drift, signal, outlier = dump.papers
    assert drift.title == "The Drift Contract: Spectral Updates for Depth-Robust Local Learning"
    assert drift.abstract.startswith("Local learning trains each layer with its own auxiliary loss")
    assert signal.authors == ("Naser Mansour", "Sidahmed Benabderrahmane", "Ameer Rahwan")
    assert outlier.authors == ("Pritam Dey", "Zhengwu Zhang", "David B. Dunson")
    assert drift.details.listed_at == datetime(2026, 9, 24, 4, 0, tzinfo=UTC)
    assert [p.rank for p in dump.papers] == [1, 2, 3]


def _rss(*items: str) -> bytes:
    return (
        '<?xml version="1.0"?><rss xmlns:arxiv="http://arxiv.org/schemas/atom"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0">'
        f"<channel><title>cs.CL</title>{''.join(items)}</channel></rss>"
    ).encode()


def test_an_rss_abstract_keeps_its_ampersands_and_angle_brackets() -> None:
    item = (
        "<item><title>Tables &amp; Trees: x&lt;y</title><link>https://arxiv.org/abs/2609.00001</link>"
        "<description>arXiv:2609.00001v1 Announce Type: new\nAbstract: Existing Q&amp;A benchmarks ignore"
        " tables. Models emit a &lt;think&gt; block, and if x&lt;y then y&gt;x holds.</description>"
        "<arxiv:announce_type>new</arxiv:announce_type></item>"
    )
    (paper,) = parse_dump(_rss(item), "feed.xml").papers
    assert paper.title == "Tables & Trees: x<y"
    assert paper.abstract == (
        "Existing Q&A benchmarks ignore tables. Models emit a <think> block, and if x<y then y>x holds."
    )


def test_a_replaced_paper_is_not_new_again() -> None:
    raw = RSS.read_bytes()
    assert b"<arxiv:announce_type>replace</arxiv:announce_type>" in raw and b"2009.13987" in raw
    assert "2009.13987" not in {p.arxiv_id for p in read_dump(RSS).papers}


@pytest.mark.parametrize("prefix", [b"ax", b"AX"])
def test_the_arxiv_namespace_under_another_prefix_still_leaves_replaced_papers_out(prefix: bytes) -> None:
    """feedparser names an unknown namespace by the document's prefix: the replaced paper counted as new."""
    raw = RSS.read_bytes().replace(b"xmlns:arxiv=", b"xmlns:" + prefix + b"=")
    raw = raw.replace(b"<arxiv:", b"<" + prefix + b":").replace(b"</arxiv:", b"</" + prefix + b":")
    assert b":announce_type>replace</" in raw and b"<arxiv:" not in raw
    dump = parse_dump(raw, "renamed.xml")
    assert [p.arxiv_id for p in dump.papers] == ["2609.26811", "2609.26820", "2205.06398"]
    assert dump.papers[1].authors == ("Naser Mansour", "Sidahmed Benabderrahmane", "Ameer Rahwan")


def test_an_atom_response_ingests_with_ids_authors_and_abstracts() -> None:
    (paper,) = read_dump(REAL / "arxiv-atom_2016_checkerboard.xml").papers
    assert paper.arxiv_id == "cond-mat/0603029"  # an old-style id, version stripped
    assert paper.title == (
        "From stripe to checkerboard order on the square lattice in the presence of quenched disorder"
    )
    assert paper.authors == ("Adrian Del Maestro", "Bernd Rosenow", "Subir Sachdev")
    assert paper.abstract.startswith("We discuss the effects of quenched disorder on a model of charge")
    many = read_dump(REAL / "arxiv-atom_2026_q_testing.xml").papers
    assert len(many) == 10 and many[0].arxiv_id == "2202.12139"
    assert many[0].authors == ("Mohit Kumar Ahuja", "Arnaud Gotlieb", "Helge Spieker")


def test_a_truncated_feed_is_refused_with_its_line() -> None:
    cut = RSS.read_bytes()[:3000]
    with pytest.raises(ParseError, match="malformed feed") as info:
        parse_dump(cut, "cut.xml")
    assert info.value.line is not None and "\n" not in str(info.value)


def test_an_arxiv_api_error_is_refused_with_its_message() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom"><entry>'
        b"<id>http://arxiv.org/api/errors#incorrect_id_format_for_1234.1234v2</id><title>Error</title>"
        b"<summary>incorrect id format for 1234.1234v2</summary></entry></feed>"
    )
    with pytest.raises(ParseError, match="arXiv API answered with an error: 'incorrect id format"):
        parse_dump(body, "api.xml")


def test_the_dumps_folder_reads_xml_feeds(tmp_path: Path) -> None:
    (tmp_path / "arxiv.xml").write_bytes(RSS.read_bytes())
    assert list_dump_files(tmp_path) == [tmp_path / "arxiv.xml"]


def test_the_same_paper_from_hf_and_arxiv_is_one_paper(tmp_path: Path) -> None:
    hf = read_dump(REAL / "hf-daily_2026-08-21.json")
    listed = hf.papers[0].arxiv_id
    assert listed == "2608.19880"
    feed = RSS.read_bytes().replace(b"2609.26811v1", b"2608.19880v2").replace(b"2609.26811", b"2608.19880")
    with Store(db_url(tmp_path)) as store:
        first = store.ingest(hf, at(0))
        second = store.ingest(parse_dump(feed, "arxiv.xml"), at(1))
        assert (first.new, second.papers, second.new) == (len(hf.papers), 3, 2)
        paper = store.paper_by_key("2608.19880")
    assert paper is not None and paper.times_seen == 2
    assert paper.details.github_repo == "https://github.com/google-research/envharness"  # kept from HF


def test_an_arxiv_feed_gives_no_paper_a_trending_rank_nor_takes_hfs_away(tmp_path: Path) -> None:
    """A feed lists by announcement: its first paper is no "#1 trending", in either order of arrival."""
    hf = read_dump(REAL / "hf-daily_2026-08-21.json")
    listed, hf_rank = hf.papers[-1].arxiv_id, hf.papers[-1].rank
    assert listed is not None and hf_rank > 1
    feed = RSS.read_bytes().replace(b"2609.26811", listed.encode())  # the feed's first paper
    with Store(db_url(tmp_path)) as store:
        store.ingest(parse_dump(feed, "arxiv.xml"), at(0))
        only_arxiv = store.paper_by_key("2609.26820")
        before_hf = store.paper_by_key(listed)
        store.ingest(hf, at(1))
        store.ingest(parse_dump(feed + b" ", "again.xml"), at(2))  # the feed once more: HF's rank stays
        after = store.paper_by_key(listed)
        ranks = [rank for _, rank in store.papers_in_dump(1)]
    assert only_arxiv is not None and only_arxiv.best_rank == UNRANKED
    assert before_hf is not None and before_hf.best_rank == UNRANKED
    assert after is not None and after.best_rank == hf_rank
    assert ranks == [1, 2, 3]  # the feed's own order is kept with the dump


def _atom(*entries: tuple[str, str, list[str]]) -> bytes:
    body = "".join(
        f"<entry><id>{entry_id}</id><title>{title}</title><summary>About {title}.</summary>"
        + "".join(f"<author><name>{name}</name></author>" for name in names)
        + "</entry>"
        for entry_id, title, names in entries
    )
    return f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">{body}</feed>'.encode()


def test_a_doi_is_not_read_as_an_arxiv_id_and_each_of_several_atom_authors_is_one_name() -> None:
    """'10.1145/3580305.3599256' held '0305.35992': two DOI entries became one paper with a wrong id."""
    feed = _atom(
        ("https://doi.org/10.1145/3580305.3599256", "Graph Paper One", ["Smith, John"]),
        ("https://doi.org/10.1145/3580305.3599257", "Graph Paper Two", ["Li and Wang Lab", "Ann Bo"]),
        ("http://arxiv.org/abs/hep-th/9901001v2", "Strings", ["A. Author", "B. Author"]),
    )
    one, two, strings = parse_dump(feed, "feed.xml").papers
    assert (one.title, one.arxiv_id, one.authors) == ("Graph Paper One", None, ("Smith, John",))
    assert (two.title, two.arxiv_id, two.authors) == ("Graph Paper Two", None, ("Li and Wang Lab", "Ann Bo"))
    assert (strings.arxiv_id, strings.authors) == ("hep-th/9901001", ("A. Author", "B. Author"))


def test_an_id_in_full_width_digits_is_no_arxiv_id() -> None:
    feed = _atom(("http://arxiv.org/abs/２４０１.００００１v1", "Wide Digits", ["A. Author"]))
    assert parse_dump(feed, "feed.xml").papers[0].arxiv_id is None


def test_the_atom_of_rss_arxiv_org_splits_its_one_creator_as_rss_does() -> None:
    entry = (
        "<entry><id>oai:arXiv.org:2609.00003v1</id><title>T</title><summary>About T.</summary>"
        "<dc:creator>Ada Lovelace, Charles Babbage, Jr., Grace Hopper</dc:creator>"
        "<arxiv:announce_type>new</arxiv:announce_type></entry>"
    )
    feed = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="http://arxiv.org/schemas/atom"'
        f' xmlns:dc="http://purl.org/dc/elements/1.1/">{entry}</feed>'
    )
    (paper,) = parse_dump(feed.encode(), "atom.xml").papers
    assert paper.authors == ("Ada Lovelace", "Charles Babbage, Jr.", "Grace Hopper")


def test_an_rss_name_suffix_stays_with_its_name() -> None:
    item = (
        "<item><title>T</title><link>https://arxiv.org/abs/2609.00002</link><description>About T."
        "</description><dc:creator>Charles Babbage, Jr., Mary Anderson and Li Wei</dc:creator></item>"
    )
    (paper,) = parse_dump(_rss(item), "feed.xml").papers
    assert paper.authors == ("Charles Babbage, Jr.", "Mary Anderson", "Li Wei")


def test_an_entry_is_named_by_its_place_in_the_feed_replaced_papers_counted() -> None:
    """With a replaced paper first, the fourth item was called 'entry 3'."""

    def item(number: int, kind: str = "new", title: str = "A Title") -> str:
        return (
            f"<item><title>{title}</title><link>https://arxiv.org/abs/2609.0000{number}</link>"
            f"<description>Abstract: About it.</description><arxiv:announce_type>{kind}</arxiv:announce_type></item>"
        )

    with pytest.raises(ParseError, match="entry 4: no title"):
        parse_dump(_rss(item(1, "replace"), item(2), item(3), item(4, title="")), "feed.xml")
