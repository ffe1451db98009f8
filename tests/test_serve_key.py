"""`newsletter serve`'s preview key: the pages with every subscriber's address ask for it, the emails'
links do not, and it never reaches a log."""

from __future__ import annotations

import logging
import os
import pty
import select
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.testclient import TestClient

from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.feedback import feedback_token
from newsletter.serve import create_app, preview_key, start_line
from newsletter.serve.key import COOKIE, KEY_FILE, PreviewKey
from newsletter.unsubscribe import make_token

from .helpers import add_dumps, make_env, seed_names, with_key
from .test_serve import _free_port, _wait_for
from .test_serve_unsubscribe import NOW, SECRET, SSM, settings_for

PREVIEWS = ["/", f"/s/{SSM}", f"/s/{SSM}/html", f"/s/{SSM}/text", f"/s/{SSM}/last"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = make_env(tmp_path)
    add_dumps(env, *seed_names()[:2])
    return env


@pytest.fixture
def app(env: dict[str, str]) -> Starlette:
    return create_app(settings_for(env), clock=lambda: NOW)


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as client:  # no cookie: a browser that has no key
        yield client


def key_of(env: dict[str, str]) -> str:
    return (Path(env["NEWSLETTER_HOME"]) / KEY_FILE).read_text().strip()


@pytest.mark.parametrize("path", PREVIEWS)
def test_a_preview_page_without_the_key_is_403_and_shows_no_address(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 403
    assert "example.org" not in response.text
    assert "Preview key needed" in response.text and KEY_FILE in response.text  # how to get in
    assert response.headers["cache-control"] == "no-store"


def test_the_key_in_the_url_sets_a_strict_cookie_and_redirects_to_the_url_without_it(
    app: Starlette, client: TestClient, env: dict[str, str]
) -> None:
    response = client.get(with_key(f"/s/{SSM}?width=375", app))
    assert response.status_code == 303
    assert response.headers["location"] == f"/s/{SSM}?width=375"  # out of the history and any Referer
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={key_of(env)};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Referrer-Policy" in response.headers
    page = client.get(response.headers["location"])  # the cookie suffices from then on
    assert page.status_code == 200 and SSM in page.text
    assert all(client.get(path).status_code != 403 for path in PREVIEWS)


def test_two_serves_on_two_ports_keep_each_their_own_cookie(env: dict[str, str], tmp_path: Path) -> None:
    """A browser sends a host's cookies to all its ports: opening the second serve's URL overwrote the
    first's key (one cookie name), whose pages were then 403."""
    first = create_app(settings_for(env), clock=lambda: NOW)
    other = create_app(settings_for({**env, "NEWSLETTER_HOME": str(tmp_path / "other")}), clock=lambda: NOW)
    browser: dict[str, str] = {}  # one host's cookies, whatever the port
    for app, port in ((first, 8000), (other, 8001)):
        with TestClient(app, base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as client:
            name, value = client.get(with_key("/", app)).headers["set-cookie"].split(";")[0].split("=")
            browser[name] = value
    with TestClient(first, base_url="http://127.0.0.1:8000", cookies=browser) as client:
        assert client.get(f"/s/{SSM}").status_code == 200


@pytest.mark.parametrize("wrong", ["wrong", "", "x" * 40])
def test_a_wrong_key_is_403_in_the_url_or_the_cookie(app: Starlette, client: TestClient, wrong: str) -> None:
    assert client.get(f"/?key={wrong}").status_code == 403
    with TestClient(app, cookies={COOKIE: wrong}) as other:
        assert other.get(f"/s/{SSM}").status_code == 403


def test_a_stale_key_beside_the_cookie_or_among_several_keys_is_no_refusal(
    app: Starlette, client: TestClient, env: dict[str, str]
) -> None:
    """The last ``key`` value alone was read, and a stale one in an old bookmark beat a valid cookie."""
    good = key_of(env)
    assert client.get(f"/?key={good}&key=junk").status_code == 303
    name = client.get(f"/?key={good}").headers["set-cookie"].split("=")[0]
    with TestClient(app, cookies={name: good}) as keyed:
        assert keyed.get("/?key=stale").status_code == 200


def test_the_emails_links_need_no_key(app: Starlette, client: TestClient) -> None:
    unsubscribe = client.get(f"/unsubscribe/{make_token(SSM, SecretStr(SECRET))}")
    assert unsubscribe.status_code == 200 and SSM in unsubscribe.text
    paper = app.state.previewer.page(SSM).selection.chosen[0].paper
    token = feedback_token(SSM, paper.key, SecretStr(SECRET))
    assert client.get(f"/feedback/less/{token}").status_code == 200
    assert client.post(f"/feedback/less/{token}").status_code == 200
    assert client.post(f"/unsubscribe/{make_token(SSM, SecretStr(SECRET))}").status_code == 200


# --- the key file ----------------------------------------------------------------------------------


def test_the_key_file_is_made_once_for_its_owner_only_and_reused(app: Starlette, env: dict[str, str]) -> None:
    path = Path(env["NEWSLETTER_HOME"]) / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert app.state.preview_key == PreviewKey(key_of(env), path)
    assert len(key_of(env)) == 32  # secrets.token_urlsafe(24)
    assert preview_key(settings_for(env)).value == key_of(
        env
    )  # a restarted serve: the browser's cookie works


def test_a_key_file_others_can_read_is_made_again(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    first = preview_key(settings_for(env))
    assert first.file is not None
    first.file.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        again = preview_key(settings_for(env))
    assert again.value != first.value and stat.S_IMODE(again.file.stat().st_mode) == 0o600  # type: ignore[union-attr]
    assert "could be read by others (mode 644" in caplog.text and first.value not in caplog.text
    # off a terminal the URL serve prints has no key in it ("open the URL serve prints now")
    assert "a new one is made there (read it from that file, or open the URL serve prints on a terminal)" in (
        caplog.text
    )


def _key_or_error(settings: Settings, path: Path) -> str:
    """preview_key's error, or what it did; a FIFO left blocking the open is opened for writing to free it."""
    outcome: list[str] = []

    def run() -> None:
        try:
            outcome.append(f"kept {preview_key(settings).file}")
        except ConfigError as exc:
            outcome.append(f"{exc} ({exc.hint})")
        except OSError as exc:
            outcome.append(repr(exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # blocked on the FIFO until a writer comes
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join()
        return "hung at the open"
    return outcome[0]


@pytest.mark.parametrize("make", [os.mkdir, os.mkfifo], ids=["directory", "fifo"])
def test_a_key_path_that_is_no_file_is_one_clear_error(
    env: dict[str, str], make: Callable[[Path], None]
) -> None:
    path = Path(env["NEWSLETTER_HOME"]) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)
    error = _key_or_error(settings_for(env), path)
    assert error == f"the preview key {path} is not a file (remove it: serve makes a new key then)"


def test_newsletter_serve_key_is_the_key_instead_of_a_file(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SERVE_KEY", "k" * 20)
    settings = settings_for(env)
    assert preview_key(settings) == PreviewKey("k" * 20)
    assert "k" * 20 in settings.secret_values()  # masked as the other secrets
    with TestClient(create_app(settings, clock=lambda: NOW), follow_redirects=False) as client:
        assert client.get("/?key=" + "k" * 20).status_code == 303
        assert client.get("/").status_code == 200
    assert not (Path(env["NEWSLETTER_HOME"]) / KEY_FILE).exists()


@pytest.mark.parametrize("value", ["", "short", "a key with spaces in it", "semi;colon-but-long-enough"])
def test_a_serve_key_easy_to_guess_or_quoted_by_a_cookie_is_refused(env: dict[str, str], value: str) -> None:
    with pytest.raises(ConfigError, match="serve_key"):
        load_settings(home=env["NEWSLETTER_HOME"], serve_key=value)


# --- the start line --------------------------------------------------------------------------------


def test_the_start_line_has_the_key_on_a_terminal_only() -> None:
    key = PreviewKey("s3cret-key-for-the-tests", Path("/state/serve-key"))
    assert start_line("http://127.0.0.1:8000/", key, terminal=True) == (
        "preview at http://127.0.0.1:8000/?key=s3cret-key-for-the-tests"
    )
    logged = start_line("http://127.0.0.1:8000/", key, terminal=False)
    assert key.value not in logged and "/state/serve-key" in logged
    assert "NEWSLETTER_SERVE_KEY" in start_line("http://x/", PreviewKey("s" * 20), terminal=False)


def test_cli_serve_keeps_the_key_out_of_a_stderr_that_is_no_terminal(env: dict[str, str]) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/", proc).status_code == 403
        key = key_of(env)
        with httpx.Client(timeout=30) as browser:
            page = browser.get(f"http://127.0.0.1:{port}/?key={key}", follow_redirects=True)
        assert page.status_code == 200 and str(page.url) == f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert key not in stderr.decode()
    assert str(Path(env["NEWSLETTER_HOME"]) / KEY_FILE) in stderr.decode().splitlines()[0]


def test_cli_serve_with_stderr_closed_serves(env: dict[str, str]) -> None:
    """Started by a wrapper that closes stderr (`2>&-`): it stopped at once, `unexpected
    AttributeError` said nowhere, as it asked a missing stderr whether it was a terminal."""
    port = _free_port()
    command = [sys.executable, "-m", "newsletter", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        ["sh", "-c", 'exec "$@" 2>&-', "sh", *command],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/", proc).status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cli_serve_prints_the_keyed_url_on_a_terminal(env: dict[str, str]) -> None:
    port = _free_port()
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    try:
        line = _read_line(leader)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        os.close(leader)
    assert line == f"preview at http://127.0.0.1:{port}/?key={key_of(env)}"


def _read_line(fd: int, timeout: float = 60) -> str:
    text = b""
    while b"\n" not in text and select.select([fd], [], [], timeout)[0]:
        text += os.read(fd, 1024)
    return text.decode().splitlines()[0].strip() if text else ""


def test_two_serves_starting_at_once_share_the_key_the_first_one_made(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(env)
    settings.home.mkdir(parents=True, exist_ok=True)
    fdopen, second = os.fdopen, {}

    def writing(fd: int, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "w" in mode and not second:  # the first serve made its file, not written yet: the second starts
            second["started"] = None
            second["key"] = preview_key(settings)
        return fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", writing)
    first = preview_key(settings)
    assert second["key"] == first and key_of(env) == first.value


def test_a_key_kept_in_newsletter_toml_is_named_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_SERVE_KEY", raising=False)
    (tmp_path / "newsletter.toml").write_text('serve_key = "' + "k" * 20 + '"\n', encoding="utf-8")
    key = preview_key(Settings(serve_key="k" * 20))
    assert key.where == "newsletter.toml (serve_key, line 1)"
