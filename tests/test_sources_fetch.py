"""HfDailySource against httpx.MockTransport: the fault matrix, conditional requests, state."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from newsletter.errors import ParseError, SourceError
from newsletter.sources import list_dump_files, read_dump
from newsletter.sources.fetch import (
    RETRY_AFTER_CAP,
    GaveUp,
    HfDailySource,
    backoff_delay,
    listing_dates,
    retry_after_seconds,
)
from newsletter.sources.registry import fetch_all

from .conftest import DATA

HF = DATA / "hf"
BASE = "https://hf.test"
DAY = date(2024, 3, 19)
NOW = datetime(2024, 3, 19, 9, 30, tzinfo=UTC)
URL = f"{BASE}/api/daily_papers?date=2024-03-19"
ETAG = 'W/"1c46-6Ix0G0u8KnA+uJtqKlv6vbpxqmY"'

Handler = Callable[[httpx.Request], httpx.Response]


def recorded(day: date | str) -> bytes:
    return (HF / f"daily_papers-{day}.json").read_bytes()


def ok(body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "application/json", **headers})


class Server:
    """A scripted MockTransport: ``script`` is consumed one response per request, then ``default``."""

    def __init__(self, *script: httpx.Response | Exception | Handler, default: Handler | None = None) -> None:
        self.script = list(script)
        self.default = default or (lambda request: ok(b"[]"))
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else self.default
        if isinstance(step, Exception):
            raise step
        return step if isinstance(step, httpx.Response) else step(request)

    @property
    def dates(self) -> list[str]:
        return [r.url.params["date"] for r in self.requests]


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def dumps(tmp_path: Path) -> Path:
    return tmp_path / "dumps"


@pytest.fixture
def make(dumps: Path, tmp_path: Path, sleeps: Sleeps) -> Iterator[Callable[..., HfDailySource]]:
    clients: list[httpx.Client] = []

    def build(server: Server, client_redirects: bool = False, **options: object) -> HfDailySource:
        client = httpx.Client(transport=httpx.MockTransport(server), follow_redirects=client_redirects)
        clients.append(client)
        options = {"days_back": 0, "max_retries": 4, **options}
        return HfDailySource(dumps, tmp_path / "state", base_url=BASE, client=client, sleep=sleeps, **options)  # type: ignore[arg-type]

    yield build
    for client in clients:
        client.close()


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- 200, then 304 ------------------------------------------------------------------------------------


def test_200_writes_a_dump_that_parses_then_304_writes_nothing(make, dumps: Path, sleeps: Sleeps) -> None:
    body = recorded(DAY)

    def conditional(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == ETAG:
            return httpx.Response(304, headers={"etag": ETAG})
        return ok(body, etag=ETAG)

    server = Server(default=conditional)
    source = make(server)
    written = source.fetch(NOW)
    assert [p.name for p in written] == [f"hf-daily-2024-03-19-{read_dump(written[0]).content_hash[:8]}.json"]
    assert written[0].read_bytes() == body
    assert [p.arxiv_id for p in read_dump(written[0]).papers] == ["2403.13187", "2403.12968"]
    assert list_dump_files(dumps) == written
    assert "if-none-match" not in server.requests[0].headers

    assert source.fetch(NOW + timedelta(hours=1)) == []
    assert server.requests[1].headers["if-none-match"] == ETAG
    assert files(dumps) == [written[0].name]
    assert sleeps == []


def test_last_modified_is_sent_back_as_if_modified_since(make) -> None:
    stamp = "Tue, 19 Mar 2024 08:00:00 GMT"
    server = Server(ok(recorded(DAY), **{"last-modified": stamp}), httpx.Response(304))
    source = make(server)
    assert len(source.fetch(NOW)) == 1
    assert source.fetch(NOW) == []
    assert server.requests[1].headers["if-modified-since"] == stamp
    assert "if-none-match" not in server.requests[1].headers


def test_conditional_state_survives_a_new_source_instance(make, tmp_path: Path) -> None:
    make(Server(ok(recorded(DAY), etag=ETAG))).fetch(NOW)
    state = json.loads((tmp_path / "state" / "hf-daily.json").read_text())
    assert state[BASE]["2024-03-19"]["etag"] == ETAG
    server = Server(httpx.Response(304))
    assert make(server).fetch(NOW) == []
    assert server.requests[0].headers["if-none-match"] == ETAG


def test_same_content_without_validators_writes_nothing(make, dumps: Path) -> None:
    server = Server(default=lambda request: ok(recorded(DAY)))
    source = make(server)
    assert len(source.fetch(NOW)) == 1
    assert source.fetch(NOW) == []
    assert make(server).fetch(NOW) == []  # a fresh instance sees the file already there
    assert len(files(dumps)) == 1


def test_only_a_changed_listing_writes_a_second_dump(make, dumps: Path) -> None:
    items = json.loads(recorded(DAY))
    upvoted = json.loads(recorded(DAY))
    upvoted[0]["paper"]["upvotes"] += 10  # same papers: no new dump (it would count as another sighting)
    reordered = [*upvoted[1:], upvoted[0]]  # the listing changed: a new dump
    bodies = [json.dumps(x).encode() for x in (items, upvoted, reordered)]
    source = make(Server(*(ok(b, etag=f'"v{i}"') for i, b in enumerate(bodies))))
    first, same, second = source.fetch(NOW), source.fetch(NOW), source.fetch(NOW)
    assert len(first) == len(second) == 1 and same == []
    assert first[0] != second[0]
    assert second[0].read_bytes() == bodies[2]
    assert files(dumps) == sorted([first[0].name, second[0].name])


def test_fetches_today_and_days_back_in_utc_newest_first(make, dumps: Path) -> None:
    server = Server(default=lambda request: ok(recorded(request.url.params["date"])))
    source = make(server, days_back=4)
    now = datetime(2024, 3, 18, 21, 0, tzinfo=timezone(timedelta(hours=-5)))  # 2024-03-19 02:00 UTC
    written = source.fetch(now)
    assert server.dates == ["2024-03-19", "2024-03-18", "2024-03-17", "2024-03-16", "2024-03-15"]
    assert [p.name[:19] for p in written] == [  # by date
        "hf-daily-2024-03-15",
        "hf-daily-2024-03-18",
        "hf-daily-2024-03-19",
    ]
    assert sum(len(read_dump(p).papers) for p in written) == 7
    assert all(r.url.path == "/api/daily_papers" for r in server.requests)
    assert server.requests[0].headers["accept"] == "application/json"


# -- retries ------------------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_sleeps_that_long_then_succeeds(make, sleeps: Sleeps) -> None:
    server = Server(httpx.Response(429, headers={"retry-after": "7"}), ok(recorded(DAY)))
    assert len(make(server).fetch(NOW)) == 1
    assert sleeps == [7.0]
    assert len(server.requests) == 2


def test_429_with_retry_after_http_date_is_measured_from_the_server_date(make, sleeps: Sleeps) -> None:
    sent = datetime(2024, 3, 19, 9, 30, tzinfo=UTC)
    headers = {
        "date": format_datetime(sent, usegmt=True),
        "retry-after": format_datetime(sent + timedelta(seconds=45), usegmt=True),
    }
    server = Server(httpx.Response(429, headers=headers), ok(recorded(DAY)))
    assert len(make(server).fetch(NOW)) == 1
    assert sleeps == [45.0]


@pytest.mark.parametrize("retry_after", ["0", "Tue, 19 Mar 2024 09:28:20 GMT"])  # now, 100 s ago
def test_a_retry_after_of_now_or_the_past_backs_off_as_without_one(
    make, sleeps: Sleeps, retry_after: str
) -> None:
    """It retried at once: four requests in a tenth of a second, then gave up."""
    headers = {"retry-after": retry_after, "date": "Tue, 19 Mar 2024 09:30:00 GMT"}
    server = Server(*[httpx.Response(429, headers=headers)] * 3, ok(recorded(DAY)))
    assert len(make(server).fetch(NOW)) == 1
    assert len(sleeps) == 3 and 1 <= sleeps[0] <= 2 and 2 <= sleeps[1] <= 4 and 4 <= sleeps[2] <= 8


def test_a_retry_after_longer_than_the_cap_gives_up_until_the_next_run(make, sleeps: Sleeps) -> None:
    """It was cut to 300 s and waited out four times: a cron run delivered nothing for 20 minutes."""
    server = Server(httpx.Response(429, headers={"retry-after": "3600"}), ok(recorded(DAY)))
    with pytest.raises(GaveUp, match="asked to wait 3600 s"):
        make(server).fetch(NOW)
    assert sleeps == [] and len(server.requests) == 1


def test_500_then_success_backs_off_once(make, sleeps: Sleeps, dumps: Path) -> None:
    server = Server(httpx.Response(500), ok(recorded(DAY)))
    assert len(make(server).fetch(NOW)) == 1
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 2.0
    assert len(files(dumps)) == 1


def test_transport_errors_are_retried(make, sleeps: Sleeps) -> None:
    server = Server(
        httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out"), ok(recorded(DAY))
    )
    assert len(make(server).fetch(NOW)) == 1
    assert len(sleeps) == 2 and 2.0 <= sleeps[1] <= 4.0


def test_persistent_500_raises_after_max_retries(make, sleeps: Sleeps, dumps: Path) -> None:
    server = Server(default=lambda request: httpx.Response(500))
    with pytest.raises(SourceError) as info:
        make(server, max_retries=3).fetch(NOW)
    assert len(server.requests) == 4
    assert len(sleeps) == 3
    assert all(low <= s <= high for s, (low, high) in zip(sleeps, [(1, 2), (2, 4), (4, 8)], strict=True))
    assert URL in str(info.value) and "HTTP 500" in str(info.value) and "4 attempts" in str(info.value)
    assert files(dumps) == []


def test_persistent_transport_error_names_the_url(make) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    server = Server(default=unreachable)
    with pytest.raises(SourceError, match="ConnectTimeout") as info:
        make(server, max_retries=1).fetch(NOW)
    assert URL in str(info.value)


def test_404_raises_without_retrying(make, sleeps: Sleeps, dumps: Path) -> None:
    server = Server(httpx.Response(404, json={"error": "Not Found"}))
    with pytest.raises(SourceError) as info:
        make(server).fetch(NOW)
    assert str(info.value) == f"cannot fetch {URL}: HTTP 404 Not Found"
    assert info.value.hint == "check base_url"
    assert len(server.requests) == 1 and sleeps == []
    assert files(dumps) == []


def test_redirect_loop_and_bad_encoding_are_not_retried(make, sleeps: Sleeps) -> None:
    loop = httpx.Response(302, headers={"location": URL})
    with pytest.raises(SourceError, match="TooManyRedirects"):
        make(Server(default=lambda request: loop), client_redirects=True).fetch(NOW)
    garbled = httpx.Response(200, stream=httpx.ByteStream(b"not gzip"), headers={"content-encoding": "gzip"})
    with pytest.raises(SourceError, match="DecodingError") as info:
        make(Server(garbled)).fetch(NOW)
    assert URL in str(info.value)
    assert sleeps == []


def test_a_redirect_not_followed_is_an_error(make) -> None:
    with pytest.raises(SourceError, match="HTTP 302 Found"):
        make(Server(httpx.Response(302, headers={"location": "https://elsewhere.test/"}))).fetch(NOW)


def test_401_raises_with_status(make) -> None:
    with pytest.raises(SourceError, match="HTTP 401 Unauthorized"):
        make(Server(httpx.Response(401))).fetch(NOW)


# -- empty days and bad bodies ------------------------------------------------------------------------


def test_empty_day_writes_nothing_and_raises_nothing(
    make, dumps: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(default=lambda request: ok(recorded("2024-03-17")))
    with caplog.at_level(logging.DEBUG, logger="newsletter"):
        assert make(server, days_back=1).fetch(datetime(2024, 3, 17, 12, tzinfo=UTC)) == []
    assert files(dumps) == []
    assert server.dates == ["2024-03-17", "2024-03-16"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("no papers listed" in r.getMessage() for r in caplog.records)


def test_malformed_json_raises_naming_the_url_and_writes_nothing(make, dumps: Path, tmp_path: Path) -> None:
    broken = (HF / "malformed-truncated.json").read_bytes()
    server = Server(ok(broken, etag='"broken"'), default=lambda request: ok(recorded(DAY)))
    source = make(server)
    with pytest.raises(ParseError) as info:
        source.fetch(NOW)
    assert isinstance(info.value, SourceError)
    assert info.value.source == URL and URL in str(info.value)
    assert "malformed JSON" in str(info.value)
    assert files(dumps) == []
    assert len(source.fetch(NOW)) == 1  # the broken response left no validators behind
    assert "if-none-match" not in server.requests[1].headers


def test_html_page_with_200_is_rejected(make, dumps: Path) -> None:
    page = b"<!DOCTYPE html><html><body>We'll be right back</body></html>"
    with pytest.raises(
        SourceError, match=r"an HTML or XML page, not JSON \(an error page\?\)"
    ):  # was "malformed JSON"
        make(Server(httpx.Response(200, content=page, headers={"content-type": "text/html"}))).fetch(NOW)
    assert files(dumps) == []


def test_a_json_object_instead_of_a_list_is_rejected(make) -> None:
    with pytest.raises(ParseError, match="expected a JSON list"):
        make(Server(httpx.Response(200, json={"message": "Invalid date"}))).fetch(NOW)


def only_on(good_day: str, otherwise: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    """An API whose listing for ``good_day`` is the recorded one (ETag "mon"), every other ``otherwise``."""

    def api(request: httpx.Request) -> httpx.Response:
        day = request.url.params["date"]
        return ok(recorded(day), etag='"mon"') if day == good_day else otherwise

    return api


def test_an_error_on_a_later_date_keeps_earlier_files_and_state(make, dumps: Path, tmp_path: Path) -> None:
    server = Server(default=only_on("2024-03-18", httpx.Response(404)))
    with pytest.raises(SourceError, match="2024-03-19"):
        make(server, days_back=1).fetch(NOW)
    assert [name[:19] for name in files(dumps)] == ["hf-daily-2024-03-18"]
    state = json.loads((tmp_path / "state" / "hf-daily.json").read_text())
    assert state[BASE]["2024-03-18"]["etag"] == '"mon"'


def test_an_error_on_an_earlier_date_does_not_keep_todays_listing_out(make, dumps: Path) -> None:
    """A 404 page for one date ended the fetch there: today's listing was not asked for until the bad
    date left the window (days_back days later)."""
    server = Server(default=only_on("2024-03-19", httpx.Response(404)))
    with pytest.raises(SourceError, match="2024-03-18"):
        make(server, days_back=2).fetch(NOW)
    assert server.dates == ["2024-03-19", "2024-03-18", "2024-03-17"]
    assert [name[:19] for name in files(dumps)] == ["hf-daily-2024-03-19"]


def test_a_date_that_fails_is_reported_once_by_whoever_reports_the_fetch(
    make, caplog: pytest.LogCaptureFixture
) -> None:
    """The source logged it as a warning, the sources' runner as an error, then `run` printed it: now the
    runner only returns it, for `run` to print and the daemon to log (test_daemon, test_sources_fetch_server)."""
    source = make(Server(default=only_on("2024-03-19", httpx.Response(404))), days_back=2)
    with caplog.at_level(logging.INFO):
        _, failures = fetch_all([source], NOW)
    assert len(failures) == 1 and failures[0].startswith("fetch from hf-daily failed: 2 dates failed: ")
    logged = [r for r in caplog.records if "HTTP 404" in r.getMessage()]
    assert logged == [], [r.getMessage() for r in logged]


def test_a_date_that_failed_before_the_service_went_down_is_still_logged(
    make, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    """The dates' problems were reported only at the end: a later date giving up dropped them."""
    server = Server(httpx.Response(404), default=lambda request: httpx.Response(503))
    with caplog.at_level(logging.INFO):
        _, failures = fetch_all([make(server, days_back=1, max_retries=1)], NOW)
    assert len(failures) == 1 and "HTTP 503" in failures[0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"cannot fetch {URL}: HTTP 404 Not Found"
    ]


