"""ArxivSource end to end against a real HTTP server on loopback serving a recorded arXiv RSS feed."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from newsletter.errors import ParseError, SourceError
from newsletter.sources import list_dump_files, read_dump
from newsletter.sources.arxivfetch import ArxivSource

from .conftest import DATA
from .helpers import cli

FEED = (DATA / "realdata" / "arxiv-rss_2026-09-24.xml").read_bytes()
NOW = datetime(2026, 9, 24, 9, 0, tzinfo=UTC)


@dataclass
class Recorded:
    requests: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    unavailable_first: bool = False  # answer the first request with 503 + Retry-After: 1
    body: bytes = FEED


class FakeArxiv(BaseHTTPRequestHandler):
    """GET /rss/<categories> -> the recorded feed with an ETag (304 when it matches)."""

    recorded: Recorded

    def do_GET(self) -> None:
        seen = self.recorded
        seen.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if seen.unavailable_first and len(seen.requests) == 1:
            return self._reply(503, b"busy", {"Retry-After": "1"})
        if not self.path.startswith("/rss/"):
            return self._reply(404, b"not found", {})
        etag = f'"{hashlib.sha1(seen.body).hexdigest()[:16]}"'
        if self.headers.get("If-None-Match") == etag:
            return self._reply(304, b"", {"ETag": etag})
        return self._reply(200, seen.body, {"ETag": etag, "Content-Type": "application/rss+xml"})

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.recorded.statuses.append(status)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def arxiv() -> Iterator[tuple[str, Recorded]]:
    recorded = Recorded()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (FakeArxiv,), {"recorded": recorded}))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def source(base_url: str, tmp_path: Path, sleeps: list[float] | None = None) -> ArxivSource:
    sleep = (sleeps if sleeps is not None else []).append
    return ArxivSource(
        tmp_path / "dumps", tmp_path / "state", categories=["cs.LG", "cs.CL"], base_url=base_url, sleep=sleep
    )


def test_the_feed_is_saved_byte_for_byte_then_asked_for_conditionally(arxiv, tmp_path: Path) -> None:
    base_url, recorded = arxiv
    feed = source(base_url, tmp_path)
    (written,) = feed.fetch(NOW)
    assert written.name.startswith("arxiv-cs.LG+cs.CL-2026-09-24-") and written.suffix == ".xml"
    assert written.read_bytes() == FEED
    assert list_dump_files(tmp_path / "dumps") == [written]
    assert [p.arxiv_id for p in read_dump(written).papers] == ["2609.26811", "2609.26820", "2205.06398"]
    assert recorded.requests[0]["user-agent"].startswith("newsletter/")
    assert "rss+xml" in recorded.requests[0]["accept"]

    assert feed.fetch(NOW + timedelta(hours=1)) == []
    assert recorded.statuses == [200, 304]
    assert recorded.requests[1]["if-none-match"].startswith('"')


def test_a_503_is_retried_after_retry_after(arxiv, tmp_path: Path) -> None:
    base_url, recorded = arxiv
    recorded.unavailable_first = True
    sleeps: list[float] = []
    assert len(source(base_url, tmp_path, sleeps).fetch(NOW)) == 1
    assert sleeps == [1.0] and recorded.statuses == [503, 200]


def test_a_feed_that_could_not_be_saved_is_fetched_again(arxiv, tmp_path: Path) -> None:
    """A full disk: the listing was remembered as seen before it was written, so the next runs got a
    304 and its papers were never ingested."""
    base_url, recorded = arxiv
    (tmp_path / "dumps").write_text("a file where the folder should be")  # any write fails
    with pytest.raises(SourceError, match="cannot write dump"):
        source(base_url, tmp_path).fetch(NOW)
    (tmp_path / "dumps").unlink()
    (written,) = source(base_url, tmp_path).fetch(NOW + timedelta(hours=1))
    assert written.read_bytes() == FEED
    assert "if-none-match" not in recorded.requests[1] and recorded.statuses == [200, 200]


def test_a_broken_feed_writes_nothing(arxiv, tmp_path: Path) -> None:
    base_url, recorded = arxiv
    recorded.body = FEED[:3000]
    with pytest.raises(ParseError, match="malformed feed"):
        source(base_url, tmp_path).fetch(NOW)
    assert not (tmp_path / "dumps").exists() or list_dump_files(tmp_path / "dumps") == []


def test_cli_run_fetches_the_arxiv_source_and_ingests_it(arxiv, env: dict[str, str]) -> None:
    base_url, recorded = arxiv
    sources = [{"kind": "folder"}, {"kind": "arxiv", "categories": ["cs.LG", "cs.CL"], "base_url": base_url}]
    env = {**env, "NEWSLETTER_SOURCES": json.dumps(sources)}
    report = json.loads(cli(env, "run", "--json", "--now", NOW.isoformat()).stdout)
    assert [(Path(d["file"]).name[:29], d["papers"], d["new"]) for d in report["dumps"]] == [
        ("arxiv-cs.LG+cs.CL-2026-09-24-", 3, 3)
    ]
    assert report["errors"] == [] and len(recorded.requests) == 1


def test_two_feeds_keep_their_own_validators(arxiv, tmp_path: Path) -> None:
    base_url, recorded = arxiv
    first = source(base_url, tmp_path)
    other = ArxivSource(tmp_path / "dumps", tmp_path / "state", categories=["stat.ML"], base_url=base_url)
    assert len(first.fetch(NOW)) == 1
    (saved,) = other.fetch(NOW)  # same body, but this feed never saw it: not a 304 on the other's ETag
    assert saved.name.startswith("arxiv-stat.ML-2026-09-24-")
    assert "if-none-match" not in recorded.requests[1]
    assert first.fetch(NOW) == [] and other.fetch(NOW) == []
    assert recorded.statuses == [200, 200, 304, 304]
