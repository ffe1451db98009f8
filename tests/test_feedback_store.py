"""Feedback links' tokens and the store's feedback log: signed, unforgeable, last word per paper."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from newsletter.errors import StoreError
from newsletter.feedback import feedback_links, feedback_token, read_feedback_token
from newsletter.store import Store
from newsletter.unsubscribe import make_token, read_token, seal, unseal
from tests.test_store_helpers import db_url, make_dump, paper

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SECRET = SecretStr("feedback-test-secret")


def test_a_token_names_the_subscriber_and_paper_and_only_the_secret_makes_one() -> None:
    token = feedback_token(" Ada@Example.org ", "2312.00752", SECRET)
    assert read_feedback_token(token, SECRET) == ("ada@example.org", "2312.00752")
    assert read_feedback_token(token, SecretStr("another secret")) is None
    payload, _, sig = token.partition(".")
    forged = feedback_token("eve@example.org", "2312.00752", SecretStr("guess"))
    assert read_feedback_token(f"{forged.partition('.')[0]}.{sig}", SECRET) is None
    assert read_feedback_token(f"{payload}.{sig[:-2]}", SECRET) is None
    assert read_feedback_token("not-a-token", SECRET) is None


def test_unsubscribe_and_feedback_tokens_never_cross() -> None:
    unsubscribe = make_token("ada@example.org", SECRET)
    feedback = feedback_token("ada@example.org", "2312.00752", SECRET)
    assert read_feedback_token(unsubscribe, SECRET) is None
    assert read_token(feedback, SECRET) is None
    assert read_token(unsubscribe, SECRET) == "ada@example.org"  # unchanged for links already sent


def test_a_token_sealed_for_one_purpose_is_refused_for_another() -> None:
    """The field counts kept the two kinds apart in the test above; the purpose must do it too."""
    fields = ("ada@example.org", "2312.00752")
    assert unseal(seal(fields, SECRET, "feedback"), SECRET, "feedback") == fields
    assert unseal(seal(fields, SECRET, "feedback"), SECRET) is None
    assert unseal(seal(fields, SECRET), SECRET, "feedback") is None


def test_a_token_has_one_spelling() -> None:
    """A signature respelled in base64's unused low bits decodes to the same bytes: refused all the same."""
    payload, _, sig = make_token("ada@example.org", SECRET).partition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same = base64.urlsafe_b64decode(sig + "==")
    twins = [sig[:-1] + c for c in alphabet if c != sig[-1]]
    twins = [t for t in twins if base64.urlsafe_b64decode(t + "==") == same]
    assert twins and all(read_token(f"{payload}.{twin}", SECRET) is None for twin in twins)


def test_both_links_of_a_paper_share_its_token() -> None:
    links = feedback_links("https://papers.example.org/", "ada@example.org", "2312.00752", SECRET)
    token = feedback_token("ada@example.org", "2312.00752", SECRET)
    assert links.more == f"https://papers.example.org/feedback/more/{token}"
    assert links.less == f"https://papers.example.org/feedback/less/{token}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(db_url(tmp_path)) as store:
        store.ingest(
            make_dump(paper("Kestrel Everywhere", arxiv_id="2401.00001"), paper("No Id Paper", 2)), NOW
        )
        yield store


def test_feedback_is_recorded_once_per_paper_and_the_last_word_counts(store: Store) -> None:
    assert store.record_feedback("Ada@example.org", "2401.00001", "more", NOW) is not None
    assert store.record_feedback("ada@example.org", "no id paper", "less", NOW + timedelta(minutes=1))
    store.record_feedback("ada@example.org", "2401.00001", "less", NOW + timedelta(minutes=2))
    kinds = [(f.paper.title, f.kind, f.created_at) for f in store.feedback("ADA@example.org")]
    assert kinds == [
        ("Kestrel Everywhere", "less", NOW + timedelta(minutes=2)),
        ("No Id Paper", "less", NOW + timedelta(minutes=1)),
    ]
    assert store.feedback_marks() == {"ada@example.org": {"more": [], "less": ["no id paper", "2401.00001"]}}
    assert store.feedback("bob@example.org") == []


def test_the_last_word_counts_whatever_its_clock_says_but_a_held_click_only_if_newer(store: Store) -> None:
    """`feedback --now` earlier than the feedback recorded was dropped while the CLI said it was recorded."""
    store.record_feedback("ada@example.org", "2401.00001", "less", NOW + timedelta(hours=1))
    store.record_feedback("ada@example.org", "2401.00001", "more", NOW)  # said last, dated earlier
    assert [f.kind for f in store.feedback("ada@example.org")] == ["more"]
    store.record_feedback("ada@example.org", "2401.00001", "less", NOW - timedelta(hours=1), if_newer=True)
    assert [f.kind for f in store.feedback("ada@example.org")] == ["more"]  # a held click from before