def test_a_service_down_ends_the_fetch_at_its_first_date(make, sleeps: Sleeps) -> None:
    server = Server(default=lambda request: httpx.Response(503))
    with pytest.raises(SourceError, match="503"):
        make(server, days_back=2, max_retries=1).fetch(NOW)
    assert len(server.requests) == 2  # one date, two attempts: the others would wait the same


def test_a_date_the_service_keeps_failing_holds_back_no_newer_one(make, dumps: Path, sleeps: Sleeps) -> None:
    """Oldest first, a date answered 500 through every retry ended the fetch before today's."""

    with pytest.raises(SourceError, match="2024-03-18"):
        make(Server(default=only_on("2024-03-19", httpx.Response(500))), days_back=1, max_retries=1).fetch(
            NOW
        )
    assert [name[:19] for name in files(dumps)] == ["hf-daily-2024-03-19"]


def test_every_date_that_failed_is_named(make) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        day = request.url.params["date"]
        return httpx.Response(404) if day == "2024-03-18" else ok(b'[{"paper": {"id": 1}}]')

    with pytest.raises(SourceError) as caught:
        make(Server(default=api), days_back=1).fetch(NOW)
    assert caught.value.message.startswith("2 dates failed: ")
    assert "date=2024-03-19" in caught.value.message and "date=2024-03-18" in caught.value.message


