"""`newsletter run` against a Postmark-shaped HTTP API on loopback that refuses the key or rate-limits."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .helpers import add_dumps, cli, seed_names


@dataclass
class Api:
    mode: str = "ok"  # ok | bad-key | rate-limited | down
    accepted: list[str] = field(default_factory=list)  # recipients
    requests: int = 0


class PostmarkLike(BaseHTTPRequestHandler):
    api: Api

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.api.requests += 1
        if self.api.mode == "bad-key":
            return self._reply(
                401, {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}
            )
        if self.api.mode == "down":
            return self._reply(503, {"ErrorCode": 503, "Message": "Service Unavailable"})
        if self.api.mode == "rate-limited":
            return self._reply(
                429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, {"Retry-After": "3600"}
            )
        self.api.accepted.append(parseaddr(body["To"])[1])
        ok = {"To": body["To"], "SubmittedAt": "2026-03-11T08:00:00Z", "MessageID": f"id-{self.api.requests}"}
        return self._reply(200, {**ok, "ErrorCode": 0, "Message": "OK"})

    def _reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api(env: dict[str, str]) -> Iterator[Api]:
    state = Api()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (PostmarkLike,), {"api": state}))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    env |= {
        "NEWSLETTER_TRANSPORT": "postmark",
        "NEWSLETTER_API_KEY": "server-token-secret",
        "NEWSLETTER_API_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "NEWSLETTER_RETRY_BACKOFF": "0",
    }
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _statuses(env: dict[str, str], now: str) -> tuple[int, dict[str, str]]:
    proc = cli(env, "run", "--json", "--now", now, check=False)
    digests = json.loads(proc.stdout)["digests"]
    return proc.returncode, {d["subscriber"]: d["status"] for d in digests if d["status"] != "skipped"}


def test_a_refused_key_keeps_every_digest_queued_until_it_is_fixed(env: dict[str, str], api: Api) -> None:
    add_dumps(env, *seed_names()[:2])
    api.mode = "bad-key"
    code, statuses = _statuses(env, "2026-03-11T08:00:00Z")
    assert code == 1 and api.requests == 1  # the key is not tried again for the next subscriber
    assert list(statuses.values()) == ["failed"]  # the one tried; the others were never attempted
    api.mode = "ok"
    code, statuses = _statuses(env, "2026-03-11T08:10:00Z")
    assert code == 0
    assert sorted(api.accepted) == ["diff@example.org", "ssm@example.org"]  # nothing lost, nothing twice


def test_a_long_retry_after_ends_the_run_at_once_and_the_digests_wait(env: dict[str, str], api: Api) -> None:
    add_dumps(env, *seed_names()[:2])
    api.mode = "rate-limited"
    started = time.monotonic()
    code, statuses = _statuses(env, "2026-03-11T08:00:00Z")
    assert code == 1 and time.monotonic() - started < 60 and api.requests == 1  # no hour-long sleep
    [(limited, status)] = statuses.items()  # the others were not attempted: still queued
    assert status == "failed"
    api.mode = "ok"
    _statuses(env, "2026-03-11T08:10:00Z")
    assert limited not in api.accepted  # the one the API asked to hold waits out its hour
    code, _ = _statuses(env, "2026-03-11T09:10:00Z")
    assert code == 0 and sorted(api.accepted) == ["diff@example.org", "ssm@example.org"]


def test_retries_are_the_settings_own_not_multiplied_by_two_loops(env: dict[str, str], api: Api) -> None:
    add_dumps(env, *seed_names()[:2])
    api.mode = "down"
    code, statuses = _statuses({**env, "NEWSLETTER_RETRIES": "1"}, "2026-03-11T08:00:00Z")
    assert code == 1 and set(statuses.values()) == {"failed"}
    assert api.requests == 2 * len(statuses)  # 1 + NEWSLETTER_RETRIES per digest
