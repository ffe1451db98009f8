"""subscribers.yaml: read strictly (unknown keys, duplicate keys and addresses, YAML's traps refused), every
problem named with its line."""

from __future__ import annotations

import difflib
import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from newsletter.address import address_key
from newsletter.errors import ConfigError
from newsletter.files import NotUtf8, read_utf8
from newsletter.models import Subscriber
from newsletter.rank.text import STOPWORDS
from newsletter.wording import field_path, plain_words

log = logging.getLogger(__name__)
EXAMPLE = (Path(__file__).parent / "subscribers.example.yaml").resolve()  # in a clone, a link to its example


@dataclass(frozen=True)
class SubscriberList:
    path: Path
    subscribers: tuple[Subscriber, ...]
    # address key -> its entry's first problem, for each entry left out for a problem of its own (and
    # both entries of an address written twice): not taken out of the file, so its queued digests and
    # its state wait, untouched, for the entry to be fixed
    held: Mapping[str, str] = field(default_factory=dict)

    def find(self, email: str) -> Subscriber | None:
        return self._by_key.get(address_key(email))

    def holds(self, email: str) -> str | None:
        """The problem of the address's entry when it is left out for one (None: it is not)."""
        return self.held.get(address_key(email))

    @functools.cached_property
    def _by_key(self) -> dict[str, Subscriber]:
        """Each subscriber by address key (the first of any duplicates, as a scan would find)."""
        found: dict[str, Subscriber] = {}
        for sub in self.subscribers:
            found.setdefault(address_key(sub.email), sub)
        return found


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


# libyaml's parser when PyYAML was built with it (about 10x faster on a 100,000-subscriber file).
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# YAML 1.1 reads 7:30 as the base-60 integer 450 (and 1:20.5 as a float): in a file people write
# times of day in, such a scalar stays the text it is.
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
# Values the document may expand to through aliases (a "billion laughs" is 1.5 KB): a fixed allowance
# plus ten per character of the file, far above what any list of subscribers needs.
_EXPANSION_ALLOWANCE = 100_000
_EXPANSION_PER_CHAR = 10


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(_SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last, and reads
    colon-separated numbers (7:30) as text, not as YAML 1.1 base-60 numbers."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0] and ":" in value and _SEXAGESIMAL.fullmatch(value):
            return yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG
        return super().resolve(kind, value, implicit)


class _Lined(dict[Any, Any]):
    """A YAML mapping that remembers its line and each key's line (1-based), for error messages."""

    line: int = 0
    key_lines: dict[Any, int]


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> _Lined:
    """A merge key (``<<: *common``) brings its mapping's keys in under those written beside it, as YAML
    says; only a key written twice is a duplicate (a merged key's line is the mapping's). The merge is
    done here, on mappings built once: PyYAML before 6.0.4 copied every merged pair, repeats and all,
    so nested merges of aliases grew nine-fold a level before the expansion check could see them."""
    merged = _merged(loader, node)
    node.value = [(key, value) for key, value in node.value if key.tag != _MERGE_TAG]
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    mapping = _Lined({**merged, **loader.construct_mapping(node)})
    mapping.line, mapping.key_lines = node.start_mark.line + 1, seen
    return mapping


def _merged(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """The keys ``node``'s merge keys bring in; of a list of mappings, the first listed wins."""
    merged: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG:
            continue
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                why = "a merge key (<<) takes a mapping or a list of mappings"
                raise yaml.constructor.ConstructorError(None, None, why, source.start_mark)
            merged.update(loader.construct_object(source, deep=True))
    return merged


class _LinedList(list[Any]):
    """A YAML sequence that remembers each item's line (1-based), for an item that is no mapping."""

    item_lines: list[int]


def _construct_lined_sequence(loader: _UniqueKeyLoader, node: yaml.SequenceNode) -> _LinedList:
    items = _LinedList(loader.construct_sequence(node))
    items.item_lines = [item.start_mark.line + 1 for item in node.value]
    return items


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)
_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_lined_sequence)


class EntryError(ConfigError):
    """One subscriber's entry is invalid: a run goes on without it (see ``load_valid_subscribers``)."""


