"""Ingesting dumps: the seed diff, re-ingest, paper identity, per-paper counters, atomicity."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from newsletter.errors import StoreError
from newsletter.models import Dump
from newsletter.store import Store
from newsletter.store import ingest as ingest_module
from newsletter.store.vectors import StoreVectorCache
from tests.test_store_helpers import at, make_dump, open_store, paper, read_seed, seed_files


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened


def _table_counts(store: Store) -> dict[str, int]:
    with store._engine.connect() as conn:
        return {
            name: conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar_one()
            for name in ("dumps", "papers", "dump_papers")
        }


def test_five_seeds_in_file_order_give_the_known_new_counts(store: Store) -> None:
    results = [store.ingest(read_seed(path), at(i)) for i, path in enumerate(seed_files())]

    assert [r.new for r in results] == [81, 85, 90, 67, 62]
    assert [r.papers for r in results] == [81, 100, 100, 88, 91]
    assert [r.dump_seq for r in results] == [1, 2, 3, 4, 5]
    assert not any(r.already for r in results)
    assert store.latest_dump_seq() == 5
    assert [d.new for d in store.dumps()] == [81, 85, 90, 67, 62]


def test_reingesting_the_same_content_is_a_no_op(store: Store) -> None:
    dumps = [read_seed(path) for path in seed_files()[:2]]
    first = [store.ingest(d, at(i)) for i, d in enumerate(dumps)]
    before = _table_counts(store)

    again = store.ingest(dumps[0], at(10))

    assert again.already
    assert (again.dump_seq, again.papers, again.new) == (first[0].dump_seq, 81, 0)
    assert store.dumps()[0].new == 81
    assert _table_counts(store) == before
    assert store.latest_dump_seq() == 2
    assert dumps[0].content_hash in store.dump_sizes()
    assert all(p.times_seen == 1 for p in store.papers_first_seen_in(2))


def test_has_dump_is_false_for_unknown_content(store: Store) -> None:
    assert "0" * 64 not in store.dump_sizes()
    assert store.latest_dump_seq() is None


def test_new_papers_are_those_no_earlier_dump_had(store: Store) -> None:
    store.ingest(make_dump(paper("Alpha", 1), paper("Beta", 2)), at(0))
    result = store.ingest(make_dump(paper("beta", 1), paper("Gamma", 2), paper("ALPHA!", 3)), at(1))

    assert (result.papers, result.new) == (3, 1)
    assert [p.title for p in store.papers_first_seen_in(2)] == ["Gamma"]
    assert [p.title for p in store.papers_first_seen_after(0)] == ["Alpha", "Beta", "Gamma"]
    assert store.papers_first_seen_after(2) == []


def test_first_seen_after_orders_by_dump_then_best_rank(store: Store) -> None:
    store.ingest(make_dump(paper("B", 2), paper("A", 5)), at(0))
    store.ingest(make_dump(paper("D", 1), paper("C", 3), paper("A", 1)), at(1))
    store.ingest(make_dump(paper("E", 4)), at(2))

    assert [p.title for p in store.papers_first_seen_after(0)] == ["A", "B", "D", "C", "E"]
    assert [p.title for p in store.papers_first_seen_after(1)] == ["D", "C", "E"]
    assert [(p.title, r) for p, r in store.papers_in_dump(2)] == [("A", 1), ("D", 1), ("C", 3)]


def test_counters_and_dates_follow_each_sighting(store: Store) -> None:
    store.ingest(make_dump(paper("Kestrel", 7, upvotes=3)), at(0))
    store.ingest(make_dump(paper("Other", 1), paper("Kestrel", 2, upvotes=None)), at(5))
    store.ingest(make_dump(paper("Kestrel", 9, upvotes=40)), at(9))

    kestrel = store.paper_by_key("kestrel")
    assert kestrel is not None
    assert (kestrel.times_seen, kestrel.best_rank, kestrel.upvotes) == (3, 2, 40)
    assert (kestrel.first_seen, kestrel.last_seen) == (at(0), at(9))
    assert kestrel.first_dump_seq == 1
    assert kestrel.first_seen.tzinfo is UTC


def test_paper_first_seen_without_id_gets_it_later_and_stays_one_paper(store: Store) -> None:
    store.ingest(make_dump(paper("Kestrel: Sparse Message Passing", 1)), at(0))
    result = store.ingest(make_dump(paper("KESTREL - sparse message passing", 4, "2312.00752v2")), at(1))

    assert result.new == 0
    (kestrel,) = store.papers_first_seen_after(0)
    assert (kestrel.arxiv_id, kestrel.key, kestrel.times_seen, kestrel.best_rank) == (
        "2312.00752",
        "2312.00752",
        2,
        1,
    )
    assert kestrel.title == "Kestrel: Sparse Message Passing"
    assert store.paper_by_key("2312.00752") == kestrel


def test_paper_with_id_matches_by_id_even_when_retitled(store: Store) -> None:
    store.ingest(make_dump(paper("Old title", 1, "2401.00001")), at(0))
    result = store.ingest(make_dump(paper("A completely new title", 2, "2401.00001")), at(1))

    assert result.new == 0
    (stored,) = store.papers_first_seen_after(0)
    assert (stored.title, stored.times_seen) == ("Old title", 2)


def test_paper_seen_later_without_its_id_matches_by_title(store: Store) -> None:
    store.ingest(make_dump(paper("Scaling Laws", 1, "2001.08361")), at(0))
    result = store.ingest(make_dump(paper("scaling laws", 3)), at(1))

    assert result.new == 0
    (stored,) = store.papers_first_seen_after(0)
    assert (stored.arxiv_id, stored.times_seen) == ("2001.08361", 2)


LONG_ABSTRACT = (
    "Kestrels hover over fields while they hunt, holding their heads still against the wind. We record "
    "forty hours of hovering flight with head-mounted cameras and fit a controller that keeps a small drone's "
    "camera as steady as a kestrel's head in gusts of up to twelve metres per second, which no gimbal we tried does."
)


def test_a_retitled_paper_without_an_id_is_found_by_its_abstract(store: Store) -> None:
    """A listing that corrects a typo in a title, with no arXiv id to go by, is the same paper. It is
    shown with the corrected title from then on (the title a reader expects in later digests and in
    `explain`); its key stays the first title's, which the links of digests already sent carry."""
    store.ingest(make_dump(replace(paper("Hovering Like a Kestrl", 1), abstract=LONG_ABSTRACT)), at(0))
    fixed = replace(paper("Hovering Like a Kestrel", 2), abstract=LONG_ABSTRACT)
    result = store.ingest(make_dump(fixed), at(1))

    assert result.new == 0
    (stored,) = store.papers_first_seen_after(0)
    assert (stored.title, stored.key, stored.times_seen) == (
        "Hovering Like a Kestrel",
        "hovering like a kestrl",
        2,
    )
    assert store.paper_by_key("hovering like a kestrl") == stored


