"""Rendering: golden HTML/text, escaping, compile-once, size, subject line."""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import newsletter.render.mjml_compile as mjml_compile
from newsletter.config import PACKAGE_TEMPLATES
from newsletter.render import DigestView, ItemView, Renderer, paper_links, paper_url, subject_for

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("NEWSLETTER_REGEN_GOLDEN") == "1"
GMAIL_CLIP_BYTES = 102_000
HOSTILE_TITLE = "<script>alert(1)</script> Ünïcödé {{ 7*7 }} «Transformers» für Alle"


def item(rank: int, title: str, **overrides: object) -> ItemView:
    fields: dict[str, object] = {
        "title": title,
        "url": paper_url(f"2403.{10000 + rank}", title),
        "excerpt": "First sentence of the abstract. Second one, e.g. with an abbreviation. Third. Fourth.",
        "why": "matches: message passing, Kestrel",
        "rank": rank,
        "score": 0.5,
        "authors": ("Albert Gu", "Tri Dao"),
        "arxiv_id": f"2403.{10000 + rank}",
        "times_seen": 1,
    }
    fields.update(overrides)
    return ItemView(**fields)  # type: ignore[arg-type]


def golden_view() -> DigestView:
    items = (
        item(1, "Kestrel: Sparse Message Passing on Graphs with Millions of Nodes",
             authors=("Albert Gu", "Tri Dao", "Third Author", "Fourth Author"), times_seen=2,
             links=paper_links("2403.10001", hf_page="https://huggingface.co/papers/2403.10001",
                               code="https://github.com/example-lab/kestrel", stars=12345,
                               project="https://example.org/kestrel?a=1&b=2"),
             upvotes=143, comments=7, organization="Carnegie Mellon University"),
        item(4, "A Paper Only Known By Its Title", url=paper_url(None, "A Paper Only Known By Its Title"),
             arxiv_id=None, authors=(), why=""),
        item(9, HOSTILE_TITLE, url="javascript:alert(1)",
             excerpt="Ça marche: <img src=x onerror=alert(1)> and {{ 7*7 }} and {% if 1 %}x{% endif %}.",
             why="matches: <b>bold</b>", authors=("Zoë Ångström",),
             links=(("Code", "javascript:alert(1)"), ("Project <i>", "https://example.org/<x>")),
             upvotes=0, comments=1, organization="<Org & Co>"),
    )  # fmt: skip
    return DigestView(
        subscriber_name="Ada",
        subscriber_email="ada@example.org",
        items=items,
        date=datetime(2024, 3, 12, 7, 0, tzinfo=UTC),
        unsubscribe_url="https://news.example.org/unsubscribe?token=abc&list=papers",
        preferences_note="You get this because you subscribed with ada@example.org.",
        list_name="Trending Papers",
    )


def long_view(count: int) -> DigestView:
    abstract = " ".join(
        f"Sentence {n} of a long abstract about graph convolutions and attention." for n in range(40)
    )
    title = "A Very Long Title About Sparse Message Passing on Large Graph " * 4
    authors = tuple(f"Author Number{n}" for n in range(25))
    items = tuple(item(n + 1, title, excerpt=abstract, authors=authors, times_seen=3) for n in range(count))
    return DigestView(
        "Ada", "ada@example.org", items, golden_view().date, "mailto:u@example.org", "Note.", "List"
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PACKAGE_TEMPLATES)


def normalise(text: str) -> str:
    """One tag per line so a golden diff is readable; the view's date is fixed, nothing else varies."""
    text = re.sub(r">\s*<", ">\n<", text.replace("\r\n", "\n"))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip() + "\n"


@pytest.mark.parametrize(("part", "golden"), [("html", "digest.html"), ("text", "digest.txt")])
def test_render_matches_golden(renderer: Renderer, part: str, golden: str) -> None:
    rendered = normalise(getattr(renderer.render(golden_view()), part))
    path = GOLDEN / golden
    if REGEN:
        path.write_text(rendered, encoding="utf-8")
    assert rendered == path.read_text(encoding="utf-8"), f"regenerate with NEWSLETTER_REGEN_GOLDEN=1 ({path})"


