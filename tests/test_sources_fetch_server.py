"""HfDailySource end to end against a real HTTP server on loopback serving recorded responses."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from newsletter.errors import SourceError
from newsletter.sources import list_dump_files, read_dump
from newsletter.sources.fetch import HfDailySource
from newsletter.store import Store

from .conftest import DATA
from .helpers import add_dumps, cli, outbox, seed_names

HF = DATA / "hf"
NOW = datetime(2024, 3, 19, 9, 30, tzinfo=UTC)


@dataclass
class Recorded:
    """What the fake API saw and how it should misbehave."""

    requests: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    stall_first: bool = False  # never answer the first request (the client times out)
    released: threading.Event = field(default_factory=threading.Event)  # set at teardown
    throttle_first: bool = False  # answer the first request with 429 + Retry-After
    trickle_first: bool = (
        False  # send the first body a few bytes at a time, each piece well within the timeout
    )
    trickle_headers_first: bool = False  # send the first reply's headers a line at a time, for 5 s


class FakeHub(BaseHTTPRequestHandler):
    """GET /api/daily_papers?date=... -> the recorded file for that date ([] when none), with an ETag."""

    recorded: Recorded

    def do_GET(self) -> None:
        seen = self.recorded
        seen.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        first = len(seen.requests) == 1
        if first and seen.stall_first:
            seen.released.wait(timeout=10)
            return None
        if first and seen.trickle_headers_first:
            return self._trickle_headers()
        if first and seen.throttle_first:
            return self._reply(429, b'{"error":"Too Many Requests"}', {"Retry-After": "2"})
        url = urlsplit(self.path)
        if url.path != "/api/daily_papers":
            return self._reply(404, b'{"error":"Not Found"}', {})
        body = _body_for(parse_qs(url.query).get("date", [""])[0])
        etag = f'W/"{len(body):x}-{hashlib.sha1(body).hexdigest()[:16]}"'
        if self.headers.get("If-None-Match") == etag:
            return self._reply(304, b"", {"ETag": etag})
        return self._reply(200, body, {"ETag": etag, "Content-Type": "application/json; charset=utf-8"})

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.recorded.statuses.append(status)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.recorded.trickle_first and len(self.recorded.requests) == 1:
            self._trickle(body)
        else:
            self.wfile.write(body)

    def _trickle_headers(self) -> None:
        with contextlib.suppress(OSError):  # the client hangs up
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for n in range(25):
                if self.recorded.released.wait(0.2):
                    return
                self.wfile.write(f"X-Slow-{n}: x\r\n".encode())
                self.wfile.flush()
            self.wfile.write(b"Content-Length: 2\r\n\r\n[]")

    def _trickle(self, body: bytes) -> None:
        with contextlib.suppress(OSError):  # the client hangs up
            for start in range(0, len(body), 64):
                self.wfile.write(body[start : start + 64])
                self.wfile.flush()
                time.sleep(0.05)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


def _body_for(day: str) -> bytes:
    path = HF / f"daily_papers-{day}.json"
    return path.read_bytes() if path.is_file() else b"[]"


@pytest.fixture
def hub() -> Iterator[tuple[str, Recorded]]:
    recorded = Recorded()
    handler = type("Handler", (FakeHub,), {"recorded": recorded})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        recorded.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_over_loopback_writes_replayable_dumps_then_gets_304s(hub, tmp_path: Path) -> None:
    base_url, recorded = hub
    dumps = tmp_path / "dumps"
    source = HfDailySource(dumps, tmp_path / "state", base_url=base_url, days_back=4)

    written = source.fetch(NOW)
    assert [p.name[:19] for p in written] == [
        "hf-daily-2024-03-15",
        "hf-daily-2024-03-18",
        "hf-daily-2024-03-19",
    ]
    assert list_dump_files(dumps) == written
    for path in written:
        assert path.read_bytes() == _body_for(path.name[9:19])  # saved byte for byte: replayable
    assert recorded.statuses == [200] * 5
    assert recorded.requests[0]["user-agent"].startswith("newsletter/")

    assert source.fetch(NOW + timedelta(hours=1)) == []
    assert recorded.statuses[5:] == [304] * 5
    assert all(r["if-none-match"].startswith('W/"') for r in recorded.requests[5:])
    assert list_dump_files(dumps) == written


def test_fetched_dumps_ingest_into_the_store(hub, tmp_path: Path) -> None:
    base_url, _ = hub
    dumps = tmp_path / "dumps"
    HfDailySource(dumps, tmp_path / "state", base_url=base_url, days_back=4).fetch(NOW)
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        results = [store.ingest(read_dump(path), NOW) for path in list_dump_files(dumps)]
        assert [(r.papers, r.new) for r in results] == [(3, 3), (2, 2), (2, 2)]
        assert store.paper_by_key("2403.13187") is not None


def test_read_timeout_over_loopback_is_retried(hub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base_url, recorded = hub
    recorded.stall_first = True
    sleeps: list[float] = []
    source = HfDailySource(
        tmp_path / "dumps",
        tmp_path / "state",
        base_url=base_url,
        days_back=0,
        timeout=0.3,
        sleep=sleeps.append,
    )
    with caplog.at_level(logging.INFO, logger="newsletter"):
        written = source.fetch(NOW)
    assert len(written) == 1 and len(read_dump(written[0]).papers) == 2
    assert "ReadTimeout" in caplog.text
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 2.0
    assert len(recorded.requests) == 2


@pytest.mark.parametrize(
    ("misbehaviour", "logged"),
    [
        ("trickle_first", "the response took longer than the timeout"),  # ~2 KB, 64 bytes every 0.05 s
        ("trickle_headers_first", "no whole reply within 1 s"),  # a header line every 0.2 s
    ],
)
def test_a_reply_that_trickles_in_past_the_timeout_is_given_up_and_retried(
    hub, tmp_path: Path, caplog: pytest.LogCaptureFixture, misbehaviour: str, logged: str
) -> None:
    """httpx times each read alone: a body, or headers, coming a piece at a time, each well within the
    timeout, held the run (and the daemon's fetches) for as long as the server went on."""
    base_url, recorded = hub
    setattr(recorded, misbehaviour, True)
    sleeps: list[float] = []
    source = HfDailySource(
        tmp_path / "dumps",
        tmp_path / "state",
        base_url=base_url,
        days_back=0,
        timeout=0.4,
        sleep=sleeps.append,
    )
    with caplog.at_level(logging.INFO, logger="newsletter"):
        written = source.fetch(NOW)
    assert logged in caplog.text
    assert len(written) == 1 and len(read_dump(written[0]).papers) == 2  # the second answer, whole
    assert len(recorded.requests) == 2 and len(sleeps) == 1


def test_429_over_loopback_honours_retry_after(hub, tmp_path: Path) -> None:
    base_url, recorded = hub
    recorded.throttle_first = True
    sleeps: list[float] = []
    source = HfDailySource(
        tmp_path / "dumps", tmp_path / "state", base_url=base_url, days_back=0, sleep=sleeps.append
    )
    assert len(source.fetch(NOW)) == 1
    assert sleeps == [2.0]
    assert recorded.statuses == [429, 200]


def test_cli_run_fetches_the_sources_then_delivers_what_they_brought(hub, env: dict[str, str]) -> None:
    base_url, recorded = hub
    sources = [{"kind": "folder"}, {"kind": "hf-daily", "base_url": base_url, "days_back": 4}]
    env = {**env, "NEWSLETTER_SOURCES": json.dumps(sources)}

    cli(env, "run", "--no-fetch", "--now", NOW.isoformat())
    assert recorded.requests == []

    proc = cli(env, "-v", "run", "--json", "--now", NOW.isoformat())
    report = json.loads(proc.stdout)
    assert len(recorded.requests) == 5
    assert (
        "new dump" in proc.stderr and "HTTP Request" not in proc.stderr
    )  # httpx's line per request: --debug
    assert [(Path(d["file"]).name[:19], d["new"]) for d in report["dumps"]] == [
        ("hf-daily-2024-03-15", 3),
        ("hf-daily-2024-03-18", 2),
        ("hf-daily-2024-03-19", 2),
    ]
    assert report["errors"] == []


def _with_a_source_down(env: dict[str, str]) -> dict[str, str]:
    """The folder with one seed, and an hf-daily source on a port nothing listens on."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    down = {"kind": "hf-daily", "base_url": f"http://127.0.0.1:{port}", "max_retries": 0, "timeout": 2}
    env = {**env, "NEWSLETTER_SOURCES": json.dumps([{"kind": "folder"}, down])}
    add_dumps(env, seed_names()[0])
    return env


def test_cli_run_with_a_source_down_still_delivers_the_folder_and_exits_1(env: dict[str, str]) -> None:
    env = _with_a_source_down(env)

    proc = cli(env, "run", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("fetch from hf-daily failed") == 1, proc.stderr  # printed once, not logged too
    assert "1 dump ingested" in proc.stdout and "sent" in proc.stdout
    assert outbox(env)


def test_a_mirrors_password_in_its_url_is_sent_as_auth_and_shown_nowhere(hub, tmp_path: Path) -> None:
    """user:password@ in a source's base_url was quoted in fetch errors, logs, last-run.json and the
    state file's keys."""
    base_url, recorded = hub
    password = "Sup3r-S3cret-pw"
    with_password = base_url.replace("http://", f"http://mirror:{password}@") + "/wrong-prefix"
    source = HfDailySource(tmp_path / "dumps", tmp_path / "state", base_url=with_password, days_back=0)
    with pytest.raises(SourceError) as caught:
        source.fetch(NOW)
    assert recorded.requests[0]["authorization"].startswith("Basic ")
    assert password not in str(caught.value) and password not in repr(source)
    assert "mirror" not in str(caught.value) and base_url in str(caught.value)
    assert password not in (tmp_path / "state" / "hf-daily.json").read_text()


def test_a_source_down_is_still_reported_when_the_run_then_fails(env: dict[str, str]) -> None:
    """fetch_all no longer logs a failure, and `run` adds it to the report only once the pipeline has
    returned: a run that then fails (here the held-clicks file cannot be read) never said the fetch failed."""
    env = _with_a_source_down(env)
    home = Path(env["NEWSLETTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "held-clicks.jsonl").mkdir()  # anything that makes pipeline.run raise a NewsletterError
    (home / "held-clicks.jsonl" / "x").write_text("x")

    proc = cli(env, "run", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 1
    assert "fetch from hf-daily failed" in proc.stderr, proc.stderr
