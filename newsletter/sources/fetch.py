"""Sources that fetch a listing over HTTP and save each new response as a dump file.

``HfDailySource`` asks the Hugging Face daily papers API for today's listing and the last few days'
(``GET {base_url}/api/daily_papers?date=YYYY-MM-DD``, UTC dates). Every response is validated with
the ``hf-json`` parser before anything is written, and written (atomically) only when its content is
new, as ``hf-daily-YYYY-MM-DD-<sha8>.json`` in the dumps folder, so any run can be replayed from the
folder alone. ETag / Last-Modified are kept per date in a small JSON file in the state folder and
sent back as If-None-Match / If-Modified-Since. 5xx, 429 and transport errors are retried with
exponential backoff and jitter, honouring ``Retry-After``. Given a ``stop`` event (a signal's), a
source gives up at once when it is set: a retry's wait ends, and a request still in flight is left to
finish in the background and its reply dropped, so nothing is written. An empty listing (a weekend,
or a day not published yet) is normal: nothing is written and nothing is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from newsletter import __version__
from newsletter.errors import SourceError
from newsletter.files import make_folder, write_atomic
from newsletter.models import Dump
from newsletter.retry_after import http_date
from newsletter.retry_after import retry_after_seconds as read_retry_after
from newsletter.sources.hfjson import parse_hf_json

__all__ = [
    "DEFAULT_HF_BASE_URL",
    "HfDailySource",
    "HttpSource",
    "listing_dates",
    "listing_hash",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

DEFAULT_HF_BASE_URL = "https://huggingface.co"
USER_AGENT = f"newsletter/{__version__} (trending-papers digest; python-httpx)"
RETRY_AFTER_CAP = 300.0  # seconds; asked to wait longer, a fetch gives up until the next run
BACKOFF_BASE = 2.0  # first retry waits 1-2 s, then 2-4 s, 4-8 s ...
BACKOFF_MAX = 60.0
MAX_BODY_BYTES = 16 * 1024 * 1024  # a daily listing is ~100 KB; anything this big is not one
_THROUGH = "through"  # in the fetch state: every date up to this one was fetched
CATCH_UP_DAYS = 14  # after downtime, dates fetched back at most (digests weigh 14 days of dumps)
# after downtime, the last dates fetched are asked for again: a listing fetched at 00:30 UTC was empty,
# or half full (papers come in through the day in American time zones), and was never asked for again
SETTLING_DAYS = 2
# a fetch's waits to retry, all told: a 429 asking 300 s at each of 4 retries held a cron run, and its
# digests, 20 minutes a source
WAIT_BUDGET = 300.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: httpx.Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class _Seen:
    """What we know about one date's listing from the last fetch that returned content."""

    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, str]:
        return {key: value for key, value in asdict(self).items() if value}

    @classmethod
    def from_json(cls, value: Any) -> _Seen:
        if not isinstance(value, dict):
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in names and isinstance(v, str)})


class GaveUp(SourceError):
    """The service stayed down or rate-limiting through the retries, or a signal stopped the wait:
    the other requests of this fetch would meet the same."""


def _worst(problems: list[SourceError]) -> SourceError:
    """One error for the dates that failed: each one's problem; the hint when they all share it."""
    if len(problems) == 1:
        return problems[0]
    hints = {p.hint for p in problems}
    message = "; ".join(p.message for p in problems)
    return SourceError(f"{len(problems)} dates failed: {message}", hints.pop() if len(hints) == 1 else None)