def test_outlook_s_columns_are_as_wide_as_their_section_s_padding_leaves(renderer: Renderer) -> None:
    """mjml-python reads a unitless "0" in a section's padding as no padding at all: the cards' column
    was 600 px wide for Outlook inside a section that keeps 12 px each side (the others: 576)."""
    html = renderer.render(golden_view()).html
    widths = re.findall(r'<td style="vertical-align:top;width:(\d+)px;">', html)
    assert len(widths) >= 3 and set(widths) == {"576"}, widths


def preheader(html: str) -> str:
    shown = re.search(r'class="nl-preheader"[^>]*>(.*?)</div>', html, re.S)
    assert shown is not None
    return shown.group(1)


def test_the_preview_line_shows_what_the_subject_does_not(renderer: Renderer) -> None:
    """The inbox's preview line repeated the subject's first title; for one paper it went on into the
    body's heading ("Tuesday, 12 March 2024 Trending Papers Hi Ada, ...")."""
    view = golden_view()
    several = preheader(renderer.render(view).html)
    assert several.startswith("A Paper Only Known By Its Title · ") and "Kestrel" not in several
    one = preheader(renderer.render(dataclasses.replace(view, items=view.items[:1])).html)
    assert one.startswith("First sentence of the abstract.") and "Kestrel" not in one
    assert one.endswith("&zwnj;&nbsp;" * 40)  # blank space after it, so nothing of the body follows


def test_a_paper_no_trending_listing_ranked_shows_no_rank(renderer: Renderer) -> None:
    """An arXiv feed's paper: no "#None trending", no empty line; its other counts as usual."""
    quiet, cross = item(1, "Only In A Feed"), item(2, "Cross Listed", times_seen=2)
    items = (dataclasses.replace(quiet, rank=None), dataclasses.replace(cross, rank=None))
    rendered = renderer.render(dataclasses.replace(golden_view(), items=items))
    for part in (rendered.html, rendered.text):
        assert "None" not in part and "trending" not in part
    assert "   seen in 2 listings\n" in rendered.text
    assert rendered.html.count('class="nl-meta" style="margin:0 0 6px') == 1  # the cross-listed paper's line


def test_one_upvote_is_singular_in_both_parts(renderer: Renderer) -> None:
    one = dataclasses.replace(item(1, "Liked Once"), upvotes=1)
    rendered = renderer.render(dataclasses.replace(golden_view(), items=(one,)))
    assert "1 upvote " in rendered.text.replace("\n", " ") and "1 upvotes" not in rendered.text
    assert "1&nbsp;upvote<" in rendered.html


def test_the_upvote_triangle_is_hidden_from_screen_readers(renderer: Renderer) -> None:
    """VoiceOver and NVDA read "black up-pointing triangle, 12 upvotes" on every card: the word says it."""
    html = renderer.render(golden_view()).html
    assert html.count("▲") > 0
    assert html.count("▲") == html.count('<span aria-hidden="true">▲</span>')


def test_html_escapes_everything_from_the_dump(renderer: Renderer) -> None:
    html = renderer.render(golden_view()).html
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "<b>bold</b>" not in html
    assert "{{ 7*7 }}" in html
    assert "Ünïcödé {{ 7*7 }} «Transformers» für Alle" in html
    assert "Ünïcödé 49" not in html


def test_html_links_are_absolute_and_never_javascript(renderer: Renderer) -> None:
    html = renderer.render(golden_view()).html
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert "javascript" not in html.lower()
    assert hrefs.count("#") == 1  # the hostile item's link is neutralised
    paper_links = [h for h in hrefs if h != "#"]
    assert paper_links == [
        "https://arxiv.org/abs/2403.10001",
        "https://arxiv.org/abs/2403.10001",
        "https://arxiv.org/pdf/2403.10001",
        "https://huggingface.co/papers/2403.10001",
        "https://github.com/example-lab/kestrel",
        "https://example.org/kestrel?a=1&amp;b=2",
        "https://arxiv.org/search/?searchtype=title&amp;query=A+Paper+Only+Known+By+Its+Title",
        "https://example.org/%3Cx%3E",  # percent-encoded: a plain-text link ended at the '<'
        "https://news.example.org/unsubscribe?token=abc&amp;list=papers",
    ]


