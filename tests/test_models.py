"""Keys that identify a paper across listings: normalised titles and abstracts."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from newsletter.models import abstract_key, normalize_title


@pytest.mark.parametrize("mark", ["\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"])
def test_a_format_character_inside_a_word_leaves_the_title_key_as_it_was(mark: str) -> None:
    """A soft hyphen or a zero-width space (copied from a PDF or a web page) split the word in two: the
    same title was another paper, new again and sent twice."""
    assert normalize_title(f"Trans{mark}formers for{mark} All{mark}") == "transformers for all"


def test_a_format_character_leaves_the_abstract_key_as_it_was() -> None:
    abstract = " ".join(f"word{i}" for i in range(45))
    assert abstract_key(abstract.replace("word1 ", "wo\u00adrd1 ")) == abstract_key(abstract)


def test_every_format_character_is_dropped() -> None:
    """The characters dropped are listed (a regular expression is fast); none of this Python's is left."""
    marks = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(c) == "Cf")
    assert normalize_title(f"a{marks}b") == "ab"
    dropped = [c for c in map(chr, range(sys.maxunicode + 1)) if normalize_title(f"a{c}b") == "ab"]
    assert {unicodedata.category(c) for c in dropped} <= {"Cf", "Cn"}  # format, or unassigned here


def test_ascii_text_is_normalised_as_the_unicode_path_does() -> None:
    """ASCII text takes a faster path (str.translate, no regular expressions): its keys must not move,
    or every stored paper would be new again."""
    import re

    def by_regex(text: str) -> str:
        return re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()

    ascii_chars = "".join(map(chr, range(128)))
    samples = [ascii_chars, ascii_chars[::-1], "  A__b--C\t\nd  ", "_x_", "", " ", "GPT-4o: 3D-GS (v2)!"]
    samples += [f"a{c}{d}b" for c in ascii_chars for d in ascii_chars[::7]]
    assert [normalize_title(s) for s in samples] == [by_regex(s) for s in samples]
