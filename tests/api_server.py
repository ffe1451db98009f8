"""A Postmark-shaped email API on loopback: POST /email and POST /email/batch, as Postmark answers them.

/email answers 200 with {"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}, or 422 with an
ErrorCode; /email/batch answers 200 with one such object per message, in order, each with its own ErrorCode
(https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails). Every message it accepts is
counted (and, with a journal, appended as {"to", "id", "papers"} before the reply goes out), so a client
killed while waiting for the reply leaves a message that arrived but is not known to have.

``delay`` seconds pass between reading a request and accepting it, like a server across a network; requests
are served concurrently (one thread each, HTTP/1.1 keep-alive). Used in-process by the tests
(``running``) and as its own process by the kill test and benchmarks/throughput.py:

    python -m tests.api_server JOURNAL DELAY     # prints its port; stops when stdin closes
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_PAPER_LINK = re.compile(r"https://arxiv\.org/\S+")


@dataclass
class Api:
    """The server's state; tests set ``mode`` and the other knobs while it runs."""

    mode: str = "ok"  # ok | bad-key | rate-limited | down | drop (read, accept, close without a reply)
    delay: float = 0.0
    journal: Path | None = None
    refuse: set[str] = field(default_factory=set)  # recipients answered ErrorCode 406 (inactive)
    limit_window: float = 0.0  # > 0: request number ``limit_after`` + 1 opens this many seconds of 429s
    limit_after: int = 0
    retry_after: str = "3600"  # for mode rate-limited
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (recipient, Message-ID)
    requests: int = 0
    batches: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, status answered)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _window_from: float | None = None

    @property
    def recipients(self) -> list[str]:
        return [to for to, _ in self.accepted]

    def answer(self, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON reply, headers) for one request; records what it accepts."""
        with self.lock:
            self.requests += 1
            status, reply, headers = self._answer(path, body)
            self.arrivals.append((time.monotonic(), status))
        return status, reply, headers

    def _answer(self, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        lines: list[str] = []
        if path == "/email/batch":
            self.batches += 1
            results = [self._one(message, lines) for message in body]
            self._journal(lines)
            return 200, results, {}
        result = self._one(body, lines)
        self._journal(lines)
        return (200 if result["ErrorCode"] == 0 else 422), result, {}

    def _journal(self, lines: list[str]) -> None:
        if self.journal is not None and lines:
            with self.journal.open("a", encoding="utf-8") as out:
                out.write("".join(lines))

    def _refusal(self) -> tuple[int, Any, dict[str, str]] | None:
        if self.mode == "bad-key":
            return 401, {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}, {}
        if self.mode == "down":
            return 503, {"ErrorCode": 503, "Message": "Service Unavailable"}, {}
        if self.mode == "rate-limited":
            return (
                429,
                {"ErrorCode": 429, "Message": "Rate limit exceeded"},
                {"Retry-After": self.retry_after},
            )
        if self.limit_window and self.requests > self.limit_after:
            now = time.monotonic()
            self._window_from = self._window_from or now
            left = self._window_from + self.limit_window - now
            if left > 0:
                limited = {"ErrorCode": 429, "Message": "Rate limit exceeded"}
                return 429, limited, {"Retry-After": f"{left:.3f}"}
        return None

    def _one(self, message: dict[str, Any], journal: list[str]) -> dict[str, Any]:
        to = parseaddr(message["To"])[1]
        if to in self.refuse:
            text = f"You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: {to}."
            return {"ErrorCode": 406, "Message": text, "To": message["To"]}
        headers = {h["Name"]: h["Value"] for h in message.get("Headers", [])}
        message_id = headers.get("Message-ID", "")
        self.accepted.append((to, message_id))
        if self.journal is not None:
            papers = _PAPER_LINK.findall(message.get("TextBody", ""))
            journal.append(json.dumps({"to": to, "id": message_id, "papers": papers}) + "\n")
        submitted = "2026-03-11T08:00:00Z"
        return {"To": message["To"], "SubmittedAt": submitted, "MessageID": f"pm-{len(self.accepted)}",
                "ErrorCode": 0, "Message": "OK"}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx's pool expects
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    api: Api

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, reply, headers = self.api.answer(self.path, body)
        if self.api.delay and status < 300:  # refusals (a 429) come back at once, as from a real API
            time.sleep(self.api.delay)
        if self.api.mode == "drop":  # accepted, then the connection goes before the reply
            self.close_connection = True
            return
        data = json.dumps(reply).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client killed mid-request is expected
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def running(api: Api) -> Iterator[str]:
    """Serve ``api`` from a thread of this process; yields its base URL."""
    server = _Server(("127.0.0.1", 0), type("Handler", (_Handler,), {"api": api}))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def server_process(journal: Path, delay: float) -> AbstractContextManager[int]:
    """This server in its own process (a client there can be killed at any moment); yields its port."""
    from tests.helpers import server_process as process

    return process("tests.api_server", journal, delay)


def serve(journal: Path, delay: float) -> None:
    """Serve until stdin closes, journaling every accepted message; prints the port first."""
    with running(Api(delay=delay, journal=journal)) as url:
        print(url.rsplit(":", 1)[1], flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(sys.argv[2]))