def test_text_part_keeps_data_literal(renderer: Renderer) -> None:
    text = renderer.render(golden_view()).text
    assert HOSTILE_TITLE in text  # plain text: no escaping, and never evaluated as a template
    assert "{% if 1 %}x{% endif %}" in " ".join(text.split())
    assert "49" not in text
    assert "javascript:" not in text
    assert "\n   #\n" not in text  # an unsafe link is left out, not shown as "#"


def test_html_declares_dark_mode_and_loads_nothing_remote(renderer: Renderer) -> None:
    html = renderer.render(golden_view()).html
    assert '<meta name="color-scheme" content="light dark"' in html
    assert "@media (prefers-color-scheme: dark)" in html
    assert "googleapis" not in html
    assert not re.search(r"""(src|url)\s*[=(]\s*["']?https?:""", html)


def test_mjml_is_compiled_once_per_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = mjml_compile.mjml2html

    def counting(source: str, **kwargs: object) -> str:
        calls.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(mjml_compile, "mjml2html", counting)
    renderer = Renderer(PACKAGE_TEMPLATES)
    for _ in range(50):
        renderer.render(golden_view())
    assert len(calls) == 1


@pytest.mark.parametrize("count", [10, 20])
def test_html_stays_under_gmail_clipping_with_long_papers(renderer: Renderer, count: int) -> None:
    html = renderer.render(long_view(count)).html
    assert html.count('class="nl-title"') == count
    assert len(html.encode("utf-8")) < GMAIL_CLIP_BYTES


def test_a_huge_digest_keeps_every_link_but_lists_the_tail_compactly(renderer: Renderer) -> None:
    view = long_view(100)
    html = renderer.render(view).html
    assert len(html.encode("utf-8")) < GMAIL_CLIP_BYTES
    assert html.count('href="https://arxiv.org/abs/') == 100
    assert 0 < html.count("Sentence 1 of a long abstract") < 100
    assert "More new papers" in html
    text = renderer.render(view).text  # the same papers in full: 100 abstracts beside 35 scored as spam
    assert text.count("Sentence 1 of a long abstract") == html.count("Sentence 1 of a long abstract")
    assert text.count("https://arxiv.org/abs/") == 100


def test_the_text_part_heads_the_compact_list_as_the_html_does(renderer: Renderer) -> None:
    """The papers past the budget lost their authors and excerpt from one number to the next, unheaded."""
    text = renderer.render(long_view(100)).text
    full = text.count("Sentence 1 of a long abstract")
    assert text.count("More new papers") == 1
    assert f"\n\nMore new papers:\n\n{full + 1}. A Very Long Title" in text


def test_excerpt_and_authors_are_trimmed_in_the_email(renderer: Renderer) -> None:
    rendered = renderer.render(long_view(1))
    assert "Sentence 2 of a long abstract" in rendered.html
    assert "Sentence 3 of a long abstract" not in rendered.html
    assert "Author Number0, Author Number1, Author Number2 et al." in rendered.text
    assert "Author Number3" not in rendered.html


def test_the_text_part_s_authors_line_wraps_and_clips_the_organization_as_the_html_does() -> None:
    """It was the one line never wrapped (183 columns with a long organization name, which the HTML
    clips to 40 characters)."""
    organization = (
        "The Extremely Long Official Name of a Research Organization and Its Many Partner Institutes"
    )
    authors = ("Silin Chen", "Haoyi Teng", "Xiaodong Gu", "Fourth Author")
    view = dataclasses.replace(
        golden_view(), items=(item(1, "Kestrel", authors=authors, organization=organization),)
    )
    rendered = Renderer(PACKAGE_TEMPLATES).render(view)
    lines = rendered.text.split("\n1. Kestrel\n", 1)[1].splitlines()
    at = next(n for n, line in enumerate(lines) if "Silin Chen" in line)
    assert lines[at : at + 2] == [
        "   Silin Chen, Haoyi Teng, Xiaodong Gu et al. · The Extremely Long",
        "   Official Name of a…",
    ]
    assert "The Extremely Long Official Name of a…" in rendered.html


