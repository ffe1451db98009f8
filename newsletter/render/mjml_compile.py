"""Compile an MJML template that contains Jinja into a Jinja HTML template, once.

MJML (via mjml-python / MRML) treats the Jinja code as text, so it survives into the HTML. Two
things are added on top of ``mjml2html``:

* every Jinja fragment of the source must come out unchanged; MRML silently drops text in some
  places (e.g. attributes it parses as numbers), and that is reported with the source line;
* the HTML puts most of the body on one line, so empty Jinja comments holding newlines are inserted
  before fragments: Jinja's line numbers in the compiled template then follow the ``.mjml.j2`` file,
  and a runtime error can name the line a person has to edit.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Protocol

from mjml import mjml2html

from newsletter.errors import RenderError
from newsletter.render.helpers import safe_url


class IncludeLoader(Protocol):
    def __call__(self, path: str) -> str: ...


_MJML_TAG = re.compile(r"<(mj-[\w-]+)")
_JINJA = re.compile(r"\{#.*?#\}|\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_POSITION = re.compile(r"at position (\d+):")
# href and src themselves: not data-src (a script's lazy image) nor data-href, no link a mail client follows
_LINK = re.compile(r"""(?<![\w-])(?:href|src)\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
# written by a person, not filled in from a dump: a phone link, an image attached or inline
_WRITTEN_SCHEMES = re.compile(r"(?:tel|sms|cid):|data:image/(?:png|gif|jpeg|webp);", re.IGNORECASE)
_TAG = re.compile(
    r"<(?P<close>/?)(?P<name>[A-Za-z][\w:.-]*)"
    r"(?:\s+[^\s\"'=<>/]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'))?)*\s*(?P<selfclose>/?)>"
)
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input",
    "link", "meta", "param", "source", "track", "wbr",
})  # fmt: skip
MJML_HINT = (
    "keep Jinja inside <mj-text>/<mj-raw> content or in quoted attribute values, and write "
    "'a is lt b' rather than 'a < b'"
)


@dataclass(frozen=True, slots=True)
class Fragment:
    code: str  # whitespace-normalised, for comparing source and output
    raw: str
    start: int
    line: int


def compile_mjml(source: str, where: str, include_loader: IncludeLoader | None = None) -> str:
    """MJML+Jinja ``source`` -> Jinja HTML source; ``where`` names the file in error messages."""
    try:
        html = mjml2html(source, disable_comments=True, fonts={}, include_loader=include_loader)
    except (ValueError, RuntimeError, OSError) as exc:
        line, problem = locate_problem(source, str(exc))
        at = f"{where}:{line}" if line else where
        raise RenderError(f"{at}: MJML: {problem}", hint=MJML_HINT) from exc
    unknown = _MJML_TAG.search(html)  # MRML passes an element it does not know through as text
    if unknown:
        tag = unknown.group(1)
        found = source.find(f"<{tag}")
        line = source.count("\n", 0, found) + 1
        at = f"{where}:{line}" if found >= 0 else where
        raise RenderError(f"{at}: MJML: unknown element <{tag}>", hint=MJML_HINT)
    if "{% raw" in source:
        return html
    out = fragments(html)
    return pad_lines(html, out, map_lines(fragments(source, strip_html_comments=True), out, where))


def refuse_unsafe_links(html: str, source: str, where: str) -> None:
    """RenderError for a link written in the template that is not absolute https, http or mailto: a
    'javascript:' one, or a relative '/about' or 'www.example.org' that every mail client breaks. Links
    Jinja fills in are the ``safe_url`` filter's; a '#' anchor, a 'tel:' link, a 'cid:' or 'data:' image
    and what a Jinja comment holds (never sent) are left alone."""
    for match in _LINK.finditer(_JINJA_COMMENT.sub("", html)):
        url = match.group(1) if match.group(1) is not None else match.group(2)
        if not url or url.startswith("#") or "{{" in url or "{%" in url or _written_safe(url):
            continue
        found = _written_at(source, url)
        at = f"{where}:{line_of(source, found)}" if found >= 0 else where
        raise RenderError(
            f"{at}: link {url!r} is not an absolute https, http or mailto URL",
            hint="write it in full ('https://example.org/about'): a mail client has no page to resolve it by",
        )


def _written_safe(url: str) -> bool:
    return safe_url(url) != "#" or bool(_WRITTEN_SCHEMES.match(url.strip()))


def _written_at(source: str, url: str) -> int:
    """Where ``url`` is written as an attribute's value (a bare find took '/about' in an earlier
    'https://example.org/about' for it, and named that line); else where it first occurs."""
    quoted = re.search(rf"""=\s*(["']){re.escape(url)}\1""", source)
    return quoted.start() if quoted else source.find(url)