def test_a_link_sent_before_a_listing_gave_the_paper_an_id_and_corrected_title_still_finds_it(
    store: Store,
) -> None:
    """A digest's links carry the key a paper had when it was sent: its first title's, until an id
    came. A later listing with the id and a corrected title took both away (a click said no such paper):
    the key stays then."""
    store.ingest(make_dump(replace(paper("Hovering Like a Kestrl", 1), abstract=LONG_ABSTRACT)), at(0))
    fixed = replace(paper("Hovering Like a Kestrel", 1, "2403.00001"), abstract=LONG_ABSTRACT)
    assert store.ingest(make_dump(fixed), at(1)).new == 0

    found = store.paper_by_key("hovering like a kestrl")
    assert found is not None and (found.arxiv_id, found.title) == ("2403.00001", "Hovering Like a Kestrel")
    assert store.find_paper("2403.00001") == found


def test_a_paper_given_its_id_and_a_corrected_title_keeps_it_when_its_first_title_is_listed_again(
    store: Store,
) -> None:
    """A text dump (no id) listing the first title again took the paper back to it; the corrected
    title with a corrected abstract was then a new paper, mailed twice."""
    typo = replace(paper("Hovering Like a Kestrl", 1), abstract=LONG_ABSTRACT)
    store.ingest(make_dump(typo), at(0))
    store.ingest(
        make_dump(replace(paper("Hovering Like a Kestrel", 1, "2403.00001"), abstract=LONG_ABSTRACT)), at(1)
    )
    store.ingest(make_dump(typo, tag="again"), at(2))
    corrected = replace(
        paper("Hovering Like a Kestrel", 1), abstract=LONG_ABSTRACT.replace("no gimbal", "none")
    )
    assert store.ingest(make_dump(corrected), at(3)).new == 0
    assert [p.title for p in store.papers_first_seen_after(0)] == ["Hovering Like a Kestrel"]