def _credentials_apart(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """A mirror's user:password@ taken out of its URL (which errors, logs and the state file show)
    and sent as Basic auth, as httpx would have sent it."""
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return url, None
    auth = httpx.BasicAuth(parsed.username, parsed.password)
    return str(parsed.copy_with(username=None, password=None)), auth


class HttpSource:
    """What every fetching source shares: one httpx client, GET with retries, validators, atomic saves.

    Subclasses set ``name`` and ``accept`` and implement ``fetch``.
    """

    name = "http"
    accept = "*/*"

    def __init__(
        self,
        dumps_dir: Path,
        state_dir: Path,
        *,
        base_url: str,
        client: httpx.Client | None = None,
        timeout: float = 20.0,
        max_retries: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.dumps_dir = dumps_dir
        self.base_url, self._auth = _credentials_apart(base_url.rstrip("/"))
        self.timeout = timeout
        self.max_retries = max_retries
        self._client = client
        self._sleep = sleep
        self._stop = stop
        self._waited = 0.0
        self._state = _StateFile(state_dir / f"{self.name}.json", self.base_url)

    @contextlib.contextmanager
    def _session(self) -> Iterator[httpx.Client]:
        self._waited = 0.0  # a fetch's pauses before a retry, all dates together (WAIT_BUDGET)
        if self._client is not None:
            yield self._client
            return
        headers = {"User-Agent": USER_AGENT}
        with httpx.Client(
            timeout=self.timeout, headers=headers, follow_redirects=True, auth=self._auth
        ) as client:
            yield client

    def _conditional_get(self, client: httpx.Client, url: str, before: _Seen) -> _Reply:
        headers = {"Accept": self.accept}
        if before.etag:
            headers["If-None-Match"] = before.etag
        if before.last_modified:
            headers["If-Modified-Since"] = before.last_modified
        return self._get(client, url, headers)

    def _save(self, name: str, body: bytes, sha: str) -> Path | None:
        """Write ``body`` as dumps_dir/name unless that file already holds it; the path written."""
        path = self.dumps_dir / name
        if _holds(path, sha):
            log.debug("%s: already saved", path)
            return None
        try:
            make_folder(self.dumps_dir)
            write_atomic(path, body, readable=True)  # public data: a run or serve as another user reads it
        except OSError as exc:
            raise SourceError(f"cannot write dump {path}: {exc.strerror or exc}") from exc
        log.info("saved %s", path)
        return path

    # -- HTTP with retries ---------------------------------------------------------------------------

    def _get(self, client: httpx.Client, url: str, headers: dict[str, str]) -> _Reply:
        """GET with retries on transport errors, 429 and 5xx; SourceError for anything else but 200/304."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                reply = self._send(client, url, headers)
            except (
                httpx.UnsupportedProtocol,
                httpx.DecodingError,
                httpx.TooManyRedirects,
                httpx.InvalidURL,
                ValueError,  # a host name IDNA refuses
            ) as exc:
                raise SourceError(f"cannot fetch {url}: {_describe(exc)}") from exc  # retrying cannot help
            except httpx.TransportError as exc:
                problem, wait = _describe(exc), None
            else:
                if not _retryable(reply.status):
                    return _checked(reply, url)
                problem, wait = _status_text(reply.status), _reply_retry_after(reply)
                if wait is not None and wait > RETRY_AFTER_CAP:  # not worth holding the run (and its digests)
                    raise GaveUp(
                        f"cannot fetch {url}: {problem}, asked to wait {wait:.0f} s",
                        hint="the next run tries again",
                    )
            if attempt + 1 < attempts:
                self._pause(url, problem, wait, attempt)
        raise GaveUp(
            f"cannot fetch {url}: {problem} (after {attempts} attempt{'s' * (attempts > 1)})",
            hint="the service may be down or rate-limiting; the next run tries again",
        )

    def _send(self, client: httpx.Client, url: str, headers: dict[str, str]) -> _Reply:
        """The whole reply, headers included, within ``timeout`` (and a grace second) of asking: httpx
        times each read alone, and headers trickled a line at a time held a run, its lock and the
        daemon's fetches for days. A signal gives up at once too."""
        call = lambda: self._request(client, url, headers)  # noqa: E731
        return unless_stopped(call, self._stop or threading.Event(), url, self.timeout + 1)

    def _request(self, client: httpx.Client, url: str, headers: dict[str, str]) -> _Reply:
        """``timeout`` bounds each wait for the server and the whole body: a server trickling a byte
        every few seconds held the run, and its lock, for as long as it liked."""
        deadline = time.monotonic() + self.timeout
        with client.stream("GET", url, headers=headers, timeout=self.timeout) as response:
            body = _read_body(response, url, deadline) if response.status_code == 200 else b""
            return _Reply(response.status_code, response.headers, body)

    def _pause(self, url: str, problem: str, wait: float | None, attempt: int) -> None:
        """The server's Retry-After; under a second ("0", a past date: that hammered it), the backoff."""
        delay = wait if wait is not None and wait >= 1 else backoff_delay(attempt)
        if self._waited + delay > WAIT_BUDGET:  # the digests wait for the fetch
            raise GaveUp(
                f"cannot fetch {url}: {problem}; this fetch has waited {self._waited:.0f} s to retry "
                f"already, {WAIT_BUDGET:.0f} s at most",
                hint="the next run fetches the dates left",
            )
        self._waited += delay
        log.info("%s: %s; retry %d of %d in %.1f s", url, problem, attempt + 1, self.max_retries, delay)
        if self._stop is None:
            self._sleep(delay)
        elif self._stop.wait(delay):
            raise GaveUp(f"cannot fetch {url}: stopped by a signal while waiting to retry")


class HfDailySource(HttpSource):
    """The Hugging Face daily papers API as a source of ``hf-json`` dump files."""

    name = "hf-daily"
    accept = "application/json"

    def __init__(
        self,
        dumps_dir: Path,
        state_dir: Path,
        *,
        base_url: str = DEFAULT_HF_BASE_URL,
        client: httpx.Client | None = None,
        days_back: int = 3,
        timeout: float = 20.0,
        max_retries: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        if days_back < 0:
            raise ValueError("days_back and max_retries must be >= 0")
        super().__init__(
            dumps_dir,
            state_dir,
            base_url=base_url,
            client=client,
            timeout=timeout,
            max_retries=max_retries,
            sleep=sleep,
            stop=stop,
        )
        self.days_back = days_back

    def __repr__(self) -> str:
        return f"HfDailySource({self.base_url!r}, days_back={self.days_back})"

    def url(self, day: date) -> str:
        return f"{self.base_url}/api/daily_papers?date={day.isoformat()}"

    def fetch(self, now: datetime) -> list[Path]:
        """Fetch each date's listing (oldest first); return the dump files written.

        Newest first. A date whose listing cannot be had (a 404 page, a malformed item) does not keep
        the others from being fetched: SourceError names each once every date was tried. The service
        down or rate-limiting past the retries (or a stop signal) ends the fetch at once.
        Files written stay in the dumps folder (the folder scan ingests them) and their state is kept.
        """
        today = listing_dates(now, 0)[0]
        through = self._state.through(before=today)
        days = listing_dates(now, self._reach(today, through))
        seen = self._state.load(keep=[day.isoformat() for day in days])
        written: list[Path] = []
        problems: list[SourceError] = []
        try:
            with self._session() as client:
                for day in reversed(days):  # today's first: a date that keeps failing holds back no other
                    if self._stop is not None and self._stop.is_set():
                        break
                    try:
                        path = self._fetch_day(client, day, seen)
                    except GaveUp:  # the service down: the dates before it still say what they met
                        for problem in problems:
                            log.warning("%s", problem.message)
                        raise
                    except SourceError as exc:
                        problems.append(exc)
                        continue
                    if path is not None:
                        written.append(path)
        finally:
            self._state.save(seen, _caught_up(days, seen, through))
        log.info("%s: %d date(s) checked, %d new dump(s)", self.name, len(days), len(written))
        if problems:  # each date's problem in one error, the caller's to report (it was logged twice)
            raise _worst(problems)
        return sorted(written)  # by date, as the folder scan reads them

    def _reach(self, today: date, through: date | None) -> int:
        """``days_back``, or, after dates were missed, back to the day before ``through`` (every date up to
        it fetched, the last two maybe before their listing was whole: SETTLING_DAYS) when that is
        further: a machine off for a week never asked for the dates between (CATCH_UP_DAYS at most)."""
        missed = (today - through).days - 1 if through else 0  # whole dates never asked for
        if missed <= 0:
            return self.days_back
        return max(self.days_back, min(missed + SETTLING_DAYS, CATCH_UP_DAYS))

    def _fetch_day(self, client: httpx.Client, day: date, seen: dict[str, _Seen]) -> Path | None:
        url = self.url(day)
        before = seen.get(day.isoformat(), _Seen())
        reply = self._conditional_get(client, url, before)
        if reply.status == 304:
            log.debug("%s: not modified", url)
            return None
        dump = parse_hf_json(reply.body, url)  # ParseError (a SourceError) names the URL
        listing = listing_hash(dump)
        changed = dump.papers and listing != before.sha256
        name = f"hf-daily-{day.isoformat()}-{dump.content_hash[:8]}.json"
        path = self._save(name, reply.body, dump.content_hash) if changed else None
        if not dump.papers:
            log.debug("%s: no papers listed (weekend or not published yet)", url)
        seen[day.isoformat()] = seen_from(reply, listing)
        return path


# -- helpers ------------------------------------------------------------------------------------------


def unless_stopped(call: Callable[[], T], stop: threading.Event, url: str, limit: float) -> T:
    """``call()`` on a thread of its own, given up once ``stop`` is set (SourceError at once) or after
    ``limit`` seconds (httpx.ReadTimeout, retried as any timeout); its result, when it comes, is
    dropped. (A daemon thread, so a reply still on its way holds up neither the caller nor the
    process's exit; it ends with its connection.)"""
    done: Future[T] = Future()
    threading.Thread(target=_settle, args=(done, call), name="newsletter-fetch", daemon=True).start()
    deadline = time.monotonic() + limit
    while not done.done():
        if stop.wait(0.1):
            raise GaveUp(f"cannot fetch {url}: stopped by a signal before the reply came")
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout(f"no whole reply within {limit:.0f} s")
    return done.result()


def _settle(done: Future[T], call: Callable[[], T]) -> None:
    try:
        done.set_result(call())
    except BaseException as exc:  # handed to the waiting thread, which raises it
        done.set_exception(exc)


def listing_dates(now: datetime, days_back: int) -> list[date]:
    """The UTC date of ``now`` and the ``days_back`` dates before it, oldest first (naive = UTC)."""
    moment = now if now.tzinfo else now.replace(tzinfo=UTC)
    today = moment.astimezone(UTC).date()
    return [today - timedelta(days=n) for n in range(days_back, -1, -1)]


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter: attempt 0 -> 1-2 s, 1 -> 2-4 s, ... capped at BACKOFF_MAX."""
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_seconds(
    value: str | None, server_date: str | None = None, cap: float = RETRY_AFTER_CAP
) -> float | None:
    """``Retry-After`` in seconds, at most ``cap``; None if unusable (see ``newsletter.retry_after``).

    An HTTP date is measured from the response's own ``Date`` header when there is one (same clock),
    else from now.
    """
    reference = http_date(server_date) if server_date else None
    seconds = read_retry_after(value, reference or datetime.now(UTC))
    return None if seconds is None else min(seconds, cap)


def _reply_retry_after(reply: _Reply) -> float | None:
    return retry_after_seconds(reply.headers.get("retry-after"), reply.headers.get("date"), cap=math.inf)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _retryable(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


def _checked(reply: _Reply, url: str) -> _Reply:
    if reply.status in (200, 304):
        return reply
    hint = "check base_url" if reply.status == 404 else None
    raise SourceError(f"cannot fetch {url}: {_status_text(reply.status)}", hint=hint)


def _status_text(status: int) -> str:
    try:
        phrase = httpx.codes(status).get_reason_phrase(status)
    except ValueError:
        phrase = ""
    return f"HTTP {status} {phrase}".rstrip()


def listing_hash(dump: Dump) -> str:
    """A new file only when the listing itself changed (papers or their order), not on every upvote:
    each file is a dump, and a dump counts towards how often a paper was seen."""
    return hashlib.sha256("\n".join(p.key for p in dump.papers).encode()).hexdigest()


def seen_from(reply: _Reply, listing: str) -> _Seen:
    return _Seen(reply.headers.get("etag"), reply.headers.get("last-modified"), listing)


def _read_body(response: httpx.Response, url: str, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise SourceError(f"cannot fetch {url}: response larger than {MAX_BODY_BYTES} bytes")
        if time.monotonic() > deadline:  # a retry may find the server quicker
            raise httpx.ReadTimeout(f"the response took longer than the timeout ({size} bytes read)")
        chunks.append(chunk)
    return b"".join(chunks)


def _holds(path: Path, sha: str) -> bool:
    """Whether ``path`` holds the content of hash ``sha`` (a file it cannot read, say another user's
    from an earlier version, holds nothing: it is written over)."""
    try:
        return path.is_file() and _sha256_of(path) == sha
    except OSError:
        return False


def _sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _has_userinfo(url: str) -> bool:
    """A key written before a base URL's credentials were taken out of it: dropped, never saved again."""
    try:
        return bool(httpx.URL(url).userinfo)
    except httpx.InvalidURL:
        return False


class _StateFile:
    """Validators per date or feed: ``{base_url: {key: {"etag", "last_modified", "sha256"}}}``."""

    def __init__(self, path: Path, base_url: str) -> None:
        self.path = path
        self.base_url = base_url
        self._others: dict[str, Any] = {}

    def load(self, keep: list[str]) -> dict[str, _Seen]:
        """This base URL's entries for the keys (dates) in ``keep``; an unreadable file counts as empty."""
        data = self._read()
        self._others = {k: v for k, v in data.items() if k != self.base_url and not _has_userinfo(k)}
        mine = data.get(self.base_url)
        mine = mine if isinstance(mine, dict) else {}
        return {day: _Seen.from_json(value) for day, value in mine.items() if day in keep}

    def through(self, before: date) -> date | None:
        """The date up to which this base URL's listings were all fetched; None before the first, or
        when it is after ``before`` (a clock once far ahead: kept, it turned catching up off until that
        date). A file from before the mark was kept: its latest date."""
        mine = self._read().get(self.base_url)
        mine = mine if isinstance(mine, dict) else {}
        if isinstance(mine.get(_THROUGH), str):
            marked = _date_or_none(mine[_THROUGH])
        else:
            marked = max((d for d in map(_date_or_none, mine) if d is not None), default=None)
        return marked if marked is not None and marked <= before else None

    def save(self, seen: dict[str, _Seen], through: date | None = None) -> None:
        mine: dict[str, Any] = {day: s.to_json() for day, s in sorted(seen.items())}
        if through is not None:
            mine[_THROUGH] = through.isoformat()
        data = {**self._others, self.base_url: mine}
        try:
            make_folder(self.path.parent)
            write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
        except OSError as exc:
            log.warning("cannot save fetch state %s: %s", self.path, exc.strerror or exc)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable fetch state %s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}


def _caught_up(days: list[date], seen: dict[str, _Seen], through: date | None) -> date | None:
    """The last of ``days`` (oldest first) up to which each has its listing recorded, or ``through``
    when that is later: a date that failed (or a fetch given up) is asked for again next time."""
    for day in days:
        if day.isoformat() not in seen:
            break
        through = day if through is None else max(through, day)
    return through


def _date_or_none(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
