"""Helpers for tests that drive the `newsletter` entry point."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from newsletter.config import Settings
from newsletter.serve import answered_hosts, create_app
from newsletter.serve.key import cookie_name

from .conftest import ROOT, SEEDS


def tool_missing(reason: str) -> None:
    """Skip a test whose system tool is absent, except under CI (``CI=true``): `.ci/run` installs it,
    so a green run must have run the test."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id", "List-Unsubscribe")

SUBSCRIBERS = """
defaults: {cadence: daily, max_items: 10}
subscribers:
  - email: ssm@example.org
    name: Sam
    interests: ["chain-of-thought", "latent space", "language grounding"]
  - email: diff@example.org
    interests: ["sound", "speech synthesis"]
    cadence: each-dump
  - email: nobody@example.org
    interests: ["sourdough baking"]
"""


def cli(
    env: dict[str, str], *args: str, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def make_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a CLI run in its own state folder, with an empty dumps folder."""
    (tmp_path / "subscribers.yaml").write_text(SUBSCRIBERS)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    return {
        "NEWSLETTER_HOME": str(tmp_path / "state"),
        "NEWSLETTER_SUBSCRIBERS": str(tmp_path / "subscribers.yaml"),
        "NEWSLETTER_DUMPS": str(dumps),
        "NEWSLETTER_RANKER": "lexical",
        "NEWSLETTER_FROM": "Papers <digest@papers.example.org>",
    }


def env_settings(env: dict[str, str], **extra: object) -> Settings:
    """The settings a CLI run in ``env`` reads (its folders and sender), with ``extra`` settings."""
    from newsletter.config import load_settings

    folders = {
        "home": "NEWSLETTER_HOME",
        "subscribers": "NEWSLETTER_SUBSCRIBERS",
        "dumps": "NEWSLETTER_DUMPS",
    }
    given = {name: env[variable] for name, variable in folders.items()}
    return load_settings(**given, sender=env["NEWSLETTER_FROM"], **extra)


def add_dumps(env: dict[str, str], *names: str) -> None:
    for name in names:
        shutil.copy(SEEDS / name, Path(env["NEWSLETTER_DUMPS"]) / name)


def outbox(env: dict[str, str]) -> list[email.message.EmailMessage]:
    files = sorted((Path(env["NEWSLETTER_HOME"]) / "outbox").glob("*.eml"))
    return [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]


def seed_names() -> list[str]:
    return sorted(p.name for p in SEEDS.glob("*.txt"))


def one_installation(*homes: Path) -> None:
    """State folders whose new databases share one installation value (a copy of one empty database),
    so that the digests two of them send can be compared byte for byte, Message-IDs included."""
    from newsletter.store import Store

    first = homes[0] / "state.db"
    homes[0].mkdir(parents=True, exist_ok=True)
    Store(f"sqlite:///{first}").close()
    for home in homes[1:]:
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, home / "state.db")


def key_cookie(app: Starlette, url: str = "http://testserver") -> dict[str, str]:
    """The cookie a browser gets at ``url`` for opening the URL with the preview key `serve` printed."""
    return {cookie_name(urlsplit(url).port): app.state.preview_key.value}


def keyed(app: Starlette, **options: Any) -> TestClient:
    """A TestClient with the preview key's cookie, as a browser has it after opening the keyed URL."""
    return TestClient(app, cookies=key_cookie(app, options.get("base_url", "http://testserver")), **options)


def with_key(url: str, app: Starlette) -> str:
    """``url`` with ``?key=`` (or ``&key=``) and the preview key, as `serve` prints it on a terminal."""
    return f"{url}{'&' if '?' in url else '?'}key={app.state.preview_key.value}"


@contextmanager
def server_process(module: str, *args: object) -> Iterator[int]:
    """``python -m module args...`` as a server in its own process: it prints its port, stops when stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


class LiveServer:
    """`newsletter serve`'s app on a real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        self.settings = settings
        self.app = create_app(settings, clock=lambda: now, allowed_hosts=answered_hosts(settings))
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)  # room for many requests at once
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.cookies = key_cookie(self.app, self.url)  # the preview pages ask for the key
        config = uvicorn.Config(self.app, log_level="warning", ws="none", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