def test_a_stop_during_a_request_asks_for_no_other_date(make, tmp_path: Path) -> None:
    """The stop ended one date's request, and every other date was asked for (and warned about)."""
    stop = threading.Event()

    def api(request: httpx.Request) -> httpx.Response:
        stop.set()  # a signal while this request is in flight
        time.sleep(0.5)
        return ok(recorded(request.url.params["date"]))

    server = Server(default=api)
    source = make(server, days_back=3)
    source._stop = stop
    with pytest.raises(SourceError, match="stopped by a signal"):
        source.fetch(NOW)
    assert server.dates == ["2024-03-19"]


def test_a_state_key_with_a_password_from_before_is_dropped(make, tmp_path: Path) -> None:
    state = tmp_path / "state" / "hf-daily.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"https://mirror:Sup3r-S3cret@hf.test": {"2024-03-19": {"etag": '"x"'}}}))
    make(Server(default=lambda request: ok(b"[]"))).fetch(NOW)
    assert "Sup3r-S3cret" not in state.read_text()


def test_unwritable_dumps_folder_is_a_source_error(make, dumps: Path) -> None:
    dumps.parent.mkdir(parents=True, exist_ok=True)
    dumps.write_text("not a folder")
    with pytest.raises(SourceError, match="cannot write dump"):
        make(Server(ok(recorded(DAY)))).fetch(NOW)