def load_subscribers(path: Path) -> SubscriberList:
    """Read and validate subscribers.yaml; the first problem is raised (``check`` lists them all)."""
    subscribers, problems = read_subscribers(path)
    if problems:
        more = len(problems) - 1
        hint = f"and {more} more; `newsletter check` lists every problem" if more else problems[0].hint
        raise ConfigError(problems[0].message, hint)
    return subscribers


def load_valid_subscribers(path: Path) -> tuple[SubscriberList, list[ConfigError]]:
    """The valid entries, and each bad entry's problem, for a run: one person's typo must not stop the
    list. A problem of every subscriber's (the file, ``defaults:``) is raised, as by ``load_subscribers``."""
    subscribers, problems = read_subscribers(path)
    whole = [problem for problem in problems if not isinstance(problem, EntryError)]
    if whole:
        raise ConfigError(whole[0].message, whole[0].hint or "`newsletter check` lists every problem")
    return subscribers, problems


def read_subscribers(path: Path) -> tuple[SubscriberList, list[ConfigError]]:
    """The valid subscribers and every problem found, each naming the file, line, subscriber and key.

    A problem with the file as a whole (not found, not YAML, no 'subscribers:' list) is raised.
    """
    defaults, entries = _top_level(path, _read_yaml(path))
    subscribers: list[Subscriber] = []
    problems = _bad_defaults(path, defaults)
    for key in [key for key in defaults if _key_problem(key)]:  # left out: each subscriber is checked
        del defaults[key]
    seen: set[str] = set()
    held: dict[str, str] = {}
    lines = getattr(entries, "item_lines", [])
    said: set[str] = set()  # a bad default is every subscriber's problem: said once
    for i, entry in enumerate(entries):
        result = _subscriber(path, i, defaults, entry, lines[i] if i < len(lines) else 0)
        if not isinstance(result, Subscriber):
            fresh = [p for p in result if p.message not in said]
            said.update(p.message for p in fresh)
            problems += fresh
            if (address := _readable_address(defaults, entry)) and result:
                held.setdefault(address, result[0].message)
        elif address_key(result.email) in seen:
            line = _alias_line(path, i) if any(e is entry for e in entries[:i]) else _line_of(entry, "email")
            problems.append(EntryError(f"{path}:{line}: subscriber {result.email}: duplicate email"))
            held.setdefault(address_key(result.email), problems[-1].message)
        else:
            seen.add(address_key(result.email))
            subscribers.append(result)
    valid = tuple(sub for sub in subscribers if address_key(sub.email) not in held)  # which entry is right?
    return SubscriberList(path, valid, held), problems


def _readable_address(defaults: dict[str, Any], entry: Any) -> str | None:
    """The address key of an entry that is invalid elsewhere, when its email is a valid address."""
    if not isinstance(entry, dict):
        return None
    try:
        only = Subscriber.model_validate({"email": {**defaults, **entry}.get("email"), "interests": ["-"]})
    except ValidationError:
        return None
    return address_key(only.email)


def _alias_line(path: Path, index: int) -> int:
    """The line of the subscribers list's item ``index`` as written: an alias (``- *ada``) has none of
    its own once loaded, since it is the anchored mapping itself (read again on this error only)."""
    depth, in_list, starts = 0, False, []
    previous: Any = None
    for event in yaml.parse(read_utf8(path), Loader=_SafeLoader):
        if in_list and depth == 2 and not isinstance(event, yaml.CollectionEndEvent):
            starts.append(event.start_mark.line + 1 if event.start_mark else 0)
        if isinstance(event, yaml.CollectionStartEvent):
            in_list = in_list or (depth == 1 and getattr(previous, "value", None) == "subscribers")
            depth += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            in_list = in_list and depth >= 2
        previous = event
    return starts[index] if index < len(starts) else 0


def _top_level(path: Path, data: Any) -> tuple[dict[str, Any], list[Any]]:
    """The ``defaults`` mapping and the ``subscribers`` list, or a ConfigError naming the line."""
    if not isinstance(data, dict) or "subscribers" not in data:
        raise ConfigError(f"{path}: expected a mapping with a 'subscribers:' list")
    unknown = sorted(map(str, set(data) - {"defaults", "subscribers"}))
    if unknown:
        raise ConfigError(f"{path}:{_line_of(data, unknown[0])}: unknown top-level key {unknown[0]!r}")
    defaults = data.get("defaults") or {}
    entries = data["subscribers"] or []
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}:{_line_of(data, 'defaults')}: 'defaults' must be a mapping")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}:{_line_of(data, 'subscribers')}: 'subscribers' must be a list")
    return defaults, entries