def fragments(text: str, *, strip_html_comments: bool = False) -> list[Fragment]:
    """Jinja expressions and statements in ``text`` (Jinja comments skipped), with their lines."""
    if strip_html_comments:  # MRML drops HTML comments (disable_comments); keep line numbers
        text = _HTML_COMMENT.sub(lambda m: _blank(m.group()), text)
    found: list[Fragment] = []
    line, seen = 1, 0
    for match in _JINJA.finditer(text):
        line += text.count("\n", seen, match.start())
        seen = match.start()
        if not match.group().startswith("{#"):
            found.append(Fragment(" ".join(match.group().split()), match.group(), match.start(), line))
    return found


def _blank(text: str) -> str:
    return "\n" * text.count("\n")


def map_lines(source: list[Fragment], output: list[Fragment], where: str) -> list[int]:
    """The source line of each output fragment; RenderError when MJML lost or changed one."""
    out_codes = {f.code for f in output}
    for lost in (f for f in source if f.code not in out_codes):
        raise RenderError(f"{where}:{lost.line}: MJML dropped or changed {lost.raw!r}", hint=MJML_HINT)
    matcher = difflib.SequenceMatcher(None, [f.code for f in source], [f.code for f in output], False)
    first_line = {f.code: f.line for f in reversed(source)}
    lines: list[int] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            lines.extend(f.line for f in source[i1:i2])
        else:  # moved (head parts), copied (mj-title into aria-label) or from an mj-include
            for frag in output[j1:j2]:
                lines.append(first_line.get(frag.code, lines[-1] if lines else 1))
    return lines


def pad_lines(html: str, output: list[Fragment], lines: list[int]) -> str:
    """Insert newline-only Jinja comments so each fragment sits on (at least) its source line."""
    parts: list[str] = []
    pos, line = 0, 1
    head_end = max(html.find("<body"), 0)
    for frag, target in zip(output, lines, strict=True):
        split = min(max(head_end, pos), frag.start)  # head whitespace is insignificant: shrink it
        chunk = _fit(html[pos:split], target - line) + html[split : frag.start]
        parts.append(chunk)
        line += chunk.count("\n")
        if target > line:
            dash = "-" if frag.raw[2:3] == "-" else ""  # keep "{%-" whitespace control working
            parts.append("{#" + dash + "\n" * (target - line) + "#}")
            line = target
        parts.append(frag.raw)
        line += frag.raw.count("\n")
        pos = frag.start + len(frag.raw)
    parts.append(html[pos:])
    return "".join(parts)


def _fit(chunk: str, room: int) -> str:
    """``chunk`` with the newlines beyond the first ``room`` turned into spaces."""
    pieces = chunk.split("\n")
    keep = max(room, 0) + 1
    if len(pieces) <= keep:
        return chunk
    return "\n".join(pieces[:keep]) + " " + " ".join(pieces[keep:])


def locate_problem(source: str, message: str) -> tuple[int | None, str]:
    """Best guess at the line MRML choked on and why: our own tag scan, then MRML's byte position."""
    found = scan_tags(source)
    if found is not None:
        return line_of(source, found[0]), found[1]
    match = _POSITION.search(message)
    if match:
        prefix = source.encode()[: int(match.group(1))].decode(errors="ignore")
        return prefix.count("\n") + 1, message
    return None, message


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def scan_tags(source: str) -> tuple[int, str] | None:
    """(offset, problem) of the first malformed, mismatched or unclosed tag or stray '<', else None."""
    stack: list[tuple[str, int]] = []
    pos = 0
    while (lt := source.find("<", pos)) != -1:
        if source.startswith("<!", lt):
            end = source.find("-->" if source.startswith("<!--", lt) else ">", lt)
            if end == -1:
                return lt, "comment or declaration never closed"
            pos = end + 1
            continue
        tag = _TAG.match(source, lt)
        if tag is None:
            return lt, "malformed tag or a stray '<' (attribute values need quotes)"
        problem = _balance(stack, tag, source)
        if problem:
            return lt, problem
        pos = tag.end()
    if stack:
        return stack[-1][1], f"<{stack[-1][0]}> is never closed"
    return None


def _balance(stack: list[tuple[str, int]], tag: re.Match[str], source: str) -> str | None:
    """Push or pop ``tag``; a description of the problem when it closes the wrong element."""
    name = tag.group("name").lower()
    if not tag.group("close"):
        if not tag.group("selfclose") and name not in _VOID:
            stack.append((name, tag.start()))
        return None
    if not stack:
        return f"</{name}> closes nothing"
    if stack[-1][0] != name:
        open_name, offset = stack[-1]
        return f"</{name}> found while <{open_name}> (line {line_of(source, offset)}) is still open"
    stack.pop()
    return None
