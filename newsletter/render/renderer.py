"""Renderer: MJML compiled once into a Jinja template, then one cheap Jinja render per digest."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    FunctionLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
)

from newsletter.config import PACKAGE_TEMPLATES
from newsletter.errors import RenderError
from newsletter.models import RenderedDigest
from newsletter.render import helpers
from newsletter.render.mjml_compile import IncludeLoader, compile_mjml, refuse_unsafe_links
from newsletter.render.views import DigestView, ItemView

logger = logging.getLogger(__name__)

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"
INCLUDE_HINT = "the MJML template takes no Jinja include, import or extends; use <mj-include path=...>"
HTML_BUDGET = 100_000  # bytes; Gmail clips a message whose HTML passes ~102 KB


# Each filter fails by itself on an undefined argument (StrictUndefined raises on any use: hashing for
# the cached ones, len(), iteration), with the error naming the variable; tests check every filter.
# No checking wrapper per call: templates call filters ~80 times per digest and it cost ~0.1 ms.
FILTERS: dict[str, Callable[..., Any]] = {
    "authors_short": helpers.authors_short,
    "clip": helpers.clip,
    "count": helpers.count,
    "excerpt": helpers.excerpt,
    "isolated": helpers.isolated,
    "left_to_right": helpers.left_to_right,
    "long_date": helpers.long_date,
    "one_line": helpers.one_line,
    "safe_links": helpers.safe_links,
    "safe_url": helpers.safe_url,
    "wrap": helpers.wrap,
}
# What a template's own code can raise (1/0, a template that includes itself, a bad filter argument).
_RUNTIME_ERRORS = (
    TemplateError,
    TypeError,
    ValueError,
    AttributeError,
    LookupError,
    ArithmeticError,
    RecursionError,
)


class Renderer:
    """Loads and compiles the templates once; ``render`` is then pure Jinja (well under 1 ms).

    A template missing from ``templates_dir`` falls back to the bundled one. Every problem (MJML that
    does not compile, Jinja syntax, an unknown variable) is a RenderError naming file and line, raised
    here rather than in the middle of a run: __init__ renders a sample digest to find them.
    """

    def __init__(self, templates_dir: Path) -> None:
        started = perf_counter()
        html_path = find_template(templates_dir, HTML_TEMPLATE)
        text_path = find_template(templates_dir, TEXT_TEMPLATE)
        self._html = _Loaded(html_path, load_html_template(html_path))
        self._text = _Loaded(text_path, load_text_template(text_path))
        self.compile_seconds = perf_counter() - started
        logger.debug("compiled %s in %.1f ms", display_path(html_path), self.compile_seconds * 1000)
        for view in sample_views():
            self.render(view)
            self._html.run({"view": view, "subject": "", "full_items": 0})  # the compact list (big digests)

    def left_out(self, *, feedback: bool) -> list[str]:
        """The links a template leaves out of the sample digest: the unsubscribe link (each part), and
        with ``feedback`` the 'more/less like this' links (a template copied before they existed)."""
        view = sample_views()[0]
        rendered = self.render(view)
        wanted = [("unsubscribe link", "view.unsubscribe_url", view.unsubscribe_url)]
        if feedback:
            wanted.append(("'more/less like this' links", "item.more_url", view.items[0].more_url))
        return [
            f"{display_path(loaded.path)}: its email has no {what} ({{{{ {name} }}}} is not used)"
            for loaded, part in ((self._html, rendered.html), (self._text, rendered.text))
            for what, name, url in wanted
            if url not in part
        ]

    def render(self, view: DigestView) -> RenderedDigest:
        """Subject, HTML and text. Past HTML_BUDGET bytes, the last papers become a compact list (title,
        link, feedback links) in both parts."""
        subject = helpers.subject_for(view.items)
        context = {"view": view, "subject": subject, "full_items": len(view.items)}
        html = self._html.run(context)
        if len(html.encode()) > HTML_BUDGET:
            html = self._fit_budget(context, len(html.encode()))  # sets full_items
        text = self._text.run(context)  # as the HTML: a part three times the other's words looks like spam
        return RenderedDigest(subject=subject, html=html, text=text)

    def _fit_budget(self, context: dict[str, Any], all_full: int) -> str:
        """Show as many papers in full as fit: estimate from the all-full and all-compact sizes."""
        count = context["full_items"]
        context["full_items"] = 0
        html = self._html.run(context)
        none_full = len(html.encode())
        if none_full > HTML_BUDGET:
            logger.warning("digest of %d papers is %d bytes even compact; Gmail clips it", count, none_full)
            return html
        guess = count * (HTML_BUDGET - none_full) // (all_full - none_full)
        for full in range(guess, -1, -1):
            context["full_items"] = full
            html = self._html.run(context)
            if len(html.encode()) <= HTML_BUDGET:
                break
        return html


class _Loaded:
    """A compiled Jinja template and the file it came from, for error messages."""

    def __init__(self, path: Path, template: Template) -> None:
        self.path = path
        self.template = template

    def run(self, context: dict[str, Any]) -> str:
        try:
            return self.template.render(context)
        except _RUNTIME_ERRORS as exc:
            path, line = template_line(exc, self.path)
            at = f"{display_path(path)}:{line}" if line else display_path(path)
            raise RenderError(f"{at}: {helpers.one_line(str(exc))}") from exc


def find_template(templates_dir: Path, name: str) -> Path:
    """``templates_dir/name``, else the bundled template of that name (the folder itself must exist)."""
    if not templates_dir.is_dir():
        raise RenderError(f"{display_path(templates_dir)}: templates folder not found")
    for folder in (templates_dir, PACKAGE_TEMPLATES):
        if (folder / name).is_file():
            return inside(folder, folder / name)
    raise RenderError(f"{display_path(templates_dir / name)}: template not found")


def load_html_template(path: Path) -> Template:
    """Read the MJML+Jinja file, check its Jinja, compile the MJML, and build the Jinja template."""
    where = display_path(path)
    source = read_template(path)
    env = html_environment(path, "")
    parse_or_raise(env, source, where)
    html = compile_mjml(source, where, include_loader=include_loader(path.parent))
    refuse_unsafe_links(html, source, where)
    env = html_environment(path, html)
    try:
        return env.get_template(path.name)
    except TemplateSyntaxError as exc:
        raise RenderError(f"{where}:{exc.lineno}: after MJML: {exc.message}") from exc


def load_text_template(path: Path) -> Template:
    env = text_environment(path.parent)
    try:
        return env.get_template(path.name)
    except TemplateSyntaxError as exc:
        raise RenderError(f"{display_path(path)}:{exc.lineno}: {syntax_message(env, exc)}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from exc


def html_environment(path: Path, compiled: str) -> Environment:
    """Autoescaping, strict Jinja environment whose only template is the compiled HTML."""

    def load(name: str) -> tuple[str, str, Callable[[], bool]]:
        if name != path.name:  # Jinja's message was the bare name, for a file in the folder too
            raise TemplateNotFound(name, f"{{% include/import/extends '{name}' %}}: {INCLUDE_HINT}")
        return (compiled, str(path), lambda: True)

    env = Environment(loader=FunctionLoader(load), autoescape=True, undefined=StrictUndefined)
    env.filters.update(FILTERS)
    return env


def text_environment(folder: Path) -> Environment:
    """Strict Jinja environment for the plain-text part: no escaping, data is only ever a value."""
    env = Environment(
        loader=_ConfinedLoader([folder, PACKAGE_TEMPLATES], encoding="utf-8-sig"),  # no BOM in the text
        autoescape=False,  # noqa: S701 - text/plain output, never parsed as HTML
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    return env


class _ConfinedLoader(FileSystemLoader):
    """FileSystemLoader that refuses a file resolving outside its folders (a symlink to /etc/passwd)."""

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        path = Path(filename)
        folder = next(Path(p) for p in self.searchpath if path.is_relative_to(p))
        inside(folder, path)
        return source, filename, uptodate


def inside(folder: Path, path: Path) -> Path:
    """``path``, unless it resolves (through symlinks) outside ``folder``: then a RenderError naming it."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise RenderError(
            f"{display_path(path)}: resolves outside the templates folder {display_path(folder)}",
            hint="templates may only use files inside their folder (a symbolic link may not leave it)",
        )
    return path


