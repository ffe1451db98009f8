"""A broken template override is a RenderError naming the file and line, raised when loading."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from jinja2 import Environment, StrictUndefined, UndefinedError

from newsletter.config import PACKAGE_TEMPLATES
from newsletter.errors import RenderError
from newsletter.render import HTML_TEMPLATE, TEXT_TEMPLATE, Renderer
from newsletter.render.mjml_compile import compile_mjml
from newsletter.render.renderer import FILTERS, display_path, open_block
from tests.test_render import golden_view


def override(tmp_path: Path, name: str, old: str, new: str) -> int:
    """Write the bundled template with ``old`` replaced by ``new``; the line ``new`` starts on."""
    source = (PACKAGE_TEMPLATES / name).read_text(encoding="utf-8")
    assert old in source
    broken = source.replace(old, new, 1)
    (tmp_path / name).write_text(broken, encoding="utf-8")
    return broken[: broken.index(new)].count("\n") + 1


def load_error(tmp_path: Path) -> RenderError:
    with pytest.raises(RenderError) as caught:
        Renderer(tmp_path)
    return caught.value


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("{% if item.excerpt %}", "{% if item.excerpt %", "unexpected '<'"),
        ("{% endfor %}", "{% endfro %}", "endfro"),
        ("{{ item.title | one_line }}", "{{ item.titel | one_line }}", "no attribute 'titel'"),
        ("{{ item.authors | authors_short }}", "{{ item.authors | authors_shrt }}", "No filter named"),
        ("<mj-title>{{ view.list_name }}", "<mj-title>{{ view.list_nam }}", "no attribute 'list_nam'"),
        (  # the compact list of a digest past the size budget: no sample reached it, every big one failed
            '{{ item.title | one_line }}</bdi></a> <span class="nl-muted" style="font-size:12px',
            '{{ item.titel | one_line }}</bdi></a> <span class="nl-muted" style="font-size:12px',
            "no attribute 'titel'",
        ),
    ],
)
def test_jinja_errors_in_mjml_name_file_and_line(tmp_path: Path, old: str, new: str, problem: str) -> None:
    line = override(tmp_path, HTML_TEMPLATE, old, new)
    error = load_error(tmp_path)
    assert str(error).startswith(f"{display_path(tmp_path / HTML_TEMPLATE)}:{line}: ")
    assert problem in str(error)


@pytest.mark.parametrize(
    ("old", "new", "shift", "problem"),
    [  # an unclosed <mj-text> is reported at the closing tag that does not match (the next line)
        ("</mj-text>\n      </mj-column>", "\n      </mj-column>", 1, "</mj-column> found while <mj-text>"),
        ("{% if item.times_seen > 1 %}", "{% if 1 < item.times_seen %}", 0, "stray '<'"),
        ('<mj-section padding="0px 12px">', "<mj-section padding=0>", 0, "need quotes"),
        (
            '<mj-column>\n        <mj-text css-class="nl-text">\n          <p',
            '<mj-colum>\n        <mj-text css-class="nl-text">\n          <p',
            0,
            "unknown element <mj-colum>",
        ),
    ],
)
def test_mjml_errors_name_file_and_line(tmp_path: Path, old: str, new: str, shift: int, problem: str) -> None:
    line = override(tmp_path, HTML_TEMPLATE, old, new) + shift
    error = load_error(tmp_path)
    assert str(error).startswith(f"{display_path(tmp_path / HTML_TEMPLATE)}:{line}: MJML: ")
    assert problem in str(error)
    assert error.hint


def test_jinja_that_mjml_drops_is_reported_with_its_line() -> None:
    source = '<mjml><mj-body>\n<mj-section><mj-column>\n<mj-image src="a.png" width="{{ w }}" />\n' \
        "</mj-column></mj-section></mj-body></mjml>"  # fmt: skip
    with pytest.raises(RenderError, match=r"^digest\.mjml\.j2:3: MJML dropped or changed '\{\{ w \}\}'"):
        compile_mjml(source, "digest.mjml.j2")


def test_text_template_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / TEXT_TEMPLATE).write_text("{{ view.list_name }}\n{% for item in view.items %}\n", "utf-8")
    assert str(load_error(tmp_path)).startswith(f"{display_path(tmp_path / TEXT_TEMPLATE)}:2: ")
    (tmp_path / TEXT_TEMPLATE).write_text("{{ view.list_name }}\n\n{{ view.nope }}\n", "utf-8")
    error = load_error(tmp_path)
    assert str(error).startswith(f"{display_path(tmp_path / TEXT_TEMPLATE)}:3: ")
    assert "nope" in str(error)


@pytest.mark.parametrize(
    ("part", "problem"), [("l1\n{% if %}\n", "Expected an expression"), ("l1\n{{ view.nope }}\n", "nope")]
)
def test_an_error_in_an_included_template_names_that_file_and_line(
    tmp_path: Path, part: str, problem: str
) -> None:
    """It named the include line of the template that included it."""
    (tmp_path / "part.j2").write_text(part, "utf-8")
    (tmp_path / TEXT_TEMPLATE).write_text("{{ view.list_name }}\n\n{% include 'part.j2' %}\n", "utf-8")
    error = str(load_error(tmp_path))
    assert error.startswith(f"{display_path(tmp_path / 'part.j2')}:2: ") and problem in error


def test_missing_templates_fall_back_to_the_bundled_ones(tmp_path: Path) -> None:
    (tmp_path / TEXT_TEMPLATE).write_text("Custom {{ view.list_name }}\n", "utf-8")
    renderer = Renderer(tmp_path)
    rendered = renderer.render(golden_view())
    assert rendered.text == "Custom Trending Papers\n"
    assert 'class="nl-title"' in rendered.html


def test_mj_include_cannot_leave_the_templates_folder(tmp_path: Path) -> None:
    (tmp_path / HTML_TEMPLATE).write_text(
        '<mjml><mj-body>\n<mj-include path="../secret.mjml" />\n</mj-body></mjml>', "utf-8"
    )
    (tmp_path.parent / "secret.mjml").write_text("<mj-section></mj-section>", "utf-8")
    error = load_error(tmp_path)
    assert str(error).startswith(f"{display_path(tmp_path / HTML_TEMPLATE)}:2: MJML: ")


def test_mj_include_loads_partials_from_the_templates_folder(tmp_path: Path) -> None:
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "footer.mjml").write_text(
        "<mj-section><mj-column><mj-text>Bye {{ view.list_name }}</mj-text></mj-column></mj-section>", "utf-8"
    )
    (tmp_path / HTML_TEMPLATE).write_text(
        '<mjml><mj-body>\n<mj-include path="partials/footer.mjml" />\n</mj-body></mjml>', "utf-8"
    )
    assert "Bye Trending Papers" in Renderer(tmp_path).render(golden_view()).html


def test_a_missing_templates_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="nowhere: templates folder not found"):
        Renderer(tmp_path / "nowhere")


FILTER_ARGUMENTS = {  # a valid call of each filter; a filter added without an entry fails below
    "authors_short": (("Ada Lovelace", "Alan Turing"),),
    "clip": ("A title that is long enough to clip", 12),
    "count": (12345,),
    "excerpt": ("First sentence. Second sentence.",),
    "isolated": ("محمد",),
    "left_to_right": ("1. מודל",),
    "long_date": (datetime(2024, 3, 12, tzinfo=UTC),),
    "one_line": ("two\nlines",),
    "safe_links": ((("PDF", "https://arxiv.org/pdf/2312.00752"),),),
    "safe_url": ("https://example.org/",),
    "wrap": ("words to wrap", 72, "   "),
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_filter_fails_on_an_undefined_argument_naming_it(name: str) -> None:
    """Filters have no checking wrapper: each must raise UndefinedError on its own."""
    arguments = FILTER_ARGUMENTS[name]
    FILTERS[name](*arguments)  # defined arguments: no error
    for position in range(len(arguments)):
        given = list(arguments)
        given[position] = StrictUndefined(name="missing_variable")
        with pytest.raises(UndefinedError, match="missing_variable"):
            FILTERS[name](*given)


@pytest.mark.parametrize("name", [TEXT_TEMPLATE, HTML_TEMPLATE])
def test_a_template_that_is_not_utf8_is_a_render_error_naming_the_line(tmp_path: Path, name: str) -> None:
    """An editor that saved a footer's 'é' as Latin-1: the byte's line, not its position in the file."""
    line = override(tmp_path, name, "{{ view.list_name }}", "{{ view.list_name }}\n")
    source = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(
        source.replace(b"{{ view.list_name }}\n", b"{{ view.list_name }}\ncaf\xe9", 1)
    )
    error = load_error(tmp_path)
    where = display_path(tmp_path / name)
    assert str(error).startswith(f"{where}:{line + 1}: cannot read template: byte 0xe9 is not UTF-8")


@pytest.mark.parametrize("name", [TEXT_TEMPLATE, HTML_TEMPLATE, "footer.mjml"])
def test_a_template_saved_with_a_byte_order_mark_renders_without_it(tmp_path: Path, name: str) -> None:
    """An editor on Windows that starts each file it saves as UTF-8 with U+FEFF."""
    html = (PACKAGE_TEMPLATES / HTML_TEMPLATE).read_text("utf-8")
    files = {
        TEXT_TEMPLATE: (PACKAGE_TEMPLATES / TEXT_TEMPLATE).read_text("utf-8"),
        HTML_TEMPLATE: html.replace("</mj-body>", '<mj-include path="footer.mjml" />\n</mj-body>'),
        "footer.mjml": "<mj-section><mj-column><mj-text>Bye</mj-text></mj-column></mj-section>",
    }
    for file, text in files.items():
        (tmp_path / file).write_text(("\ufeff" if file == name else "") + text, "utf-8")
    rendered = Renderer(tmp_path).render(golden_view())
    assert "\ufeff" not in rendered.text and "\ufeff" not in rendered.html and "Bye" in rendered.html


def test_a_template_that_includes_itself_is_a_render_error(tmp_path: Path) -> None:
    source = (PACKAGE_TEMPLATES / TEXT_TEMPLATE).read_text(encoding="utf-8")
    (tmp_path / TEXT_TEMPLATE).write_text(source + '{% include "digest.txt.j2" %}\n', encoding="utf-8")
    assert "recursion" in str(load_error(tmp_path))


def test_an_arithmetic_error_in_a_branch_the_samples_miss_fails_that_digest_only(tmp_path: Path) -> None:
    line = override(
        tmp_path, TEXT_TEMPLATE, "{% for", "{% if view.items | length > 2 %}{{ 1 / 0 }}{% endif %}{% for"
    )
    renderer = Renderer(tmp_path)  # the sample digests have fewer papers: the template loads
    with pytest.raises(RenderError) as caught:
        renderer.render(golden_view())
    assert str(caught.value).startswith(f"{display_path(tmp_path / TEXT_TEMPLATE)}:{line}: division by zero")


@pytest.mark.parametrize(
    ("link", "text_template"),
    [  # a file the text template includes, the text template itself, the MJML template itself
        ("passwd.txt", '{{ view.list_name }}\n{% include "passwd.txt" %}\n'),
        (TEXT_TEMPLATE, None),
        (HTML_TEMPLATE, None),
    ],
)
def test_a_template_linking_outside_the_folder_is_refused_naming_it(
    tmp_path: Path, link: str, text_template: str | None
) -> None:
    outside = tmp_path / "private.txt"
    outside.write_text("root:x:0:0:SECRET-LINE\n", "utf-8")
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / link).symlink_to(outside)
    if text_template is not None:
        (folder / TEXT_TEMPLATE).write_text(text_template, "utf-8")
    error = load_error(folder)
    assert str(error).startswith(f"{display_path(folder / link)}: resolves outside the templates folder")
    assert "SECRET-LINE" not in str(error)


def test_a_link_inside_the_templates_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "footer.txt").write_text("Bye {{ view.list_name }}\n", "utf-8")
    (tmp_path / "shared.txt").symlink_to(tmp_path / "footer.txt")
    (tmp_path / TEXT_TEMPLATE).write_text('{% include "shared.txt" %}', "utf-8")
    assert Renderer(tmp_path).render(golden_view()).text == "Bye Trending Papers\n"


@pytest.mark.parametrize(
    "link",
    [
        '<a href="javascript:alert(1)">Home</a>',
        '<a href="/about">About</a>',
        "<a href='www.example-lab.org'>Lab</a>",
        '<img src="logo.png" alt="Lab">',
    ],
)
def test_a_link_written_in_the_template_must_be_absolute_and_never_javascript(
    tmp_path: Path, link: str
) -> None:
    """Only links Jinja fills in went through safe_url: a footer's own 'javascript:' or relative link was
    sent as written (broken, or refused as suspicious, in every mail client)."""
    line = override(tmp_path, HTML_TEMPLATE, "Unsubscribe</a>", f"Unsubscribe</a>\n{link}")
    error = load_error(tmp_path)
    assert str(error).startswith(f"{display_path(tmp_path / HTML_TEMPLATE)}:{line + 1}: link ")
    assert "is not an absolute https, http or mailto URL" in str(error) and error.hint


def test_absolute_links_and_anchors_written_in_the_template_are_fine(tmp_path: Path) -> None:
    links = '<a href="https://example-lab.org/?a=1&amp;b=2">Lab</a> <a href="mailto:hi@example.org">Mail</a>'
    override(tmp_path, HTML_TEMPLATE, "Unsubscribe</a>", f'Unsubscribe</a> {links} <a href="#top">Top</a>')
    assert 'href="https://example-lab.org/?a=1&amp;b=2"' in Renderer(tmp_path).render(golden_view()).html


@pytest.mark.parametrize(
    ("name", "old", "new", "block"),
    [  # an '{% endif %}' deleted: Jinja stops at the card's '{% endfor %}', lines later
        (HTML_TEMPLATE, "{% endif %}\n          {% set links", "\n          {% set links", "if"),
        (TEXT_TEMPLATE, "{% endfor %}\n\n-- ", "\n\n-- ", "for"),  # stops at the end of the file
    ],
)
def test_a_block_left_open_names_the_line_it_opened_at(
    tmp_path: Path, name: str, old: str, new: str, block: str
) -> None:
    override(tmp_path, name, old, new)
    source = (tmp_path / name).read_text(encoding="utf-8")
    opener = "{% if item.authors or item.organization %}" if block == "if" else "{% for item in view.items %}"
    line = source[: source.index(opener)].count("\n") + 1
    assert str(load_error(tmp_path)).endswith(f"(the '{block}' opened at line {line})")


def test_open_block_skips_closed_blocks_and_a_set_that_assigns() -> None:
    source = "{% for a in b %}\n{% set x %}1{% endset %}{% set y = 2 %}\n{% if c %}{% endif %}\n{% endif %}"
    assert open_block(Environment(), source, 4) == ("for", 1)


@pytest.mark.parametrize("tag", ["{% include 'footer.html' %}", "{% from 'footer.html' import bye %}"])
def test_a_jinja_include_in_the_mjml_template_says_to_use_mj_include(tmp_path: Path, tag: str) -> None:
    """The error was the bare name 'footer.html', though the file was there."""
    (tmp_path / "footer.html").write_text("<p>Bye</p>", "utf-8")
    line = override(tmp_path, HTML_TEMPLATE, "Unsubscribe</a>", f"Unsubscribe</a>\n{tag}")
    error = str(load_error(tmp_path))
    assert error.startswith(f"{display_path(tmp_path / HTML_TEMPLATE)}:{line + 1}: ")
    assert "'footer.html'" in error and "use <mj-include" in error


@pytest.mark.parametrize(
    "written",
    [
        '<a href="tel:+15551234567">Call us</a>',
        '<img src="cid:logo" alt="Lab">',
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="Lab">',
        '{# <a href="/old-archive">Archive</a> #}',
        '<img src="https://example-lab.org/logo.png" data-src="logo.png" alt="Lab">',
        '<a href="https://example-lab.org/" data-href="/about">Lab</a>',
    ],
)
def test_a_phone_link_an_inline_image_or_a_commented_link_is_not_refused(
    tmp_path: Path, written: str
) -> None:
    """A template that loaded before links were checked: a footer's phone link, a logo attached or
    inline, a link a Jinja comment keeps out of the email, a data- attribute (no link a reader follows);
    refusing it failed every run."""
    override(tmp_path, HTML_TEMPLATE, "Unsubscribe</a>", f"Unsubscribe</a>\n{written}")
    assert "/old-archive" not in Renderer(tmp_path).render(golden_view()).html  # a comment is never sent


def test_a_refused_link_names_its_own_line_not_a_longer_link_holding_it(tmp_path: Path) -> None:
    """'/about' was looked for as text, and found first in an earlier 'https://example-lab.org/about'."""
    links = '<a href="https://example-lab.org/about">Lab</a>\n<a href="/about">About</a>'
    line = override(tmp_path, HTML_TEMPLATE, "Unsubscribe</a>", f"Unsubscribe</a>\n{links}")
    assert str(load_error(tmp_path)).startswith(f"{display_path(tmp_path / HTML_TEMPLATE)}:{line + 2}: ")


def test_a_working_folder_deleted_under_a_run_is_no_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cron's `cd` folder (or a daemon's) removed, every path given absolute: each run stopped at
    the templates with `unexpected FileNotFoundError`, as the working folder could not be read."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    Renderer(PACKAGE_TEMPLATES)
    override(tmp_path, HTML_TEMPLATE, "Unsubscribe</a>", "Unsubscribe</a>\n{{ oops(")
    assert str(load_error(tmp_path)).startswith(f"{tmp_path / HTML_TEMPLATE}:")
