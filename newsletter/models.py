"""The data that flows through the pipeline: source -> store/diff -> rank -> render -> send."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import html.entities
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any, Literal, TypeVar
from urllib.parse import SplitResult, parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

_T = TypeVar("_T")
_PUNCT_OR_SPACE = re.compile(r"[\W_]+", re.UNICODE)
_FORMAT = re.compile(  # Unicode's format characters (category Cf; tests check the list against Python's)
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_ASCII_PUNCT_TO_SPACE = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})
_ARXIV_LABEL = re.compile(r"^(?:arxiv:|(?:doi:\s*)?10\.48550/arxiv\.)", re.IGNORECASE)  # "arXiv:", its DOI
_PDF = re.compile(r"\.pdf$", re.IGNORECASE)
_ID_PATHS = {  # where a site's URLs name an arXiv id (lower case)
    "arxiv.org": ("abs/", "pdf/", "html/"),
    "huggingface.co": ("papers/",),
    "hf.co": ("papers/",),
    "doi.org": ("10.48550/arxiv.",),  # the DOI arXiv gives every paper
}
_ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z\-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$", re.IGNORECASE | re.ASCII)
_REFERENCE = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")  # with its ";"
# files in the zone folder that open as zones but name no place: this machine's zone (whichever it is
# where the digest is made), the POSIX TZ default, and tzdata's "-00" for a machine not set up yet
NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})
# tzdata's copies of every zone, no IANA names: posix/ a twin, right/ a clock counting leap seconds
# (27 s off), and their Factory
ZONE_COPIES = ("posix/", "right/")
ABSTRACT_KEY_WORDS = 40  # an abstract of fewer words identifies no paper


def pickled_by_fields(cls: type[_T]) -> type[_T]:
    """Pickle a frozen slotted dataclass as its class and field values, unpickled through __init__.

    For what the builder process hands the run's process: Python 3.11's own ``__setstate__`` for
    such classes calls ``dataclasses.fields()`` per object. Unpickling a message and its plan (ten
    items) took 27 µs that way and takes 13.5 µs this way. Apply it above ``@dataclass``.
    """
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def __reduce__(self: _T) -> tuple[Callable[..., _T], tuple[Any, ...]]:
        return cls, tuple(getattr(self, name) for name in names)

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]
    return cls


def normalize_title(title: str) -> str:
    """Unicode NFKC, case-folded, punctuation and whitespace collapsed to single spaces; format
    characters dropped (a soft hyphen or a zero-width space inside a word is no word break)."""
    if title.isascii():
        return _normalize_ascii(title)
    folded = unicodedata.normalize("NFKC", _FORMAT.sub("", title)).casefold()
    return _PUNCT_OR_SPACE.sub(" ", folded).strip()


def _normalize_ascii(title: str) -> str:
    """``normalize_title`` of ASCII text, four times faster than its regular expressions (an abstract's
    key took 0.5 ms): NFKC and the format characters leave ASCII alone, and casefold is lower."""
    return " ".join(title.lower().translate(_ASCII_PUNCT_TO_SPACE).split())


def abstract_key(abstract: str) -> str | None:
    """A paper's identity by its whole abstract (normalised as titles are, then hashed), for listings
    without an arXiv id: a title corrected in a later listing still finds its paper, and companion
    papers that open alike stay two. None for an abstract too short to identify anything (empty, a
    placeholder)."""
    words = normalize_title(abstract).split()
    if len(words) < ABSTRACT_KEY_WORDS:
        return None
    return hashlib.sha256(" ".join(words).encode()).hexdigest()[:32]


def unescape(text: str) -> str:
    """``text`` with its HTML character references decoded, those ended by ";" ("Q&amp;A", "&#38;"):
    html.unescape also reads the start of a word as an old entity name ("AI&ethics" as "AIðics",
    "&region=" as "®ion=")."""
    return _REFERENCE.sub(_referenced, text)


def _referenced(match: re.Match[str]) -> str:
    reference = match[0]
    if reference.startswith("&#"):
        return html.unescape(reference)
    return html.entities.html5.get(reference[1:], reference)  # "&notit;" is not "¬it;"


def normalize_arxiv_id(value: str) -> str | None:
    """'2312.00752v2' (or 'V2') -> '2312.00752', 'HEP-TH/9901001' -> 'hep-th/9901001', and an old id's
    subject class dropped, as arXiv's feeds and API give it: 'math.AG/0601001' -> 'math/0601001' (arXiv
    names one paper by both); None when ``value`` is not an arXiv id."""
    match = _ARXIV_ID.match(value.strip())
    if not match:
        return None
    archive, _, rest = match[1].partition("/")
    if not rest:  # 2312.00752
        return archive
    return f"{archive.partition('.')[0].lower()}/{rest}"


def arxiv_id_in(item: str) -> str | None:
    """The arXiv id a reference names: '2312.00752v2', 'arXiv:2312.00752', an arXiv abs/, pdf/ or html/
    URL (any arxiv.org host, scheme optional, query and fragment ignored), the paper's Hugging Face page
    (the "HF" link of every digest) or its arXiv DOI (https://doi.org/10.48550/arXiv.2312.00752, or as
    papers cite it: 'doi:10.48550/arXiv.2312.00752'); a '.pdf' ending in any case."""
    reference = item.strip()
    found = _site_url(reference)
    if found is None:
        return normalize_arxiv_id(_PDF.sub("", _ARXIV_LABEL.sub("", reference)))
    site, url = found
    path = _PDF.sub("", url.path.strip("/"))
    prefix = next((p for p in _ID_PATHS[site] if path.lower().startswith(p)), None)
    return normalize_arxiv_id(path[len(prefix) :]) if prefix else None


def title_key_in(item: str) -> str:
    """The title key a reference names: the title an arXiv title search looks for (the only link a
    digest gives a paper without an arXiv id), else the reference read as a title."""
    found = _site_url(item.strip())
    query = parse_qs(found[1].query) if found and found[0] == "arxiv.org" else {}
    searched = query.get("query") if query.get("searchtype") == ["title"] else None
    return normalize_title(searched[0] if searched else item)


def _site_url(reference: str) -> tuple[str, SplitResult] | None:
    """``reference`` as a URL ('arxiv.org/abs/...' too) with the _ID_PATHS site it is on
    ('export.arxiv.org' is on 'arxiv.org'); None if it is no such URL."""
    try:
        url = urlsplit(reference if "://" in reference else f"//{reference}")
    except ValueError:  # "[" in a title: not a URL
        return None
    host = url.hostname or ""
    site = next((s for s in _ID_PATHS if host == s or host.endswith(f".{s}")), None)
    return (site, url) if site else None


@dataclass(frozen=True, slots=True)
class PaperDetails:
    """What a listing says about a paper beyond title, abstract and authors (HF API fields)."""

    ai_summary: str | None = None  # the listing's one-sentence summary
    ai_keywords: tuple[str, ...] = ()
    github_repo: str | None = None  # http(s) URLs only
    github_stars: int | None = None
    project_page: str | None = None
    organization: str | None = None  # display name, e.g. "Google"
    thumbnail: str | None = None
    listed_at: datetime | None = None  # when the listing first showed it (HF: submittedOnDailyAt)
    hf_page: str | None = None  # the paper's Hugging Face page, when HF listed it

    def to_json(self) -> dict[str, object]:
        """Only the fields that are set; dates as ISO 8601 text."""
        out: dict[str, object] = {}
        for item in dataclasses.fields(self):
            name, value = item.name, getattr(self, item.name)
            if value not in (None, ()):
                out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


NO_DETAILS = PaperDetails()


@dataclass(frozen=True, slots=True)
class Paper:
    """One paper as listed in one dump."""

    title: str
    abstract: str  # as in the dump; see sources.clean for display text
    rank: int  # 1-based position in the dump (its trending rank)
    arxiv_id: str | None = None
    authors: tuple[str, ...] = ()
    upvotes: int | None = None
    comments: int | None = None
    details: PaperDetails = NO_DETAILS

    @property
    def title_key(self) -> str:
        return normalize_title(self.title)

    @property
    def abstract_key(self) -> str | None:
        return abstract_key(self.abstract)

    @property
    def key(self) -> str:
        """Stable identity: the arXiv id when known, else the normalised title."""
        return self.arxiv_id or self.title_key


@dataclass(frozen=True, slots=True)
class Dump:
    """One snapshot of a trending listing."""

    source: str  # file path or URL it came from
    format: str  # "hf-text" | "hf-json" | "hf-html" | "arxiv"
    content_hash: str  # sha256 of the raw bytes: same content, same dump
    papers: tuple[Paper, ...]
    listed_on: str | None = None  # the listing's own date line, e.g. "Mar 11", when present

    @property
    def trending(self) -> bool:
        """Whether its order is a trending rank: HF's listings are; an arXiv feed lists by announcement."""
        return self.format != "arxiv"