def test_a_link_sent_before_the_paper_got_its_arxiv_id_still_finds_it(store: Store) -> None:
    key = store.paper_by_key("no id paper")
    assert key is not None and key.key == "no id paper"
    store.ingest(make_dump(paper("No Id Paper", 3, "2402.00002"), tag="later"), NOW)
    rekeyed = store.paper_by_key("no id paper")  # the key the link carries
    assert rekeyed is not None and (rekeyed.id, rekeyed.key) == (key.id, "2402.00002")
    assert store.record_feedback("ada@example.org", "no id paper", "more", NOW) == rekeyed
    assert [f.paper.id for f in store.feedback("ada@example.org")] == [key.id]


def test_feedback_on_an_unknown_paper_or_kind_records_nothing(store: Store) -> None:
    assert store.record_feedback("ada@example.org", "2499.99999", "more", NOW) is None
    with pytest.raises(StoreError, match="'more' or 'less'"):
        store.record_feedback("ada@example.org", "2401.00001", "meh", NOW)
    assert store.feedback("ada@example.org") == []


@pytest.mark.parametrize(
    "item",
    [
        "2401.00001",
        "2401.00001v3",
        "arXiv:2401.00001",
        "https://arxiv.org/abs/2401.00001",
        "https://www.arxiv.org/pdf/2401.00001v2",
        "https://huggingface.co/papers/2401.00001",  # the HF link every digest card shows: it was refused
        "kestrel  EVERYWHERE",
        "Kestrel Everywhere.",
        "[Kestrel] Everywhere",  # urlsplit refuses it as a URL: still a title
        "arXiv: 2401.00001",
        "https://arxiv.org/pdf/2401.00001v1.pdf",
        # refused until a review pasted these links from a browser's address bar
        "https://arxiv.org/abs/2401.00001/",
        "https://arxiv.org/abs/2401.00001?context=cs.CL",
        "arxiv.org/abs/2401.00001",
        "https://export.arxiv.org/abs/2401.00001",
        "https://arxiv.org/html/2401.00001v1",
        "https://huggingface.co/papers/2401.00001#community",
        "https://doi.org/10.48550/arXiv.2401.00001",
        "https://arxiv.org/search/?searchtype=title&query=Kestrel+Everywhere",  # a text dump's only link
        # the DOI as papers cite it, and a PDF's name in capitals: refused until a later review
        "10.48550/arXiv.2401.00001",
        "doi:10.48550/arXiv.2401.00001",
        "DOI: 10.48550/ARXIV.2401.00001",
        "https://arxiv.org/pdf/2401.00001v1.PDF",
        "2401.00001v1.PDF",
    ],
)
def test_a_paper_is_found_by_any_spelling_of_its_arxiv_id_or_its_title(store: Store, item: str) -> None:
    found = store.find_paper(item)
    assert found is not None and found.title == "Kestrel Everywhere"
    assert store.find_paper("Kestrel Nowhere") is None


@pytest.mark.parametrize(
    "item",
    [
        "hep-th/9901001",
        "HEP-TH/9901001v2",
        "arXiv:hep-th/9901001",
        "https://arxiv.org/abs/hep-th/9901001v1",
        "https://arxiv.org/pdf/hep-th/9901001.pdf",
        "https://doi.org/10.48550/arXiv.hep-th/9901001",
    ],
)
def test_a_paper_is_found_by_any_spelling_of_an_old_style_arxiv_id(tmp_path: Path, item: str) -> None:
    with Store(db_url(tmp_path)) as store:
        store.ingest(make_dump(paper("Old Strings", arxiv_id="hep-th/9901001")), NOW)
        found = store.find_paper(item)
        assert found is not None and found.title == "Old Strings"


@pytest.mark.parametrize(
    "item",
    ["math.AG/0601001", "arXiv:math.AG/0601001v2", "https://arxiv.org/abs/math.AG/0601001", "MATH/0601001"],
)
def test_an_old_style_arxiv_id_is_found_with_or_without_its_subject_class(tmp_path: Path, item: str) -> None:
    """arXiv names one paper 'math.AG/0601001' and 'math/0601001' (its feeds give the latter)."""
    with Store(db_url(tmp_path)) as store:
        store.ingest(make_dump(paper("Old Varieties", arxiv_id="math/0601001")), NOW)
        found = store.find_paper(item)
        assert found is not None and found.title == "Old Varieties"


@pytest.mark.parametrize(
    "item",
    [
        "https://example.org/abs/2401.00001",  # another site's path
        "https://arxiv.org/list/2401.00001",
        "https://doi.org/10.1000/2401.00001",  # not arXiv's DOI
        "doi:10.1000/2401.00001",
        "https://arxiv.org/search/?searchtype=all&query=Kestrel+Everywhere",  # not a title search
    ],
)
def test_a_link_that_names_no_stored_paper_finds_none(store: Store, item: str) -> None:
    assert store.find_paper(item) is None