def test_corrupt_state_file_is_ignored_with_a_warning(make, tmp_path: Path, caplog) -> None:
    state = tmp_path / "state" / "hf-daily.json"
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    server = Server(ok(recorded(DAY), etag=ETAG))
    with caplog.at_level(logging.WARNING):
        assert len(make(server).fetch(NOW)) == 1
    assert "unreadable fetch state" in caplog.text
    assert json.loads(state.read_text())[BASE]["2024-03-19"]["etag"] == ETAG


def test_state_keeps_only_the_current_window(make, tmp_path: Path) -> None:
    server = Server(default=lambda request: ok(recorded(request.url.params["date"]), etag='"x"'))
    make(server, days_back=1).fetch(datetime(2024, 3, 17, tzinfo=UTC))
    make(server, days_back=1).fetch(datetime(2024, 3, 18, tzinfo=UTC))
    state = json.loads((tmp_path / "state" / "hf-daily.json").read_text())
    assert sorted(state[BASE]) == ["2024-03-17", "2024-03-18", "through"]
    assert state[BASE]["through"] == "2024-03-18"  # every date up to it fetched


@pytest.mark.parametrize(("off_days", "asked"), [(5, 7), (40, 15)])
def test_after_days_off_the_dates_missed_are_fetched_up_to_two_weeks_back(
    make, off_days: int, asked: int
) -> None:
    """Only today and `days_back` were asked for: a machine off for a week never had the days between."""
    server = Server(default=lambda request: ok(recorded(DAY)))
    make(server, days_back=1).fetch(datetime(2024, 3, 1, tzinfo=UTC))
    server.requests.clear()
    back = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(days=off_days)
    make(server, days_back=1).fetch(back)
    expected = [(back - timedelta(days=n)).date().isoformat() for n in range(asked)]
    assert server.dates == expected  # from the day before the last one fetched (14 days back at most)


