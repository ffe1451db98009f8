"""`newsletter serve` on a real uvicorn on loopback: a busy port, unsubscribes under preview load, odd addresses."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from newsletter.pipeline import Pipeline
from newsletter.store import Store

from .helpers import LiveServer, add_dumps, make_env, seed_names, with_key
from .test_serve_unsubscribe import NOW, ONE_CLICK, SSM, settings_for, token

PREVIEWS = 48  # more than Starlette's 40 shared threads: before, the unsubscribe queued behind them
SLASHED = "team/ml@example.org"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = make_env(tmp_path)
    add_dumps(env, *seed_names()[:2])
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    path.write_text(
        path.read_text() + f'  - email: "{SLASHED}"\n    interests: ["graph neural networks"]\n', "utf-8"
    )
    return env


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[LiveServer]:
    with LiveServer(settings_for(env), NOW) as running:
        yield running


def test_an_unsubscribe_is_answered_while_previews_are_queued(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _Gate()
    real_preview = Pipeline.preview

    def held_preview(pipeline: Pipeline, *args: Any) -> Any:  # inside the previewer's lock, as ranking is
        with gate.lock:
            gate.entered += 1
        gate.release.wait(timeout=120)
        return real_preview(pipeline, *args)

    monkeypatch.setattr(Pipeline, "preview", held_preview)
    try:
        status, finished = asyncio.run(_unsubscribe_under_load(server, gate))
    finally:
        gate.release.set()
    # before: the previews held all of Starlette's shared threads and the POST waited behind them
    assert (status, finished) == (200, 0)
    with Store(server.settings.db_url) as store:
        assert store.is_unsubscribed(SSM)


class _Gate:
    """Holds every preview inside the server until ``release`` is set; counts those that reached it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.entered = 0


async def _unsubscribe_under_load(server: LiveServer, gate: _Gate) -> tuple[int, int]:
    """The POST's status, and how many previews had finished when it was answered (all are held)."""
    limits = httpx.Limits(max_connections=PREVIEWS + 4)
    options = {"limits": limits, "timeout": 120, "cookies": server.cookies}
    async with httpx.AsyncClient(base_url=server.url, **options) as client:
        done = 0

        async def preview() -> None:
            nonlocal done
            response = await client.get(f"/s/{SSM}")
            assert response.status_code == 200
            done += 1

        tasks = [asyncio.create_task(preview()) for _ in range(PREVIEWS)]
        while not gate.entered:  # the server is busy with a preview it cannot finish, the rest queued
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # and has read the other requests
        try:
            response = await client.post(
                f"/unsubscribe/{token(SSM)}", content=b"", headers=ONE_CLICK, timeout=30
            )
        finally:
            gate.release.set()
        finished = done
        await asyncio.gather(*tasks)
        return response.status_code, finished


def test_an_address_with_a_slash_gets_a_working_preview_link(server: LiveServer) -> None:
    index = httpx.get(server.url + "/", cookies=server.cookies, timeout=60).text
    links = re.findall(r'href="(/s/team[^"]*)"', index)
    assert links, index
    for link in {links[0], links[0] + "/html", links[0] + "/text"}:
        response = httpx.get(server.url + link, cookies=server.cookies, timeout=60)
        assert response.status_code == 200, link
    with httpx.Client(timeout=60) as browser:  # the key's redirect keeps the '/' in the address as %2F
        page = browser.get(with_key(server.url + links[0], server.app), follow_redirects=True)
    assert page.url.raw_path.decode() == links[0] and SLASHED in page.text


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


def test_serve_with_a_state_folder_it_cannot_make_is_one_error_before_the_url(
    env: dict[str, str], tmp_path: Path
) -> None:
    """It served, then answered every page with an error 500 and a traceback in its log."""
    (tmp_path / "blocker").write_text("a file where the folder should be\n")
    home = tmp_path / "blocker" / "state"
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "serve", "--port", "1"],
        env={**os.environ, **env, "NEWSLETTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "preview at" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        f"error: cannot create the state folder {home} (--home or NEWSLETTER_HOME): "
    )


def test_an_empty_host_is_refused_not_read_as_every_interface() -> None:
    from newsletter.errors import ConfigError
    from newsletter.serve import listen

    with pytest.raises(ConfigError, match="--host is empty"):
        listen(" ", 0)  # an empty bind address would listen on every interface, unannounced
