"""Clicks `serve` holds while the database cannot take them: answered, kept on disk, recorded later.

A one-click unsubscribe that met a database locked past its busy timeout (or down) was answered 503
"try again", and mailbox providers do not retry: the unsubscribe was lost.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from filelock import FileLock
from pydantic import SecretStr
from starlette.testclient import TestClient

from newsletter.app import open_pipeline, open_store
from newsletter.config import Settings
from newsletter.deliver import held as held_module
from newsletter.deliver.held import HELD_FILE, Click, hold, record_held
from newsletter.errors import StoreError
from newsletter.feedback import feedback_token
from newsletter.models import OutgoingMessage
from newsletter.serve import create_app
from newsletter.subscribers import load_subscribers
from newsletter.unsubscribe import make_token

from .helpers import add_dumps, cli, make_env, seed_names
from .test_serve_unsubscribe import DIFF, NOW, ONE_CLICK, SECRET, SSM, settings_for, unsubscribed


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    env = make_env(tmp_path)
    add_dumps(env, *seed_names()[:2])
    return settings_for(env)


@contextmanager
def locked(settings: Settings) -> Iterator[None]:
    """Another process's long write transaction on the SQLite store."""
    other = sqlite3.connect(settings.home / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.fixture
def paper_key(settings: Settings) -> str:
    with open_pipeline(settings) as pipeline:
        pipeline.ingest_folder(NOW)
        return pipeline.store.papers_first_seen_after(0)[0].key


def feedback_of(settings: Settings, email: str) -> list[tuple[str, str]]:
    with open_store(settings) as store:
        return [(f.kind, f.paper.key) for f in store.feedback(email)]


def held_lines(settings: Settings) -> list[str]:
    path = settings.home / HELD_FILE
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_clicks_on_a_locked_database_are_answered_held_and_taken_by_the_next_run(
    settings: Settings, paper_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("newsletter.store.engine.BUSY_TIMEOUT_MS", 200)
    unsubscribe = f"/unsubscribe/{make_token(SSM, SecretStr(SECRET))}"
    less = f"/feedback/less/{feedback_token(DIFF, paper_key, SecretStr(SECRET))}"
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        client.get("/unsubscribe/x")  # the server's store is open before the other process writes
        with locked(settings):
            gone = client.post(unsubscribe, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
            noted = client.post(less, content="")
    assert gone.status_code == 200 and "You are unsubscribed" in gone.text
    assert noted.status_code == 200 and "Noted: fewer papers like this" in noted.text
    assert len(held_lines(settings)) == 2 and unsubscribed(settings) == set()

    subscribers = load_subscribers(settings.subscribers)
    with open_pipeline(settings) as pipeline:
        report = pipeline.run(subscribers, NOW)
    assert {d.subscriber: d.reason for d in report.digests}[SSM] == "unsubscribed"  # before anything is sent
    assert unsubscribed(settings) == {SSM}
    assert feedback_of(settings, DIFF) == [("less", paper_key)]
    assert held_lines(settings) == []


def test_the_unsubscribe_page_shows_its_button_while_the_database_is_locked(
    settings: Settings, paper_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It answered "try again in a minute" (503), though the button's POST would be held (found by a
    review): a reader who does not come back stayed subscribed."""
    monkeypatch.setattr("newsletter.store.engine.BUSY_TIMEOUT_MS", 200)
    link = f"/unsubscribe/{make_token(SSM, SecretStr(SECRET))}"
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        client.get("/unsubscribe/x")
        with locked(settings):
            shown = client.get(link)
            gone = client.post(link)
    assert shown.status_code == 200 and '<form method="post"' in shown.text
    assert gone.status_code == 200 and len(held_lines(settings)) == 1


def test_serve_takes_what_it_held_at_its_next_click(
    settings: Settings, paper_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("newsletter.store.engine.BUSY_TIMEOUT_MS", 200)
    more = f"/feedback/more/{feedback_token(SSM, paper_key, SecretStr(SECRET))}"
    unsubscribe = f"/unsubscribe/{make_token(DIFF, SecretStr(SECRET))}"
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        client.get("/unsubscribe/x")
        with locked(settings):
            assert client.post(more).status_code == 200
        assert len(held_lines(settings)) == 1
        client.post(unsubscribe, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert feedback_of(settings, SSM) == [("more", paper_key)] and unsubscribed(settings) == {DIFF}
    assert held_lines(settings) == []


def test_a_line_cut_short_is_skipped_and_the_rest_recorded(
    settings: Settings, paper_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    hold(settings.home, Click("unsubscribe", SSM, NOW))
    with (settings.home / HELD_FILE).open("a", encoding="utf-8") as held:
        held.write('{"kind": "more", "email": "di')  # the disk filled up mid-line
    hold(settings.home, Click("more", DIFF, NOW, paper_key))
    with open_store(settings) as store:
        assert record_held(settings.home, store) == 2
    assert unsubscribed(settings) == {SSM} and feedback_of(settings, DIFF) == [("more", paper_key)]
    assert any(f"{HELD_FILE}:2: not a held click" in r.getMessage() for r in caplog.records)


def test_nothing_held_is_nothing_to_do(settings: Settings, tmp_path: Path) -> None:
    with open_store(settings) as store:
        assert record_held(tmp_path, store) == 0


def test_serve_takes_what_it_held_by_itself_once_the_database_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no click to come and no run on this machine (a shared PostgreSQL store), serve retries."""
    monkeypatch.setattr("newsletter.serve.web.HELD_RETRY", 0.05)
    hold(settings.home, Click("unsubscribe", SSM, NOW))
    with TestClient(create_app(settings, clock=lambda: NOW)):
        deadline = time.monotonic() + 10
        while held_lines(settings) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert held_lines(settings) == [] and unsubscribed(settings) == {SSM}


def test_a_held_file_serve_cannot_read_does_not_stop_a_new_click(settings: Settings, paper_key: str) -> None:
    """The new click was recorded only after the held ones: a file it could not open failed every click."""
    (settings.home / HELD_FILE).mkdir(parents=True)  # cannot be opened as a file
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        unsubscribe = f"/unsubscribe/{make_token(SSM, SecretStr(SECRET))}"
        response = client.post(unsubscribe, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert response.status_code == 200 and unsubscribed(settings) == {SSM}


def test_a_click_does_not_queue_behind_another_taking_the_held_clicks(
    settings: Settings, paper_key: str
) -> None:
    """Each click took the held ones first, under their lock: on a locked database, six clicks at once
    were answered after 30 to 70 s, one behind the other. Now a click that finds someone at it goes on."""
    hold(settings.home, Click("more", DIFF, NOW, paper_key))
    unsubscribe = f"/unsubscribe/{make_token(SSM, SecretStr(SECRET))}"
    with (
        TestClient(create_app(settings, clock=lambda: NOW)) as client,
        FileLock(
            settings.home / f"{HELD_FILE}.recording", timeout=0
        ),  # another click (or the minute's retry) at it
    ):
        response = client.post(unsubscribe, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
        assert response.status_code == 200 and unsubscribed(settings) == {SSM}
        assert len(held_lines(settings)) == 1  # left to whoever holds the lock
    assert feedback_of(settings, DIFF) == []


def test_feedback_past_the_held_file_s_limit_is_refused_and_an_unsubscribe_still_held(
    settings: Settings, paper_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk is not filled by clicks while the database is down, and feedback links posted over and
    over (3,500 in 30 s against a database that is down) do not get the next unsubscribe refused: it
    is a line an address at most (found by a review)."""
    for reader in ("a@example.org", "b@example.org"):
        hold(settings.home, Click("more", reader, NOW, paper_key))
    size = (settings.home / HELD_FILE).stat().st_size
    monkeypatch.setattr("newsletter.deliver.held.MAX_HELD_BYTES", size - 1)
    with pytest.raises(StoreError, match=f"it holds {size} bytes of clicks already, while the database"):
        hold(settings.home, Click("less", SSM, NOW, paper_key))
    assert (settings.home / HELD_FILE).stat().st_size == size
    hold(settings.home, Click("unsubscribe", SSM, NOW))
    assert [json.loads(line)["kind"] for line in held_lines(settings)] == ["more", "more", "unsubscribe"]


def test_an_unsubscribe_link_posted_over_and_over_is_held_once(settings: Settings, paper_key: str) -> None:
    """Each post appended a line, until the cap refused everyone's clicks. Feedback is held each time:
    its time decides against feedback recorded directly in between."""
    for kind in ("unsubscribe", "unsubscribe", "more", "more"):
        hold(settings.home, Click(kind, SSM, NOW, None if kind == "unsubscribe" else paper_key))  # type: ignore[arg-type]
    hold(settings.home, Click("unsubscribe", DIFF, NOW))
    kinds = [(json.loads(line)["kind"], json.loads(line)["email"]) for line in held_lines(settings)]
    assert kinds == [("unsubscribe", SSM), ("more", SSM), ("more", SSM), ("unsubscribe", DIFF)]


def test_a_held_click_posted_again_after_other_feedback_keeps_the_reader_s_last_word(
    settings: Settings, paper_key: str
) -> None:
    """A first deduplication dropped the repeat, and the held click's older time lost to the 'less'."""
    hold(settings.home, Click("more", SSM, NOW, paper_key))
    with open_store(settings) as store:
        store.record_feedback(SSM, paper_key, "less", NOW + timedelta(hours=1))
        hold(settings.home, Click("more", SSM, NOW + timedelta(hours=2), paper_key))
        record_held(settings.home, store)
    assert feedback_of(settings, SSM) == [("more", paper_key)]


def test_a_held_click_older_than_a_recorded_one_does_not_replace_it(
    settings: Settings, paper_key: str
) -> None:
    """serve records a new click before the held ones: the older held 'more' overwrote the reader's 'less'."""
    hold(settings.home, Click("more", SSM, NOW, paper_key))
    with open_store(settings) as store:
        store.record_feedback(SSM, paper_key, "less", NOW + timedelta(hours=1))
        record_held(settings.home, store)
    assert feedback_of(settings, SSM) == [("less", paper_key)]


def test_an_unsubscribe_held_while_a_run_sends_counts_from_its_next_chunk(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run took the held clicks once, before sending: an unsubscribe `serve` held because the run's
    own writes kept the database busy went unread until the next run (found by a review)."""
    from newsletter.send.file import FileTransport

    monkeypatch.setattr("newsletter.deliver.building.PLAN_BATCH", 1)  # a chunk a subscriber
    send, sent = FileTransport.send, []

    def sending(transport: FileTransport, message: OutgoingMessage) -> None:
        if not sent:  # while the first digest goes out, the other reader clicks: held
            other = ({SSM, DIFF} - {message.recipient}).pop()
            hold(settings.home, Click("unsubscribe", other, NOW))
        sent.append(message.recipient)
        send(transport, message)

    monkeypatch.setattr(FileTransport, "send", sending)
    with open_pipeline(settings) as pipeline:
        report = pipeline.run(load_subscribers(settings.subscribers), NOW)
    (first,) = sent
    other = ({SSM, DIFF} - {first}).pop()
    statuses = {d.subscriber: d.status for d in report.digests}
    assert statuses[first] == "sent" and statuses[other] == "skipped"
    assert unsubscribed(settings) == {other} and held_lines(settings) == []


def cli_env(settings: Settings) -> dict[str, str]:
    folders = {"HOME": settings.home, "SUBSCRIBERS": settings.subscribers, "DUMPS": settings.dumps}
    return {f"NEWSLETTER_{name}": str(path) for name, path in folders.items()} | {
        "NEWSLETTER_RANKER": "lexical"
    }


def test_a_resubscribe_after_a_held_unsubscribe_wins(settings: Settings) -> None:
    """The unsubscribe serve held (the database was locked) was recorded by the next run, after the
    operator's `resubscribe`, which had said "had not unsubscribed": the reader stayed out."""
    env = cli_env(settings)
    cli(env, "unsubscribe", SSM)
    cli(env, "resubscribe", SSM)
    hold(settings.home, Click("unsubscribe", SSM, NOW))  # the click came before the resubscribe
    assert cli(env, "resubscribe", SSM).stdout.startswith(f"{SSM}: subscribed again")
    assert held_lines(settings) == []
    assert SSM not in unsubscribed(settings)


def test_an_unsubscribe_by_hand_records_the_held_clicks_first(settings: Settings) -> None:
    env = cli_env(settings)
    hold(settings.home, Click("unsubscribe", SSM, NOW))
    assert cli(env, "unsubscribe", SSM).stdout.startswith(f"{SSM}: had already unsubscribed")
    assert held_lines(settings) == []


def test_a_click_is_held_at_once_while_the_held_ones_wait_for_the_database(
    settings: Settings, paper_key: str
) -> None:
    """The file stayed locked while the held clicks waited out the database's busy timeout: a new
    click on the locked database was held only after that, 20 s after it came instead of 10."""
    hold(settings.home, Click("more", DIFF, NOW, paper_key))
    recording, release = threading.Event(), threading.Event()

    class SlowStore:  # the database, taking the held click only once told to
        def record_feedback(self, *args: object, **kwargs: object) -> None:
            recording.set()
            release.wait(30)

    taker = threading.Thread(target=record_held, args=(settings.home, SlowStore()))
    taker.start()
    assert recording.wait(30)
    holder = threading.Thread(target=hold, args=(settings.home, Click("unsubscribe", SSM, NOW)))
    holder.start()
    holder.join(20)
    held_meanwhile = not holder.is_alive()
    release.set()
    taker.join(30)
    holder.join(30)
    assert held_meanwhile  # it did not wait for the recording to end
    assert [json.loads(line)["kind"] for line in held_lines(settings)] == ["unsubscribe"]  # kept, not cut


def test_clicks_held_while_an_older_serve_emptied_the_file_are_kept(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier version's `serve`, still running after an upgrade, takes the held clicks under the file
    lock alone: between this taker's read and its cut it emptied the file and held a new click, which
    the cut then removed (a lost unsubscribe)."""
    hold(settings.home, Click("unsubscribe", SSM, NOW))
    real = held_module.record_click

    def and_an_older_serve_meanwhile(store: object, click: Click, **kwargs: object) -> None:
        real(store, click, **kwargs)  # type: ignore[arg-type]
        (settings.home / HELD_FILE).write_bytes(b"")  # it recorded and emptied the file...
        hold(settings.home, Click("unsubscribe", DIFF, NOW))  # ... then held a click of its own

    monkeypatch.setattr(held_module, "record_click", and_an_older_serve_meanwhile)
    with open_store(settings) as store:
        record_held(settings.home, store)
    assert [json.loads(line)["email"] for line in held_lines(settings)] == [DIFF]


def test_status_says_what_this_host_holds_for_the_database(tmp_path: Path) -> None:
    """`status` called a send whose acceptance was held 'in flight now, or interrupted by a crash' and
    offered `retry --unknown`, which would send it twice; held clicks were not mentioned either."""
    from newsletter.deliver.held import hold_sent

    env = make_env(tmp_path)
    home = Path(env["NEWSLETTER_HOME"])
    cli(env, "status")  # the state folder and its database
    hold(home, Click("unsubscribe", SSM, NOW))
    hold_sent(home, [("d1", "<m1@example.org>"), ("d2", "<m2@example.org>")], NOW)
    warnings = [line for line in cli(env, "status").stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert (
        warnings[0].startswith("warning: 2 accepted messages held in ") and "retry --unknown" in warnings[0]
    )
    assert warnings[1].startswith("warning: 1 click (unsubscribes, feedback) held in ")
    assert json.loads(cli(env, "status", "--json").stdout)["warnings"] == [w[9:] for w in warnings]
    assert len(held_lines_of(home)) == 3  # read, not taken
    cli(env, "run", "--now", NOW.isoformat())
    assert cli(env, "status").stdout.count("warning: ") == 0


def held_lines_of(home: Path) -> list[str]:
    return (home / HELD_FILE).read_text(encoding="utf-8").splitlines()


def test_a_send_the_held_file_cannot_take_is_not_called_a_click(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose database and state folder were both full said "cannot hold a click" of a digest
    the server had accepted, in its error and in `status`'s last run."""
    from newsletter.deliver.held import hold_sent

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(held_module.os, "fsync", full)
    with pytest.raises(StoreError) as info:
        hold_sent(tmp_path, [("d1", "<m1@example.org>")], NOW)
    assert str(info.value).startswith(
        f"digest d1 was sent, but neither the database nor {tmp_path / HELD_FILE}"
    )
    assert "No space left on device" in str(info.value) and "a click" not in str(info.value)
