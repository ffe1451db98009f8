"""pydantic's validation errors in a person's words, for settings and the subscribers file."""

from __future__ import annotations

import re
from typing import Any

_UNION_MEMBER = re.compile(r"[-\[]")
# pydantic's words for a type, in a settings or subscribers file's terms
_WORDS = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "dict_type": "expected a mapping",
    "too_short": "needs at least one entry",
}
_PREFIXES = re.compile(r"^(Value error|Assertion failed), ")


def field_path(err: Any) -> str:
    """The field's path, without the union member pydantic tried ('connections.constrained-int')."""
    return ".".join(str(p) for p in err["loc"] if not _UNION_MEMBER.search(str(p))) or "value"


def plain_words(err: Any) -> str:
    """One problem in plain words: no 'Value error,', no 'valid tuple'."""
    if err["type"] in _WORDS:
        return _WORDS[err["type"]]
    message = _PREFIXES.sub("", str(err["msg"]))
    return message.replace("Input should be ", "should be ")
