"""The Source seam and the ``sources`` setting: a list of ``{"kind": ..., <options>}`` entries.

A source brings new listings into the dumps folder as files; the pipeline then ingests the folder
as usual, so every fetched response is on disk before it is ingested and any run can be replayed.

Settings example (``newsletter.toml``)::

    [[sources]]
    kind = "folder"

    [[sources]]
    kind = "hf-daily"
    days_back = 3

    [[sources]]
    kind = "arxiv"
    categories = ["cs.LG", "cs.CL"]

or ``NEWSLETTER_SOURCES='[{"kind": "folder"}, {"kind": "hf-daily"}]'``.
"""

from __future__ import annotations

import difflib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import ErrorDetails

from newsletter.address import is_http_url
from newsletter.config import setting_origin
from newsletter.errors import ConfigError, NewsletterError
from newsletter.sources.arxivfetch import DEFAULT_ARXIV_BASE_URL, ArxivSource
from newsletter.sources.fetch import DEFAULT_HF_BASE_URL, HfDailySource
from newsletter.wording import plain_words

__all__ = [
    "DEFAULT_SOURCES",
    "FolderSource",
    "Source",
    "fetch_all",
    "parse_sources",
    "sources_from_settings",
]

log = logging.getLogger(__name__)

DEFAULT_SOURCES: tuple[dict[str, Any], ...] = ({"kind": "folder"},)


@runtime_checkable
class Source(Protocol):
    """Brings new listings into the dumps folder; ``fetch`` returns the files it wrote.

    It raises SourceError when a listing cannot be fetched or is malformed, after keeping whatever
    it already wrote.
    """

    name: str

    def fetch(self, now: datetime) -> list[Path]: ...


class FolderSource:
    """Dumps dropped into the folder by hand or by another tool: nothing to fetch."""

    name = "folder"

    def __init__(self, dumps_dir: Path) -> None:
        self.dumps_dir = dumps_dir

    def __repr__(self) -> str:
        return f"FolderSource({str(self.dumps_dir)!r})"

    def fetch(self, now: datetime) -> list[Path]:
        return []


def fetch_all(
    sources: Sequence[Source], now: datetime, stop: threading.Event | None = None
) -> tuple[list[Path], list[str]]:
    """Every source's new dump files, and one line per source that failed (for the caller to report:
    `run` prints it, the daemon logs it); one failure stops no other. Once ``stop`` is set (a signal)
    no further source is asked."""
    written: list[Path] = []
    failures: list[str] = []
    for source in sources:
        if stop is not None and stop.is_set():
            break
        try:
            written += source.fetch(now)
        except NewsletterError as exc:
            if stop is not None and stop.is_set():  # a signal ended its wait: not a failure
                log.warning("fetch from %s: %s; the next run fetches again", source.name, exc)
                break
            failures.append(f"fetch from {source.name} failed: {exc}")  # the caller reports it
    log.info("fetch: %d new dump file(s)", len(written))
    return written, failures


# -- settings -------------------------------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class FolderSpec(_Spec):
    kind: Literal["folder"]


class _HttpSpec(_Spec):
    timeout: float = Field(default=20.0, gt=0, le=300)
    max_retries: int = Field(default=4, ge=0, le=10)

    @field_validator("timeout", "max_retries", "days_back", mode="before", check_fields=False)
    @classmethod
    def _not_a_switch(cls, value: Any) -> Any:
        """true is no number (pydantic reads it as 1)."""
        if isinstance(value, bool):
            raise ValueError("must be a number, not true or false")
        return value

    @field_validator("base_url", check_fields=False)
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not is_http_url(value):  # the words quote none of it: a password may be half read as the port
            raise ValueError(
                "must be an http(s) URL such as https://huggingface.co "
                "(a user:password@ in it needs '/', '@', ':', '#' and '?' percent-encoded)"
            )
        return value.rstrip("/")


class HfDailySpec(_HttpSpec):
    kind: Literal["hf-daily"]
    base_url: str = DEFAULT_HF_BASE_URL
    days_back: int = Field(default=3, ge=0, le=31)


_CATEGORY = re.compile(r"^[a-z][a-z-]*(\.[A-Za-z][A-Za-z-]*)?$")  # cs.LG, stat.ML, hep-th, math.NA