def test_a_retitled_paper_is_found_by_its_new_title_when_its_abstract_is_corrected_too(store: Store) -> None:
    """A title corrected, then the abstract: the third listing matches only the corrected title, which
    the paper took at the second (it came back as new, and was mailed twice). Looked up by either title
    (feedback, `explain`), it is the one paper."""
    store.ingest(make_dump(replace(paper("Hovering Like a Kestrl", 1), abstract=LONG_ABSTRACT)), at(0))
    store.ingest(make_dump(replace(paper("Hovering Like a Kestrel", 1), abstract=LONG_ABSTRACT)), at(1))
    longer = f"{LONG_ABSTRACT} Code and recordings are public."
    result = store.ingest(
        make_dump(replace(paper("Hovering Like a Kestrel", 1), abstract=longer), tag="3"), at(2)
    )

    assert result.new == 0
    (stored,) = store.papers_first_seen_after(0)
    assert (stored.title, stored.abstract, stored.times_seen) == ("Hovering Like a Kestrel", longer, 3)
    assert store.find_paper("Hovering Like a Kestrl") == stored == store.find_paper("Hovering like a kestrel")


def test_a_paper_whose_stored_title_was_rewritten_is_found_by_the_title_it_was_stored_under(
    store: Store,
) -> None:
    """Migration 0012 once decoded "&regression" as "®ression" in stored titles but kept their keys: the
    next listing of "Classification&regression" (a short abstract: no abstract key) was inserted under
    the key the paper already had, and every later run failed on the UNIQUE constraint."""
    store.ingest(make_dump(replace(paper("Classification&regression Trees", 1), abstract="Short.")), at(0))
    with store._engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE papers SET title = :t, title_key = :k"),
            {"t": "Classification®ression Trees", "k": "classification ression trees"},
        )
    again = replace(paper("Classification&regression Trees", 1), abstract="Short.")
    result = store.ingest(make_dump(again, paper("Another Paper", 2)), at(1))
    assert (result.papers, result.new) == (2, 1)
    assert [p.times_seen for p in store.papers_first_seen_after(0)] == [2, 1]


def test_a_title_with_a_soft_hyphen_is_the_same_paper_without_it(store: Store) -> None:
    """A soft hyphen (or a zero-width space) inside a word split it in the title key: the same paper,
    with no abstract key to find it by, came back as new."""
    store.ingest(make_dump(replace(paper("Trans\u00adformers for All", 1), abstract="Short.")), at(0))
    result = store.ingest(make_dump(replace(paper("Transformers for All", 1), abstract="Short.")), at(1))
    assert result.new == 0


def test_companion_papers_whose_abstracts_open_alike_stay_two(store: Store) -> None:
    """Part I and Part II share their first sentences, and their first 40 words: two papers."""
    part = lambda n, ending: replace(paper(f"Kestrels, Part {n}", n), abstract=f"{LONG_ABSTRACT} {ending}")  # noqa: E731
    first = store.ingest(
        make_dump(part(1, "Part one covers hovering."), part(2, "Part two covers diving.")), at(0)
    )
    later = store.ingest(make_dump(part(3, "Part three covers landing.")), at(1))
    assert (first.papers, first.new, later.new) == (2, 2, 1)