def test_one_fetch_with_the_clock_far_ahead_does_not_turn_catching_up_off(make) -> None:
    """Its date was kept as the one every listing was fetched up to, until the clock reached it."""
    server = Server(default=ok(recorded(DAY)))
    for day in (1, 92, 2):  # 2024-03-01, a run with --now on 2024-06-01, 2024-03-02
        make(server, days_back=1).fetch(datetime(2024, 3, 1, tzinfo=UTC) + timedelta(days=day - 1))
    server.requests.clear()
    make(server, days_back=1).fetch(datetime(2024, 3, 9, tzinfo=UTC))  # after a week off
    assert server.dates == [f"2024-03-0{n}" for n in range(9, 0, -1)]  # from the day before the 2nd


def test_a_catch_up_cut_short_is_taken_up_again_by_the_next_fetch(make) -> None:
    """The next fetch counted from today's date, fetched first: the days between were never asked for."""
    listing = ok(recorded(DAY))
    make(Server(default=listing), days_back=1).fetch(datetime(2024, 3, 1, tzinfo=UTC))
    back = datetime(2024, 3, 9, tzinfo=UTC)
    limited = Server(listing, listing, httpx.Response(429, headers={"retry-after": "3600"}))
    with pytest.raises(GaveUp):
        make(limited, days_back=1).fetch(back)
    assert limited.dates == ["2024-03-09", "2024-03-08", "2024-03-07"]
    server = Server(default=listing)
    make(server, days_back=1).fetch(back + timedelta(hours=1))
    assert server.dates == [*(f"2024-03-0{n}" for n in range(9, 0, -1)), "2024-02-29"]  # back again