def parse_or_raise(env: Environment, source: str, where: str) -> None:
    try:
        env.parse(source)
    except TemplateSyntaxError as exc:
        raise RenderError(f"{where}:{exc.lineno}: {syntax_message(env, exc)}") from exc


_INNERMOST = re.compile(r"innermost block that needs to be closed is '(\w+)'")
_BLOCKS = frozenset({"for", "if", "block", "macro", "call", "filter", "with", "set", "autoescape", "trans"})


def syntax_message(env: Environment, exc: TemplateSyntaxError) -> str:
    """Jinja's message, plus the line of the block left open: Jinja names the line where it noticed (the
    end of the file, or a later block's end), not the '{% if %}' that lacks its '{% endif %}'."""
    wanted = _INNERMOST.search(exc.message or "")
    opened = open_block(env, exc.source or "", exc.lineno) if wanted else None
    if wanted and opened and opened[0] == wanted.group(1):
        return f"{exc.message} (the '{opened[0]}' opened at line {opened[1]})"
    return exc.message or ""


def open_block(env: Environment, source: str, lineno: int) -> tuple[str, int] | None:
    """(name, line) of the innermost block still open at ``lineno`` or at the first mismatched end."""
    stack: list[tuple[str, int]] = []
    for tag, opens, line in _statements(env, source):
        if line > lineno or (tag.startswith("end") and (not stack or stack[-1][0] != tag[3:])):
            break
        if tag.startswith("end"):
            stack.pop()
        elif opens:
            stack.append((tag, line))
    return stack[-1] if stack else None