def test_an_abstract_completed_later_identifies_its_paper(store: Store) -> None:
    """The abstract a dump cut short is completed by a later listing, and found by it afterwards."""
    cut = LONG_ABSTRACT[: LONG_ABSTRACT.index("which")]
    store.ingest(make_dump(replace(paper("Hovering Like a Kestrl", 1), abstract=cut)), at(0))
    store.ingest(
        make_dump(replace(paper("Hovering Like a Kestrl", 1), abstract=LONG_ABSTRACT), tag="whole"), at(1)
    )
    retitled = store.ingest(
        make_dump(replace(paper("Hovering Like a Kestrel", 1), abstract=LONG_ABSTRACT)), at(2)
    )
    assert retitled.new == 0


def test_a_listing_that_cuts_a_long_abstract_short_is_the_same_paper(store: Store) -> None:
    """The share of words counts against the shorter abstract: an abstract cut to its first half
    shares all of its words with the whole one, and only half of the whole one's."""
    whole = (
        f"{LONG_ABSTRACT} Field trials on three airframes over two seasons show drift below one centimetre, "
        "pilots rate the footage steadier than stabilised commercial rigs, and the controller runs on a "
        "microcontroller costing four euros; code, flight logs and annotated video are released openly."
    )
    store.ingest(make_dump(replace(paper("Hovering Like a Kestrel", 1), abstract=whole)), at(0))
    listed = replace(paper("Hovering Like a Kestrel", 1), abstract=LONG_ABSTRACT)
    cut = store.ingest(make_dump(listed, tag="cut"), at(1))
    assert (cut.already, cut.new) == (False, 0)


def test_a_short_abstract_identifies_no_paper(store: Store) -> None:
    """Two titles over the same few words (an empty abstract, a placeholder) are two papers."""
    store.ingest(make_dump(replace(paper("First", 1), abstract="No abstract available.")), at(0))
    result = store.ingest(make_dump(replace(paper("Second", 1), abstract="No abstract available.")), at(1))
    assert result.new == 1


def test_a_paper_with_another_id_is_not_matched_by_its_abstract(store: Store) -> None:
    store.ingest(make_dump(replace(paper("Kestrels", 1, "2401.00001"), abstract=LONG_ABSTRACT)), at(0))
    result = store.ingest(
        make_dump(replace(paper("Kestrels v2", 1, "2402.00002"), abstract=LONG_ABSTRACT)), at(1)
    )
    assert result.new == 1


def test_an_old_style_id_with_its_subject_class_is_the_paper_a_feed_lists_without_it(store: Store) -> None:
    """'math.AG/0601001' (a listing that names the subject class) and 'math/0601001' (arXiv's feeds)
    are one paper: it was new again, and sent twice."""
    store.ingest(make_dump(paper("Old Varieties", 1, "math.AG/0601001v2")), at(0))
    result = store.ingest(make_dump(paper("Old Varieties, Revisited", 1, "math/0601001")), at(1))
    assert result.new == 0
    assert [p.arxiv_id for p in store.papers_first_seen_after(0)] == ["math/0601001"]


def test_same_title_with_different_ids_are_two_papers(store: Store) -> None:
    store.ingest(make_dump(paper("Attention", 1, "1706.03762")), at(0))
    result = store.ingest(make_dump(paper("Attention", 1, "2501.99999")), at(1))

    assert result.new == 1
    assert sorted(p.key for p in store.papers_first_seen_after(0)) == ["1706.03762", "2501.99999"]


OTHER_ABSTRACT = (
    "Scaling laws predict a language model's loss from its parameters, data and compute. We fit them again "
    "on two hundred training runs whose learning rate schedules differ, and find that the exponents move "
    "with the schedule, so a law fitted on one schedule misjudges the best model size for another by a third."
)


