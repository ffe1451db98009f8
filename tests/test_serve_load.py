"""`newsletter serve` on a real uvicorn on loopback: a busy port, unsubscribes under preview load, odd addresses."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from newsletter.serve import create_app, local_hosts
from newsletter.store import Store

from .helpers import add_dumps, make_env, seed_names
from .test_serve_unsubscribe import NOW, ONE_CLICK, SSM, settings_for, token

PREVIEWS = 48  # more than Starlette's 40 shared threads: before, the unsubscribe queued behind them
SLASHED = "team/ml@example.org"


class Server:
    """The preview app on uvicorn in a thread, on a port of its own."""

    def __init__(self, env: dict[str, str]) -> None:
        settings = settings_for(env)
        self.settings = settings
        app = create_app(settings, clock=lambda: NOW, allowed_hosts=local_hosts(settings))
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", ws="none", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = make_env(tmp_path)
    add_dumps(env, *seed_names()[:2])
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    path.write_text(
        path.read_text() + f'  - email: "{SLASHED}"\n    interests: ["state space models"]\n', "utf-8"
    )
    return env


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[Server]:
    with Server(env) as running:
        yield running


def test_an_unsubscribe_is_answered_while_previews_are_queued(server: Server) -> None:
    done_during_post = asyncio.run(_unsubscribe_under_load(server.url))
    # before: the POST waited for a thread behind the queued previews (8 or more finished first)
    assert done_during_post <= 2
    with Store(server.settings.db_url) as store:
        assert store.is_unsubscribed(SSM)


async def _unsubscribe_under_load(url: str) -> int:
    limits = httpx.Limits(max_connections=PREVIEWS + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        done = 0

        async def preview() -> None:
            nonlocal done
            response = await client.get(f"/s/{SSM}")
            assert response.status_code == 200
            done += 1

        tasks = [asyncio.create_task(preview()) for _ in range(PREVIEWS)]
        while done == 0:  # every request is in the server's hands, and it is busy
            await asyncio.sleep(0.01)
        before = done
        response = await client.post(f"/unsubscribe/{token(SSM)}", content=b"", headers=ONE_CLICK)
        during = done - before
        assert response.status_code == 200
        await asyncio.gather(*tasks)
        return during


def test_an_address_with_a_slash_gets_a_working_preview_link(server: Server) -> None:
    index = httpx.get(server.url + "/", timeout=60).text
    links = re.findall(r'href="(/s/team[^"]*)"', index)
    assert links, index
    for link in {links[0], links[0] + "/html", links[0] + "/text"}:
        response = httpx.get(server.url + link, timeout=60)
        assert response.status_code == 200, link
    assert SLASHED in httpx.get(server.url + links[0], timeout=60).text


def test_serve_on_a_busy_port_is_one_error_and_never_announces_the_url(env: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n")
    assert "preview at" not in proc.stderr and "http://" not in proc.stderr
    assert "Traceback" not in proc.stderr
