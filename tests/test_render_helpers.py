"""Text helpers used by the templates: links, excerpts, authors, dates, wrapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from newsletter.render import authors_short, excerpt, helpers, paper_links, paper_url, safe_url
from newsletter.render.helpers import clip, long_date, one_line, wrap


@pytest.mark.parametrize(
    ("arxiv_id", "title", "url"),
    [
        ("2312.00752", "Kestrel", "https://arxiv.org/abs/2312.00752"),
        ("2312.00752v2", "Kestrel", "https://arxiv.org/abs/2312.00752"),
        ("hep-th/9901001", "Old", "https://arxiv.org/abs/hep-th/9901001"),
        (None, "Kestrel: Sparse-Graph & <Fast>", "https://arxiv.org/search/?searchtype=title&query=Kestrel%3A+Sparse-Graph+%26+%3CFast%3E"),
        ("not an id", "Two  words\n", "https://arxiv.org/search/?searchtype=title&query=Two+words"),
    ],
)  # fmt: skip
def test_paper_url_prefers_the_abstract_page(arxiv_id: str | None, title: str, url: str) -> None:
    assert paper_url(arxiv_id, title) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://arxiv.org/abs/1", "https://arxiv.org/abs/1"),
        ("mailto:unsubscribe@example.org?subject=x", "mailto:unsubscribe@example.org?subject=x"),
        ("javascript:alert(1)", "#"),
        (" JaVa\tScRiPt:alert(1)", "#"),
        ("data:text/html,<script>", "#"),
        ("/relative/path", "#"),
        ("http://[::1", "#"),
    ],
)
def test_safe_url_allows_only_absolute_web_and_mail_links(url: str, expected: str) -> None:
    assert safe_url(url) == expected


def test_excerpt_takes_up_to_three_sentences_without_splitting_abbreviations() -> None:
    text = "We study GNNs, e.g. GraphSAGE. Results follow Kipf et al. closely. Third one! Fourth? Fifth."
    assert excerpt(text) == "We study GNNs, e.g. GraphSAGE. Results follow Kipf et al. closely. Third one!"


def test_excerpt_splits_sentences_as_the_excerpt_was_chosen() -> None:
    """Its own splitter broke at "U.S.": the excerpt ended "...scored by U.S." and lost what followed."""
    text = (
        "We present LexSum, from U.S. Federal Court records. Models are scored by U.S. Bar examiners. Third."
    )
    assert excerpt(text) == text


def test_excerpt_stops_before_the_character_budget_and_clips_a_huge_first_sentence() -> None:
    assert excerpt("Short one. " + "Long " * 100 + "end.") == "Short one."
    long_first = excerpt("word " * 200)
    assert long_first.endswith("…")
    assert len(long_first) <= 420


def test_excerpt_of_empty_text_is_empty() -> None:
    assert excerpt("  \n ") == ""


@pytest.mark.parametrize(
    ("authors", "expected"),
    [
        ((), ""),
        (("A",), "A"),
        (("A", "B", "C"), "A, B, C"),
        (("A", "B", "C", "D"), "A, B, C et al."),
        (("A\n", " ", "B"), "A, B"),
    ],
)
def test_authors_short_names_the_first_three(authors: tuple[str, ...], expected: str) -> None:
    assert authors_short(authors) == expected


def test_one_line_drops_control_characters_and_newlines() -> None:
    assert one_line(" a\r\nb\x00c\u2028d\x85e\t ") == "a b c d e"


def test_clip_cuts_at_a_word_boundary() -> None:
    assert clip("short", 10) == "short"
    assert clip("alpha beta gamma delta", 12) == "alpha beta…"
    assert clip("alpha beta gamma", 11) == "alpha beta…"


def test_long_date_ignores_the_locale() -> None:
    assert long_date(datetime(2024, 3, 12, tzinfo=UTC)) == "Tuesday, 12 March 2024"


def test_wrap_indents_and_never_breaks_urls() -> None:
    url = "https://arxiv.org/search/?searchtype=title&query=" + "x" * 80
    wrapped = wrap(f"see {url} for more words here", 40, "   ")
    assert wrapped.splitlines() == ["   see", f"   {url}", "   for more words here"]


def test_safe_links_of_a_paper_s_links_are_cached_and_each_caller_gets_its_own_list() -> None:
    links = (
        ("arXiv", "https://arxiv.org/abs/2312.00752"),
        ("Code", "javascript:alert(1)"),
        ("HF", " https://h f"),
    )
    first = helpers.safe_links(links)
    assert first == helpers.safe_links(list(links)) == [("arXiv", links[0][1]), ("HF", "https://hf")]
    first.clear()
    assert helpers.safe_links(links) == [("arXiv", links[0][1]), ("HF", "https://hf")]


def test_one_line_drops_bidirectional_controls_that_make_text_read_backwards() -> None:
    assert one_line("Uber\u202egnol\u202c and \u2066isolated\u2069 \u200ex") == "Ubergnol and isolated x"


def test_wrap_fills_cjk_text_by_its_width() -> None:
    """A Chinese sentence has no spaces: it was one line of 200 columns in the plain-text part."""
    import unicodedata

    sentence = (
        "本文提出了一种新的大型语言模型推理方法，显著降低了延迟。我们在多个基准上验证了该方法的有效性。"
    )
    lines = wrap(sentence, 40, "   ").splitlines()
    width = [len(x) + sum(unicodedata.east_asian_width(c) in "WF" for c in x) for x in lines]
    assert len(lines) == 3 and max(width) <= 40
    assert "".join(line.strip() for line in lines) == sentence  # nothing lost, no space added
    assert not any(line.strip().startswith(("，", "。")) for line in lines)  # punctuation stays behind
    assert wrap("GPT-4模型 and more", 12) == "GPT-4模型\nand more"


def test_wrap_hangs_a_numbered_title() -> None:
    title = "1. A title that is rather long and needs a hanging indent when it wraps"
    assert wrap(title, 40, "", "   ").splitlines() == [
        "1. A title that is rather long and needs",
        "   a hanging indent when it wraps",
    ]


def test_safe_url_spells_a_link_in_ascii() -> None:
    """A plain-text mail client ended a link at '"', '<' or the first non-ASCII character."""
    from newsletter.render.helpers import safe_url

    assert (
        safe_url("https://例え.テスト/パス?q=日本")
        == "https://xn--r8jz45g.xn--zckzah/%E3%83%91%E3%82%B9?q=%E6%97%A5%E6%9C%AC"
    )
    assert safe_url('https://example.org/"><b>') == "https://example.org/%22%3E%3Cb%3E"
    kept = "https://example.org/a%20b/c?x=1&y=(2)#top"  # escapes and reserved characters as written
    assert safe_url(kept) == kept
    assert (
        safe_url("mailto:d@example.org?subject=unsubscribe%20a%40b")
        == "mailto:d@example.org?subject=unsubscribe%20a%40b"
    )


def test_wrap_keeps_urls_addresses_emoji_and_korean_words_whole() -> None:
    from newsletter.render.helpers import safe_url

    url = "https://example.org/模型/仓库"
    lines = wrap(f"代码在{url}中公开，欢迎使用。" * 3, 30).splitlines()
    assert all(url in line for line in lines if "http" in line)  # not cut
    assert len(lines) > 3 and not any(line.startswith("，") for line in lines)  # the rest still wraps
    assert "王小明的邮箱地址@例子.中国" in wrap(
        "You get this because 王小明的邮箱地址@例子.中国 subscribed.", 30
    )
    assert "👨\u200d👩\u200d👧" in wrap("家族" * 20 + "👨\u200d👩\u200d👧" + "家族" * 20, 20).replace(
        "\n", "|"
    )
    assert "공백이" in wrap("공백이 있는 한국어 문장은 단어 사이에서 줄을 바꿉니다 " * 3, 30).split()
    assert safe_url("https://i❤.ws/") == "https://xn--i-7iq.ws/"  # IDNA 2008 refuses it; 2003 does not
    assert safe_url('https://例"子.com/x') == "#"  # no ASCII form
    assert safe_url("https://ex\u202eelpmaxe.com/") == "#"  # a direction override would mislead


@pytest.mark.parametrize(
    ("code", "project"),
    [
        ("https://github.com/erjui/PolicyGuide", "https://huggingface.co/papers/2608.19861"),  # the HF page
        ("https://github.com/NineAbyss/R-3-Bench", "https://github.com/NineAbyss/R-3-Bench/"),  # the code
        (None, "https://arxiv.org/pdf/2608.19861"),  # the PDF
        ("https://github.com/erjui/PolicyGuide", "http://github.com/erjui/PolicyGuide/"),  # http
        ("https://github.com/erjui/PolicyGuide", "https://www.GitHub.com/erjui/PolicyGuide#readme"),
        ("https://github.com/erjui/PolicyGuide", "https://github.com/erjui/PolicyGuide?tab=readme-ov-file"),
        ("https://github.com/erjui/PolicyGuide", "https://github.com/erjui/PolicyGuide/tree/main"),
        ("https://github.com/erjui/PolicyGuide", "https://github.com/erjui/PolicyGuide/tree/master/"),
        ("https://github.com/erjui/PolicyGuide", "https://github.com/erjui/policyguide/blob/main/README.md"),
        ("https://github.com/erjui/PolicyGuide/tree/main", "https://github.com/erjui/PolicyGuide.git"),
    ],
)
def test_a_project_page_that_is_another_link_is_not_linked_twice(code: str | None, project: str) -> None:
    links = paper_links(
        "2608.19861", hf_page="https://huggingface.co/papers/2608.19861", code=code, project=project
    )
    assert [label for label, _ in links] == ["arXiv", "PDF", "HF", *(["Code"] if code else [])]


@pytest.mark.parametrize(
    "project",
    [
        "https://github.com/erjui/PolicyGuide/tree/main/docs",  # a folder of the repository
        "https://github.com/erjui/PolicyGuide/tree/gh-pages",  # another branch: the front shows the default
        "https://github.com/erjui/PolicyGuide/tree/v2.0",  # a tag
        "https://github.com/erjui/PolicyGuide/blob/dev/README.md",  # another branch's README
        "https://github.com/erjui/PolicyGuide?tab=readme-ov-file&q=demo",  # another query besides the pane
        "https://github.com/erjui/PolicyGuide-site",  # another repository
    ],
)
def test_a_github_project_page_that_is_not_the_repository_front_is_linked(project: str) -> None:
    links = paper_links(None, code="https://github.com/erjui/PolicyGuide", project=project)
    assert [label for label, _ in links] == ["Code", "Project"]


def test_a_project_page_on_another_query_is_another_page() -> None:
    links = paper_links(None, code="https://example.org/x?p=code", project="https://example.org/x?p=home")
    assert [label for label, _ in links] == ["Code", "Project"]