THIRD_ABSTRACT = (
    "Power laws fitted to a handful of small models are often trusted far beyond the sizes they were fit on. "
    "We collect published fits from forty papers, refit each with its own uncertainty, and show that half "
    "of the extrapolations reported as confident fall outside the interval their own data allow."
)


def test_another_paper_with_the_title_of_one_stored_without_an_id_does_not_take_it_over(store: Store) -> None:
    """A text dump's paper (no id) and a later listing of another paper with its title: the listing's id
    went to the stored paper, the other paper was never new, and the first came back new with its own id."""
    listed = lambda arxiv_id, abstract: replace(paper("Scaling Laws", 1, arxiv_id), abstract=abstract)  # noqa: E731
    store.ingest(make_dump(listed(None, LONG_ABSTRACT)), at(0))
    other = store.ingest(make_dump(listed("2403.00002", OTHER_ABSTRACT)), at(1))
    first = store.ingest(make_dump(listed("2403.00001", LONG_ABSTRACT)), at(2))

    assert (other.new, first.new) == (1, 0)
    by_key = {p.key: p.abstract for p in store.papers_first_seen_after(0)}
    assert by_key == {"2403.00001": LONG_ABSTRACT, "2403.00002": OTHER_ABSTRACT}


def test_a_listing_without_an_id_is_the_paper_whose_title_and_abstract_it_has(store: Store) -> None:
    """Of two papers that share a title, a text dump's listing (no id) went to the first whatever its
    abstract; another paper with that title and no id was never new."""
    listed = lambda arxiv_id, abstract: replace(paper("Scaling Laws", 1, arxiv_id), abstract=abstract)  # noqa: E731
    store.ingest(make_dump(listed("2403.00001", LONG_ABSTRACT)), at(0))
    store.ingest(make_dump(listed("2403.00002", OTHER_ABSTRACT)), at(1))
    store.ingest(make_dump(listed(None, OTHER_ABSTRACT)), at(2))
    assert [(p.key, p.times_seen) for p in store.papers_first_seen_after(0)] == [
        ("2403.00001", 1),
        ("2403.00002", 2),
    ]
    third = replace(paper("Scaling laws", 1), abstract=THIRD_ABSTRACT)
    assert store.ingest(make_dump(third), at(3)).new == 1


def test_a_paper_stored_without_an_id_takes_it_from_a_listing_that_corrects_its_abstract(
    store: Store,
) -> None:
    corrected = LONG_ABSTRACT.replace("twelve", "fifteen") + " Code and recordings are public."
    store.ingest(make_dump(replace(paper("Hovering Like a Kestrel", 1), abstract=LONG_ABSTRACT)), at(0))
    result = store.ingest(
        make_dump(replace(paper("Hovering Like a Kestrel", 1, "2403.00003"), abstract=corrected)), at(1)
    )
    assert result.new == 0
    assert [p.key for p in store.papers_first_seen_after(0)] == ["2403.00003"]


def test_a_paper_listed_twice_in_one_dump_counts_once_with_its_best_rank(store: Store) -> None:
    result = store.ingest(make_dump(paper("Twice", 5), paper("Once", 2), paper("twice", 3)), at(0))

    assert (result.papers, result.new) == (2, 2)
    twice = store.paper_by_key("twice")
    assert twice is not None
    assert (twice.times_seen, twice.best_rank) == (1, 3)


def test_an_abstract_cut_short_is_completed_by_a_later_listing_and_a_different_one_kept(store: Store) -> None:
    full = "We study cut files. A dump copied while it is read ends mid-sentence, and the rest comes later."
    listed = lambda abstract, rank=1: replace(paper("Cut", rank), abstract=abstract)  # noqa: E731
    store.ingest(make_dump(listed(full[:40]), paper("Other")), at(0))
    cache = StoreVectorCache(store)
    for model in ("minilm", "sentence:minilm"):
        cache.put(model, {k: np.ones(3, dtype=np.float32) for k in ("cut", "cut#0", "cut#1", "other")})
    store.ingest(make_dump(listed(full), tag="complete"), at(1))
    store.ingest(make_dump(listed("Another listing's own wording of it.", 2)), at(2))

    stored = store.paper_by_key("cut")
    assert stored is not None and stored.abstract == full
    # the vectors of the cut text are gone, to be embedded again from the whole abstract
    assert cache.get("minilm", ["cut", "other"]).keys() == {"other"}
    assert cache.get("sentence:minilm", ["cut#0", "cut#1", "other"]).keys() == {"other"}