def test_every_link_a_reader_taps_to_act_is_a_padded_target_in_full_cards_and_the_compact_list(
    renderer: Renderer,
) -> None:
    """They were 13 px text 15 px tall, and the compact list's "more · less like this" broke over
    two lines at 375 px; a padded block is at least 25 px tall, its labels spelt out."""
    links = {"more_url": "https://n.example.org/more/t", "less_url": "https://n.example.org/less/t"}
    view = long_view(100)
    view = dataclasses.replace(view, items=tuple(dataclasses.replace(i, **links) for i in view.items))
    html = renderer.render(view).html
    assert "More new papers" in html
    anchors = re.findall(
        r'<a href="(?:https://n\.example\.org/(?:more|less)/t|mailto:u@example\.org)"[^>]*>', html
    )
    assert len(anchors) == 201  # more and less for each of the 100 papers, and Unsubscribe
    assert all("display:inline-block;padding:" in a for a in anchors), {a for a in anchors}
    assert html.count(">More like this</a>") == html.count(">Less like this</a>") == 100


def test_each_feedback_link_names_its_paper_and_the_compact_list_has_a_heading(renderer: Renderer) -> None:
    """A screen reader's list of links read "More like this" twelve times with no paper, and the
    compact list's title was a paragraph no heading key reached. (The compact list's links follow
    their paper's title in one paragraph, and carry no label: 100 of them pushed the email past
    Gmail's clip.)"""
    links = {"more_url": "https://n.example.org/more/t", "less_url": "https://n.example.org/less/t"}
    titles = ["Q&A <Agents>", "Kestrel " * 20, *(f"Paper {n}" for n in range(10))]
    items = tuple(item(n + 1, title, **links) for n, title in enumerate(titles))
    html = renderer.render(dataclasses.replace(golden_view(), items=items)).html
    labels = re.findall(r'aria-label="(More|Less) like this: ([^"]*)"', html)
    assert len(labels) == 2 * len(titles)
    assert labels[:2] == [("More", "Q&amp;A &lt;Agents&gt;"), ("Less", "Q&amp;A &lt;Agents&gt;")]
    assert len(labels[2][1]) <= 60 and labels[2][1].startswith("Kestrel Kestrel")
    view = long_view(100)
    view = dataclasses.replace(view, items=tuple(dataclasses.replace(i, **links) for i in view.items))
    html = renderer.render(view).html
    assert 0 < len(re.findall(r'aria-label="More like this: A Very Long Title', html)) < 100  # full cards
    assert re.search(r"<h2 [^>]*>More new papers</h2>", html)


@pytest.mark.parametrize("count", [70, 80, 100])
def test_feedback_links_of_real_length_keep_a_big_digest_under_gmail_s_clip(
    renderer: Renderer, count: int
) -> None:
    """Each card's labelled "more/less like this" links, with tokens as long as real ones (95
    characters) and titles full of characters HTML escapes: 80 papers made 106,998 bytes, clipped."""
    token = "A" * 72 + "." + "B" * 22
    links = {
        "more_url": f"https://papers.example.org/feedback/more/{token}",
        "less_url": f"https://papers.example.org/feedback/less/{token}",
    }
    title = 'Q&A "Agents" <Tools> & More: ' * 3
    view = long_view(count)
    items = tuple(dataclasses.replace(i, title=title, **links) for i in view.items)
    html = renderer.render(dataclasses.replace(view, items=items)).html
    assert len(html.encode("utf-8")) < GMAIL_CLIP_BYTES
    assert html.count(f"/feedback/more/{token}") == count


def test_a_right_to_left_title_keeps_its_number_on_the_left_in_the_text_part(renderer: Renderer) -> None:
    view = dataclasses.replace(golden_view(), items=(item(1, "מודל שפה גדול לתרגום"),))
    """A plain-text viewer took the line's direction from its first letter: "1." showed at the right."""
    assert "\n\u200e1. מודל שפה גדול לתרגום\n" in renderer.render(view).text
    long = dataclasses.replace(golden_view(), items=(item(1, "מודל שפה גדול לתרגום " * 6),))
    lines = renderer.render(long).text.split("\n\u200e1. ", 1)[1].splitlines()
    assert (
        lines[1].startswith("\u200e   ") and "גדול" in lines[1]
    )  # a wrapped line: its indent at the left too