def test_a_listing_fetched_before_it_was_whole_is_asked_for_again_after_downtime(make) -> None:
    """Fetched at 00:30 UTC, the day's listing was empty; it counted as fetched, and after ten days off
    the catch-up started the day after it: that day's papers never came."""
    server = Server(
        default=lambda request: ok(b"[]" if request.url.params["date"] == "2024-03-01" else recorded(DAY))
    )
    make(server, days_back=3).fetch(datetime(2024, 3, 1, 0, 30, tzinfo=UTC))
    server.requests.clear()
    make(server, days_back=3).fetch(datetime(2024, 3, 11, 12, tzinfo=UTC))
    assert "2024-03-01" in server.dates and "2024-02-29" in server.dates


def test_no_temporary_files_are_left_behind(make, dumps: Path) -> None:
    server = Server(default=lambda request: ok(recorded(request.url.params["date"])))
    make(server, days_back=4).fetch(NOW)
    assert all(name.startswith("hf-daily-") and name.endswith(".json") for name in files(dumps))
    assert len(files(dumps)) == 3


# -- helpers ------------------------------------------------------------------------------------------


def test_listing_dates_treats_naive_as_utc() -> None:
    assert listing_dates(datetime(2024, 3, 19, 23, 59), 2) == [date(2024, 3, 17), date(2024, 3, 18), DAY]
    assert listing_dates(NOW, 0) == [DAY]