def test_an_abstract_cut_short_on_one_line_is_completed_by_the_apis_with_line_breaks(store: Store) -> None:
    """A page's text dump has each abstract on one line; the API keeps the line breaks (236 of the
    410 real summaries): the plain prefix test never matched, so the cut abstract stayed."""
    full = "We study cut files.\nA dump copied while it is read\nends mid-sentence, and the rest comes later."
    listed = lambda abstract: replace(paper("Cut", 1), abstract=abstract)  # noqa: E731
    store.ingest(make_dump(listed(" ".join(full.split())[:45])), at(0))
    store.ingest(make_dump(listed(full), tag="api"), at(1))
    stored = store.paper_by_key("cut")
    assert stored is not None and " ".join(stored.abstract.split()) == " ".join(full.split())


def test_the_same_abstract_in_the_other_layout_changes_nothing(store: Store) -> None:
    """An API listing (line breaks) and a page's text dump (one line) of one abstract replaced each
    other at every ingest, and the paper's vectors were dropped each time."""
    full = "We study cut files.\nA dump copied while it is read\nends mid-sentence, and the rest comes later."
    listed = lambda abstract, tag: replace(paper("Cut", 1), abstract=abstract)  # noqa: E731
    store.ingest(make_dump(listed(full, "api")), at(0))
    cache = StoreVectorCache(store)
    cache.put("minilm", {"cut": np.ones(3, dtype=np.float32)})
    store.ingest(make_dump(listed(" ".join(full.split()), "page"), tag="page"), at(1))
    stored = store.paper_by_key("cut")
    assert stored is not None and stored.abstract == full
    assert cache.get("minilm", ["cut"]).keys() == {"cut"}


def test_authors_and_abstract_round_trip(store: Store) -> None:
    listed = paper("Ünïcode Title", 1, authors=("Zoë Ø", "李雷"))
    store.ingest(make_dump(listed), at(0))

    (stored,) = store.papers_first_seen_in(1)
    assert stored.authors == ("Zoë Ø", "李雷")
    assert stored.abstract == listed.abstract


def test_failing_constraint_halfway_leaves_nothing_behind(store: Store) -> None:
    store.ingest(make_dump(paper("Kept", 1)), at(0))
    before = _table_counts(store)
    broken = make_dump(paper("Kept", 2), paper("Broken", 0), paper("Never", 3))  # rank 0 breaks a CHECK

    with pytest.raises(StoreError, match="ingesting test") as caught:
        store.ingest(broken, at(1))

    assert "\n" not in str(caught.value) and "SELECT" not in str(caught.value).upper()
    assert _table_counts(store) == before
    assert broken.content_hash not in store.dump_sizes()
    kept = store.paper_by_key("kept")
    assert kept is not None and (kept.times_seen, kept.last_seen) == (1, at(0))
    assert store.ingest(make_dump(paper("Never", 1)), at(2)).new == 1


def test_failure_after_papers_are_written_rolls_everything_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = ingest_module._write_papers

    def write_then_fail(*args: object, **kwargs: object) -> int:
        real_write(*args, **kwargs)  # type: ignore[arg-type]
        raise sa.exc.OperationalError("UPDATE dumps", {}, Exception("disk I/O error"))

    monkeypatch.setattr(ingest_module, "_write_papers", write_then_fail)
    dump = read_seed(seed_files()[0])

    with pytest.raises(StoreError, match="disk I/O error"):
        store.ingest(dump, at(0))

    assert _table_counts(store) == {"dumps": 0, "papers": 0, "dump_papers": 0}
    monkeypatch.undo()
    assert store.ingest(dump, at(1)).new == 81


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="timezone-aware"):
        store.ingest(make_dump(paper("X")), datetime(2024, 1, 1))