def _bad_defaults(path: Path, defaults: dict[Any, Any]) -> list[ConfigError]:
    """Keys of ``defaults`` that name no field: checked once, not once per subscriber they would join
    (one such key hid every subscriber's own problems)."""
    problems = ((key, _key_problem(key)) for key in defaults)
    return [
        ConfigError(f"{path}:{_line_of(defaults, key)}: defaults: {text}") for key, text in problems if text
    ]


def _key_problem(key: Any) -> str | None:
    """Why ``key`` names no subscriber field (None: it does)."""
    if not isinstance(key, str):  # YAML 1.1 reads on/off/yes/no as booleans
        return f"key {key!r} is not a name (quote it if it was meant as one)"
    if key not in Subscriber.model_fields:
        guess = _close_key(key)
        return f"unknown key '{key}'" + (f" (did you mean '{guess}'?)" if guess else "")
    return None


def _read_yaml(path: Path) -> Any:
    try:
        text = read_utf8(path)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: subscribers file not found",
            hint=f"copy the commented example {EXAMPLE} or set NEWSLETTER_SUBSCRIBERS",
        ) from None
    except NotUtf8 as exc:
        raise ConfigError(exc.at(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read subscribers file: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    _refuse_expansion(path, data, _EXPANSION_ALLOWANCE + _EXPANSION_PER_CHAR * len(text))
    return data


def _refuse_expansion(path: Path, data: Any, limit: int) -> None:
    """ConfigError when the document, with every alias expanded, holds more than ``limit`` values.

    Aliases load as shared objects, so loading is cheap; what reads the values (validation, error
    messages) would walk each copy. Counting stops at the limit: a bomb costs milliseconds.
    """
    stack, count = [data], 0
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            raise ConfigError(
                f"{path}: the document expands to more than {limit:,} values (YAML aliases)",
                hint="write each subscriber's values out, or use fewer nested aliases",
            )
        if isinstance(node, dict):
            stack += node.keys()
            stack += node.values()
        elif isinstance(node, list):
            stack += node


def _subscriber(
    path: Path, index: int, defaults: dict[str, Any], entry: Any, line: int = 0
) -> Subscriber | list[ConfigError]:
    label = f"subscriber #{index + 1}"
    if not isinstance(entry, dict):
        return [EntryError(f"{path}:{line}: {label}: expected a mapping (email: ..., interests: [...])")]
    email = entry.get("email", "no email")
    if isinstance(email, str):  # only text goes into the label, never a list to stringify
        label = f"{label} ({_CONTROL.sub(' ', email)[:320]})"  # the error stays one line
    odd = [key for key in entry if not isinstance(key, str)]
    if odd:
        return [EntryError(f"{path}:{_line_of(entry, k)}: {label}: {_key_problem(k)}") for k in odd]
    try:
        subscriber = Subscriber(**{**defaults, **entry})
    except ValidationError as exc:
        return [_problem(path, label, entry, defaults, key, text) for key, text in _subscriber_problems(exc)]
    for key in _unused_keys(entry, subscriber):
        _warn_once(
            f"{path}:{_line_of(entry, key)}: {label}: '{key}' has no effect with cadence {subscriber.cadence}"
        )
    for topic in _excluded_interests(subscriber):
        _warn_once(
            f"{path}:{_line_of(entry, 'exclude')}: {label}: '{topic}' is both an interest and excluded: "
            "every paper about it is kept out"
        )
    for interest, why in _unreadable_interests(subscriber):
        _warn_once(f"{path}:{_line_of(entry, 'interests')}: {label}: interest '{interest[:60]}' {why}")
    return subscriber


def _problem(
    path: Path, label: str, entry: dict[str, Any], defaults: dict[str, Any], key: str, text: str
) -> ConfigError:
    """A subscriber's problem at its key's line; a value it takes from ``defaults`` at that line (every
    subscriber's problem: not an EntryError)."""
    if key not in entry and key in defaults:
        return ConfigError(f"{path}:{_line_of(defaults, key)}: defaults: {text}")
    return EntryError(f"{path}:{_line_of(entry, key)}: {label}: {text}")


@functools.lru_cache(maxsize=256)
def _warn_once(message: str) -> None:
    """Once per process: `serve` and the daemon read the file again on every request or change."""
    log.warning("%s", message)


def _unused_keys(entry: dict[str, Any], subscriber: Subscriber) -> list[str]:
    """Keys the subscriber sets that its cadence ignores (``weekday`` is for weekly digests only,
    ``send_at`` for daily and weekly ones); a default that does not apply is no mistake."""
    ignored = {"daily": ("weekday",), "each-dump": ("weekday", "send_at")}.get(subscriber.cadence, ())
    return [key for key in ignored if entry.get(key) is not None]


def _excluded_interests(subscriber: Subscriber) -> list[str]:
    """Excluded topics that are also interests (case aside): the exclusion wins, so the interest
    silently brings nothing."""
    interests = {interest.casefold() for interest in subscriber.interests}
    return [topic for topic in subscriber.exclude if topic.casefold() in interests]


# An interest longer than this is a sentence: the model reads it as "a paper about papers" and the
# literal match never finds it (a 25-word sentence on quantizing LLMs matched none of 8 such papers).
_PHRASE_WORDS = 10
_LIST_MARKS = {",": "comma", ";": "semicolon"}  # "quantization, pruning, Mamba": a list in one interest


def _unreadable_interests(subscriber: Subscriber) -> list[tuple[str, str]]:
    """(interest, why) for each interest the rankers cannot match, which silently brings nothing: no
    Latin letter (the model reads English; an emoji is unknown to it), only common words, a list in one
    ("quantization, pruning, Mamba" is one phrase to the ranker), a sentence."""
    found = []
    for interest in subscriber.interests:
        words = len(interest.split())  # as written: "LLaMA-2-70B" is one word, not three
        if not any(c.isascii() and c.isalpha() for c in interest):
            found.append((interest, "has no English word: the ranker reads English, so it matches nothing"))
        elif all(_common(word) for word in re.findall(r"[^\W_]+", interest)):
            found.append((interest, "is only common words: it matches nothing; name a topic"))
        elif mark := next((name for c, name in _LIST_MARKS.items() if c in interest), None):
            found.append((interest, f"holds a {mark}: each interest counts on its own; list them separately"))
        elif words > _PHRASE_WORDS:
            found.append((interest, f"has {words} words: write short phrases, and sentences in 'about'"))
    return found


def _common(word: str) -> bool:
    """A stop word as written in prose: "OR" (operations research) and "IT" in capitals are acronyms."""
    return word.casefold() in STOPWORDS and not (len(word) > 1 and word.isupper())


def _line_of(entry: dict[str, Any], key: str) -> int:
    """The line of ``key`` in the subscriber's mapping, else of the mapping itself (0: unknown)."""
    lines = getattr(entry, "key_lines", {})
    return int(lines.get(key, getattr(entry, "line", 0)))


def _subscriber_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(key, problem) for each error; 'unknown key' says which key was meant and hides its 'required'."""
    errors = exc.errors()
    meant = {str(e["loc"][0]): _close_key(str(e["loc"][0])) for e in errors if e["type"] == "extra_forbidden"}
    suggested = set(meant.values())
    problems = []
    for e in errors:
        key = str(e["loc"][0]) if e["loc"] else ""
        if e["type"] == "missing" and key in suggested:
            continue  # 'interets' was meant as 'interests': one problem, not two
        if e["type"] == "extra_forbidden":
            guess = meant.get(key)
            problems.append((key, f"unknown key '{key}'" + (f" (did you mean '{guess}'?)" if guess else "")))
        else:
            problems.append((key, f"field '{field_path(e)}': {plain_words(e)}"))
    return problems


def _close_key(key: str) -> str | None:
    found = difflib.get_close_matches(key, list(Subscriber.model_fields), n=1, cutoff=0.6)
    return found[0] if found else None