UNRANKED = 1 << 30  # the best_rank of a paper no trending listing has ranked (only an arXiv feed's)


@dataclass(frozen=True, slots=True)
class StoredPaper:
    """A paper as the store knows it, across dumps."""

    id: int
    key: str
    title: str
    abstract: str
    arxiv_id: str | None
    authors: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    first_dump_seq: int  # ingestion order of the dump that first listed it
    times_seen: int
    best_rank: int
    upvotes: int | None = None
    comments: int | None = None
    details: PaperDetails = NO_DETAILS


Cadence = Literal["each-dump", "daily", "weekly"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Subscriber(BaseModel):
    """One subscriber's address and interest profile (validated from subscribers.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    email: EmailStr
    name: str = ""
    interests: tuple[str, ...] = Field(min_length=1)
    about: str = ""
    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()  # papers to see fewer like ("less like this" adds to it)
    exclude: tuple[str, ...] = ()
    max_items: int = Field(default=10, ge=1, le=100, strict=True)  # `true` or "5" is a mistake, not 1 or 5
    cadence: Cadence = "daily"
    timezone: str = "UTC"
    send_at: time | None = None  # local time of day a daily/weekly digest becomes due
    weekday: Weekday | None = None  # weekly: that day at send_at; unset: send_at a week after the last

    @field_validator("email", mode="before")
    @classmethod
    def _plain_ascii_address(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if "<" in text or " " in text:
                raise ValueError("give just the address (the display name goes in 'name')")
            if "@" not in text:
                wide = " (it holds a full-width '＠', not '@')" if "\uff20" in text else ""
                raise ValueError(f"an email address needs an '@'{wide}")
            if not text.split("@")[0].isascii():
                raise ValueError("the part before @ must be ASCII (most mail servers refuse others)")
        return value

    @field_validator("send_at", mode="before")
    @classmethod
    def _time_of_day(cls, value: object) -> object:
        """'7:30' or '07:30' (or '07:30:15'); a number is refused (YAML 1.1 reads 7:30 as 450)."""
        if value is None or isinstance(value, time):
            return value
        if not isinstance(value, str):
            raise ValueError(f'write the time of day in quotes, e.g. send_at: "07:30" (got {value!r})')
        hours, colon, rest = value.strip().partition(":")
        return f"{hours.zfill(2)}{colon}{rest}" if hours.isdigit() and len(hours) == 1 else value

    @field_validator("send_at")
    @classmethod
    def _no_offset(cls, value: time | None) -> time | None:
        """A time of day in the subscriber's ``timezone``: an offset written with it would be dropped."""
        if value is not None and value.tzinfo is not None:
            raise ValueError("write the time without an offset (e.g. \"07:30\") and set 'timezone'")
        return value

    @field_validator("interests", "liked", "disliked", "exclude")
    @classmethod
    def _no_blank_phrases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(v.strip() for v in value)
        if any(not v for v in cleaned):
            raise ValueError("contains an empty entry")
        return cleaned

    @field_validator("name", "about")
    @classmethod
    def _single_line_name(cls, value: str) -> str:
        if any(c in value for c in "\x00"):
            raise ValueError("contains a NUL character")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        if value in NOT_PLACES or value.startswith(ZONE_COPIES):
            raise ValueError(f"unknown IANA time zone {value!r} (name a place's: e.g. Europe/Paris)")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Scored:
    """A paper scored against one subscriber. ``relevant`` is the ranker's verdict."""

    paper: StoredPaper
    score: float
    why: str  # short human-readable reason, e.g. "matches: Kestrel, message passing"
    relevant: bool


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    subject: str
    html: str
    text: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A fully built email, ready for a transport."""

    digest_id: str
    sender: str
    recipient: str
    subject: str
    message_id: str
    raw: bytes  # RFC 5322 bytes, CRLF line endings
    html: str = field(repr=False, default="")  # the parts again, for HTTP APIs that take them apart
    text: str = field(repr=False, default="")
    headers_only: bool = False  # ``raw`` is the header block alone (built for an API that takes the parts)
    made_at: datetime | None = None  # when the digest was made (a resend's Date header is later)
    written: str = ""  # the address as the subscribers file has it (``recipient``: as it goes out)

    @property
    def subscriber(self) -> str:
        """The address as reports and logs name it (an IDN domain in Unicode), as `status` does."""
        return self.written or self.recipient

    @property
    def size(self) -> int:
        """Bytes handed over: the whole message, or its header block and its two parts."""
        if not self.headers_only:
            return len(self.raw)
        return len(self.raw) + len(self.html.encode()) + len(self.text.encode())