def test_dump_metadata_is_kept(store: Store) -> None:
    dump = Dump("seeds/000.txt", "hf-text", "ab" * 32, (paper("One"),), listed_on="Mar 11")
    store.ingest(dump, at(3))

    (record,) = store.dumps()
    assert (record.seq, record.source, record.format, record.listed_on) == (
        1,
        "seeds/000.txt",
        "hf-text",
        "Mar 11",
    )
    assert (record.ingested_at, record.papers, record.new) == (at(3), 1, 1)
    assert store.dumps(["cd" * 32]) == []


def test_a_dump_already_ingested_is_logged_at_debug_not_info(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon reads every file of the folder each tick: 1,000 old dumps were 1,000 INFO lines a tick."""
    import logging

    caplog.set_level(logging.DEBUG, logger="newsletter.store.store")
    dump = make_dump(paper("Once"))
    store.ingest(dump, at(0))
    store.ingest(dump, at(1))
    levels = [r.levelno for r in caplog.records if r.getMessage().startswith("ingested ")]
    assert levels == [logging.INFO, logging.DEBUG]


def test_another_paper_without_an_id_with_the_title_of_one_stored_without_one_is_new(store: Store) -> None:
    """Two text dumps (no ids) list two papers of one title with different abstracts: the second is new,
    under a key of its own (it was inserted under the first's key, the title's, and every later ingest
    of that dump failed on UNIQUE)."""
    listed = lambda abstract: replace(paper("Scaling Laws", 1), abstract=abstract)  # noqa: E731
    store.ingest(make_dump(listed(LONG_ABSTRACT)), at(0))
    assert store.ingest(make_dump(listed(OTHER_ABSTRACT), tag="second"), at(1)).new == 1
    assert store.ingest(make_dump(listed(OTHER_ABSTRACT), tag="third"), at(2)).new == 0
    keys = {p.abstract: p.key for p in store.papers_first_seen_after(0)}
    assert keys[LONG_ABSTRACT] == "scaling laws"
    assert store.paper_by_key(keys[OTHER_ABSTRACT]).abstract == OTHER_ABSTRACT  # type: ignore[union-attr]


def test_papers_are_found_by_a_part_of_their_title_from_the_start_of_a_word(store: Store) -> None:
    """Case and punctuation aside, as titles are compared (LIKE's % and _ never reach the query)."""
    titles = ["Serving LLMs on Old GPUs", "Preserving Edits 100%_Safely", "MoE Serving at the Edge"]
    store.ingest(make_dump(*(paper(t, i + 1) for i, t in enumerate(titles))), at(0))

    def found(part: str, limit: int = 5) -> list[str]:
        return [p.title for p in store.papers_titled_with(part, limit)]

    assert found("SERVING") == [titles[0], titles[2]]
    assert found("serving", limit=1) == [titles[0]]
    assert found("100%_safely") == [titles[1]]
    assert found("100% safely") == [titles[1]]  # punctuation aside, as titles are compared
    assert found("100%") == found("erving llms") == found("on") == []


def test_new_papers_are_inserted_in_one_statement_not_one_each(store: Store) -> None:
    """One INSERT per new paper took 30 s of a 12,500-paper dump; their ids still follow the listing."""
    inserts: list[str] = []

    def count(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PAPERS"):
            inserts.append(statement)

    dump = read_seed(seed_files()[0])
    sa.event.listen(store._engine, "before_cursor_execute", count)
    try:
        result = store.ingest(dump, at(0))
    finally:
        sa.event.remove(store._engine, "before_cursor_execute", count)
    assert (result.new, len(inserts)) == (81, 1)
    with store._engine.connect() as conn:
        keys = conn.execute(sa.text("SELECT title_key FROM papers ORDER BY id")).scalars().all()
    assert keys == [p.title_key for p in dump.papers]