class ArxivSpec(_HttpSpec):
    kind: Literal["arxiv"]
    categories: tuple[str, ...] = Field(min_length=1)
    base_url: str = DEFAULT_ARXIV_BASE_URL

    @field_validator("categories")
    @classmethod
    def _known_shape(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for category in value:
            if not _CATEGORY.match(category.strip()):
                raise ValueError(f"{category!r} is not an arXiv category such as cs.LG or stat.ML")
        return tuple(c.strip() for c in value)


AnySpec = FolderSpec | HfDailySpec | ArxivSpec
SourceSpec = Annotated[AnySpec, Field(discriminator="kind")]
_SPECS: TypeAdapter[list[SourceSpec]] = TypeAdapter(list[SourceSpec])
_KINDS = ("folder", "hf-daily", "arxiv")
_SPEC_OF: dict[str, type[_Spec]] = {"folder": FolderSpec, "hf-daily": HfDailySpec, "arxiv": ArxivSpec}


def parse_sources(
    spec: Any,
    *,
    dumps_dir: Path,
    state_dir: Path,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> list[Source]:
    """Validate the ``sources`` setting and build its sources; ConfigError names the entry and field.
    ``sleep`` is how an HTTP source waits before a retry; once ``stop`` (the daemon's) is set, an HTTP
    source gives up its wait or its request in flight at once."""
    specs = validate_sources(spec)
    _refuse_duplicates(specs)
    http = {"client": client, "sleep": sleep, "stop": stop}
    return [_build(s, dumps_dir, state_dir, http) for s in specs]


def sources_from_settings(
    settings: Any, *, client: httpx.Client | None = None, stop: threading.Event | None = None
) -> list[Source]:
    """Sources from ``settings.sources`` (default: the folder only); state under ``$HOME/sources``."""
    spec = getattr(settings, "sources", None) or list(DEFAULT_SOURCES)
    state = settings.home / "sources"
    return parse_sources(spec, dumps_dir=settings.dumps, state_dir=state, client=client, stop=stop)


def validate_sources(spec: Any) -> list[AnySpec]:
    """The sources' specs; a ConfigError for the first problem, with the others in its ``also`` (`check`
    lists them all: one at a time, a file with four mistakes took four rounds)."""
    try:
        return _SPECS.validate_python(spec)
    except ValidationError as exc:
        first, *more = (
            ConfigError(f"invalid setting {_problem(err)} ({_origin(_path(err))})") for err in exc.errors()
        )
        first.hint, first.also = _hint(setting_origin("sources")), more  # the example once
        raise first from None


def _origin(path: list[int | str]) -> str:
    """Where the sources came from; in newsletter.toml, the line of the key at ``path`` (an entry's
    index, then its key), or of that entry's table if it has no such key."""
    index = path[0] if path and isinstance(path[0], int) else None
    key = path[1] if len(path) > 1 and isinstance(path[1], str) else None
    return setting_origin("sources", index=index, key=key)


def _build(
    spec: AnySpec,
    dumps_dir: Path,
    state_dir: Path,
    http: dict[str, Any],
) -> Source:
    if isinstance(spec, FolderSpec):
        return FolderSource(dumps_dir)
    options = spec.model_dump(exclude={"kind"}) | http
    if isinstance(spec, ArxivSpec):
        return ArxivSource(dumps_dir, state_dir, **options)
    return HfDailySource(dumps_dir, state_dir, **options)


def _refuse_duplicates(specs: list[AnySpec]) -> None:
    seen: set[AnySpec] = set()
    for index, spec in enumerate(specs):
        if spec in seen:
            where = _origin([index])
            message = f"invalid setting field 'sources[{index}]': duplicate of an earlier entry ({where})"
            raise ConfigError(message, hint="remove one of the two entries")
        seen.add(spec)


def _problem(err: ErrorDetails) -> str:
    where = "sources" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in _path(err))
    return f"field '{where}': {_message(err)}"


def _path(err: ErrorDetails) -> list[int | str]:
    """The error's place in the sources, without the kind the discriminated union repeats in it."""
    loc = list(err["loc"])
    if len(loc) > 1 and loc[1] in _KINDS:
        del loc[1]
    return loc


def _message(err: ErrorDetails) -> str:
    kinds = ", ".join(_KINDS)
    if err["type"] == "extra_forbidden":
        return "unknown key" + _meant(err)
    if err["type"] == "union_tag_not_found":
        return f"missing 'kind' (one of {kinds})"
    if err["type"] == "union_tag_invalid":
        return f"unknown kind {err['ctx']['tag']!r} (one of {kinds})"
    if err["type"] == "missing":
        return "required, and missing"
    return plain_words(err)  # "expected a list", not "Input should be a valid tuple"


def _meant(err: ErrorDetails) -> str:
    """For a key a source's kind has not (``days_bak``), the key of that kind it may mean."""
    spec = _SPEC_OF.get(str(err["loc"][1])) if len(err["loc"]) > 2 else None
    keys = [name for name in spec.model_fields if name != "kind"] if spec else []
    close = difflib.get_close_matches(str(err["loc"][-1]), keys, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _hint(where: str) -> str:
    if where.startswith("newsletter.toml"):
        return (
            'sources are tables such as [[sources]] kind = "hf-daily" days_back = 3, '
            'or [[sources]] kind = "arxiv" categories = ["cs.LG"]'
        )
    return (
        'sources is a list such as [{"kind": "folder"}, {"kind": "hf-daily", "days_back": 3}, '
        '{"kind": "arxiv", "categories": ["cs.LG"]}]'
    )