def _statements(env: Environment, source: str) -> Iterator[tuple[str, bool, int]]:
    """(tag, whether it opens a block, line) of each {% ... %} ('set x = 1' opens none)."""
    try:
        tokens = [t for t in env.lex(source) if t[1] != "whitespace"]
    except TemplateSyntaxError:
        return
    for i, (line, kind, _) in enumerate(tokens[:-1]):
        if kind == "block_begin" and tokens[i + 1][1] == "name":
            tag = tokens[i + 1][2]
            rest = itertools.takewhile(lambda t: t[1] != "block_end", tokens[i + 2 :])
            yield tag, tag in _BLOCKS and (tag != "set" or all(t[2] != "=" for t in rest)), line


def read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from exc


def unreadable(path: Path, exc: OSError | UnicodeDecodeError) -> RenderError:
    """'cannot read template'; for a byte that is not UTF-8 (an editor saving Latin-1), with its line."""
    if not isinstance(exc, UnicodeDecodeError):
        return RenderError(f"{display_path(path)}: cannot read template: {exc}")
    line = exc.object[: exc.start].count(b"\n") + 1
    byte = exc.object[exc.start : exc.start + 1].hex()
    return RenderError(
        f"{display_path(path)}:{line}: cannot read template: byte 0x{byte} is not UTF-8",
        hint="save the template as UTF-8",
    )


def include_loader(folder: Path) -> IncludeLoader:
    """Loader for <mj-include path="...">: files inside the templates folder only."""
    root = folder.resolve()

    def load(path: str) -> str:
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise ValueError(f"mj-include outside the templates folder: {path}")
        return target.read_text(encoding="utf-8-sig")

    return load


def template_line(exc: BaseException, path: Path) -> tuple[Path, int | None]:
    """Where in the templates an error is: the file and line of a syntax error (an included template's
    too), else the innermost frame of a template beside ``path`` (Jinja rewrites frames to template
    lines), else ``path`` without a line."""
    if isinstance(exc, TemplateSyntaxError) and exc.filename:
        return Path(exc.filename), exc.lineno
    where: tuple[Path, int | None] = (path, None)
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name == str(path) or (Path(name).parent == path.parent and not name.endswith(".py")):
            where = (Path(name), tb.tb_lineno)
        tb = tb.tb_next
    return where


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (as given when there is no
    working directory: cron's or a daemon's folder deleted under it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def sample_views(now: datetime | None = None) -> tuple[DigestView, ...]:
    """Digests that exercise every branch of the bundled templates (used to check a template)."""
    date = now or datetime(2024, 3, 12, 7, 0, tzinfo=UTC)
    items = (
        ItemView(
            title="Kestrel: Sparse Message Passing on Graphs with Millions of Nodes",
            url=helpers.paper_url("2403.10001", ""),
            excerpt="Graph networks pass dense messages. Kestrel sends them only along sampled edges.",
            why="matches: Kestrel, message passing",
            rank=1,
            score=0.91,
            authors=("Lena Park", "Omar Haddad", "A. N. Other", "Someone Else"),
            arxiv_id="2403.10001",
            times_seen=3,
            links=helpers.paper_links(
                "2403.10001",
                hf_page="https://huggingface.co/papers/2403.10001",
                code="https://github.com/example-lab/kestrel",
                stars=12000,
                project="https://example.org/kestrel",
            ),
            upvotes=143,
            comments=7,
            organization="Carnegie Mellon University",
            more_url="https://example.org/feedback/more/t",
            less_url="https://example.org/feedback/less/t",
        ),
        ItemView("A paper with no arXiv id", helpers.paper_url(None, "A paper"), "", "", 7, 0.2),
    )
    full = DigestView("Ada", "ada@example.org", items, date, "mailto:u@example.org", "Note.", "Papers")
    bare = DigestView("", "b@example.org", items[1:], date, "https://example.org/u", "", "Papers")
    return full, bare