def test_authors_led_by_a_right_to_left_name_keep_their_order_in_the_text_part(renderer: Renderer) -> None:
    """Its first letter Arabic, the line read right to left: "et al." at the left, the indent at the right."""
    authors = ("محمد العربي", "José Müller", "Li Wei", "Ana")
    view = dataclasses.replace(golden_view(), items=(item(1, "A title", authors=authors),))
    assert "\n\u200e   محمد العربي, José Müller, Li Wei et al.\n" in renderer.render(view).text


def test_greeting_and_counts_follow_the_view(renderer: Renderer) -> None:
    view = golden_view()
    anonymous = DigestView("", view.subscriber_email, view.items[:1], view.date, "mailto:x@example.org", "",
                           "Trending Papers")  # fmt: skip
    text = renderer.render(anonymous).text
    assert "Hi " not in text
    assert "1 new paper matched your interests." in text
    assert "seen in 2 listings" in text
    assert "\n-- \nUnsubscribe: mailto:x@example.org\n" in text  # signature separator, then the link


def test_render_returns_subject_for_the_items(renderer: Renderer) -> None:
    view = golden_view()
    assert renderer.render(view).subject == subject_for(view.items)


@pytest.mark.parametrize(
    ("titles", "expected"),
    [
        ([], "No new papers"),
        (["Kestrel"], "1 new paper: Kestrel"),
        (["Kestrel", "B", "C"], "3 new papers: Kestrel and 2 more"),
        (["Line\nbreak\r\nin title", "B"], "2 new papers: Line break in title and 1 more"),
    ],
)
def test_subject_for_counts_and_names_the_top_paper(titles: list[str], expected: str) -> None:
    assert subject_for([item(n, t) for n, t in enumerate(titles)]) == expected


def test_subject_for_clips_a_long_title_at_a_word() -> None:
    title = "Kestrel: Sparse Message Passing on Graphs with Millions of Nodes and Many Other Long Words Too"
    subject = subject_for([item(1, title), item(2, "B"), item(3, "C")])
    assert (
        subject
        == "3 new papers: Kestrel: Sparse Message Passing on Graphs with Millions of Nodes… and 2 more"
    )
    assert len(subject) <= 90


def test_the_text_part_says_why_once() -> None:
    text = Renderer(PACKAGE_TEMPLATES).render(golden_view()).text
    assert "Why: matches:" not in text
    assert "   Matches: message passing, Kestrel\n" in text


def test_an_item_s_lines_stand_under_its_title_from_item_10_on_too() -> None:
    """Item 10's title wrapped 4 columns in and its other lines 3: they now share the title's column."""
    long = "A title long enough that it has to wrap onto a second line of the plain-text part"
    items = tuple(item(rank, f"{long} {rank}") for rank in range(1, 12))
    text = Renderer(PACKAGE_TEMPLATES).render(dataclasses.replace(golden_view(), items=items)).text
    for number in (9, 10, 11):
        block = text.split(f"\n{number}. ", 1)[1].split("\n\n", 2)
        lines = (block[0] + "\n" + block[1]).splitlines()[1:]  # title continuation, url, authors, excerpt
        pad = len(f"{number}. ")
        assert len(lines) >= 4 and all(re.match(rf" {{{pad}}}\S", line) for line in lines), lines


def test_a_right_to_left_name_and_title_keep_their_place(renderer: Renderer) -> None:
    """'Hi <Arabic name>, 10 new papers' showed the count before the name, in both parts."""
    name, title = "محمد عبد الله", "نموذج لغوي كبير"
    view = dataclasses.replace(golden_view(), subscriber_name=name)
    view = dataclasses.replace(view, items=(dataclasses.replace(view.items[0], title=title), *view.items[1:]))
    out = renderer.render(view)
    assert f"Hi <bdi>{name}</bdi>, 3 new papers" in out.html
    assert f"Hi \u2068{name}\u2069, 3 new papers" in out.text
    assert re.search(rf'<h2 class="nl-title" dir="auto"[^>]*><a [^>]*>{title}</a>', out.html)
    latin = renderer.render(golden_view()).text
    assert "Hi Ada, 3 new papers" in latin  # nothing added where nothing turns