@pytest.mark.parametrize(
    ("value", "server_date", "expected"),
    [
        ("120", None, 120.0),
        (" 0 ", None, 0.0),
        ("Tue, 19 Mar 2024 09:31:00 GMT", "Tue, 19 Mar 2024 09:30:00 GMT", 60.0),
        ("Tue, 19 Mar 2024 09:29:00 GMT", "Tue, 19 Mar 2024 09:30:00 GMT", 0.0),  # already past
        ("Wed, 20 Mar 2024 09:30:00 GMT", "Tue, 19 Mar 2024 09:30:00 GMT", RETRY_AFTER_CAP),
        ("soon", None, None),
        ("-5", None, 0.0),  # read as the email APIs read it (newsletter.retry_after): no wait, the backoff
        ("1.5", None, 1.5),
        ("nan", None, None),
        ("86400000000000", None, RETRY_AFTER_CAP),
        ("", None, None),
        (None, None, None),
        ("²", None, None),  # a digit to str.isdigit, and a ValueError to float()
        ("Tue, 19 Mar 2024 09:31:00 +99999999999999999999", None, None),  # no run ends in OverflowError
        ("Tue, 19 Mar 2024 09:31:00 GMT", "Tue, 19 Mar 2024 09:30:00 +99999999999999999999", 0.0),  # from now
    ],
)
def test_retry_after_seconds(value: str | None, server_date: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value, server_date) == expected


def test_backoff_grows_and_is_capped() -> None:
    for attempt, (low, high) in enumerate([(1, 2), (2, 4), (4, 8), (8, 16)]):
        assert all(low <= backoff_delay(attempt) <= high for _ in range(50))
    assert 30 <= backoff_delay(20) <= 60


def test_user_agent_and_timeout_on_the_default_client(dumps: Path, tmp_path: Path) -> None:
    source = HfDailySource(dumps, tmp_path / "state", base_url=BASE, timeout=3.5)
    with source._session() as client:
        assert client.headers["user-agent"].startswith("newsletter/")
        assert client.timeout.read == 3.5
        assert client.follow_redirects


def test_base_url_trailing_slash_is_ignored(dumps: Path, tmp_path: Path) -> None:
    source = HfDailySource(dumps, tmp_path, base_url="https://hf.test/")
    assert source.url(DAY) == URL


def test_the_apis_error_body_is_shown_in_its_own_words(make) -> None:
    with pytest.raises(ParseError, match="the API answered with an error, not papers: 'Invalid date'"):
        make(Server(httpx.Response(200, json={"error": "Invalid date"}))).fetch(NOW)


def test_a_fetch_waits_five_minutes_at_most_to_retry(make, sleeps: Sleeps) -> None:
    """Each wait was capped (5 minutes), not their sum: a 429 asking 300 s at each of 4 retries held a
    cron run, and its digests, 20 minutes a source."""
    server = Server(default=lambda request: httpx.Response(429, headers={"retry-after": "200"}))
    with pytest.raises(GaveUp, match=r"429.*this fetch has waited 200 s to retry already, 300 s at most"):
        make(server, days_back=2).fetch(NOW)
    assert sleeps == [200.0] and len(server.requests) == 2
