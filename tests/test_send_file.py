"""FileTransport: atomic .eml + .html per digest (date, address, id), idempotent, never outside the outbox."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.app import open_pipeline
from newsletter.config import PACKAGE_TEMPLATES
from newsletter.errors import SendError, StoreError
from newsletter.models import OutgoingMessage, RenderedDigest
from newsletter.render import Renderer
from newsletter.send import FileTransport
from newsletter.send.message import Envelope, build_message
from newsletter.store import Store

from .test_crash import NOW, READERS, Recorder, committed, make_folder, pipeline

ENVELOPE = Envelope(
    "Trending Papers <digest@example.org>",
    "Trending Papers <papers.example.org>",
    "mailto:unsubscribe@example.org?subject=unsubscribe",
)


N = "2024-03-11_ada@example.org_"  # date and address first, so a person finds a subscriber's digests


def message(digest_id: str = "d1", subject: str = "3 new papers", html: str = "<p>hi</p>") -> OutgoingMessage:
    rendered = RenderedDigest(subject, html, "hi\n")
    return build_message(
        digest_id=digest_id,
        envelope=ENVELOPE,
        to_name="Ada",
        to_addr="ada@example.org",
        rendered=rendered,
        date=datetime(2024, 3, 11, tzinfo=UTC),
    )


def test_writes_eml_and_html_copy(tmp_path: Path) -> None:
    outbox = tmp_path / "state" / "outbox"
    with FileTransport(outbox) as transport:
        transport.send(message("d1"))
    assert sorted(p.name for p in outbox.iterdir()) == [f"{N}d1.eml", f"{N}d1.html"]
    assert (outbox / f"{N}d1.eml").read_bytes() == message("d1").raw
    assert (outbox / f"{N}d1.html").read_text(encoding="utf-8") == "<p>hi</p>"
    parsed = email.message_from_bytes((outbox / f"{N}d1.eml").read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "3 new papers"


def test_same_digest_overwrites_itself(tmp_path: Path) -> None:
    with FileTransport(tmp_path) as transport:
        transport.send(message("d1", subject="first"))
        transport.send(message("d1", subject="second", html="<p>again</p>"))
        transport.send(message("d2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{N}d1.eml",
        f"{N}d1.html",
        f"{N}d2.eml",
        f"{N}d2.html",
    ]
    assert b"Subject: second" in (tmp_path / f"{N}d1.eml").read_bytes()
    assert (tmp_path / f"{N}d1.html").read_text(encoding="utf-8") == "<p>again</p>"


def test_a_digest_an_earlier_version_wrote_under_its_id_alone_is_in_the_outbox_once(tmp_path: Path) -> None:
    """Versions before the date and address named a digest's files by its id alone: one left sending
    across the upgrade was written again under today's name beside the first."""
    for ending in (".eml", ".html"):
        (tmp_path / f"d1{ending}").write_bytes(b"from the version before")
    (tmp_path / "d2.eml").write_bytes(b"another digest")
    with FileTransport(tmp_path) as transport:
        transport.send(message("d1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{N}d1.eml", f"{N}d1.html", "d2.eml"]


def test_works_without_the_context_manager(tmp_path: Path) -> None:
    FileTransport(tmp_path / "new").send(message("d1"))
    assert (tmp_path / "new" / f"{N}d1.eml").exists()


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = FileTransport(tmp_path)
    transport.send(message("d1", subject="old"))

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SendError, match="No space left on device") as caught:
        transport.send(message("d1", subject="new", html=""))
    assert not caught.value.permanent
    assert b"Subject: old" in (tmp_path / f"{N}d1.eml").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{N}d1.eml", f"{N}d1.html"]


def test_stale_temp_files_from_a_killed_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / f".tmp-{N}d1.eml.abc123").write_bytes(b"half a mess")
    with FileTransport(tmp_path) as transport:
        transport.send(message("d2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{N}d2.eml", f"{N}d2.html"]


def test_no_html_copy_for_an_empty_html_body(tmp_path: Path) -> None:
    with FileTransport(tmp_path) as transport:
        transport.send(message("d1", html=""))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{N}d1.eml"]


@pytest.mark.parametrize("digest_id", ["../escape", "a/b", ".hidden", "a\\b", "", "x" * 201])
def test_digest_id_cannot_escape_the_outbox(tmp_path: Path, digest_id: str) -> None:
    raw = OutgoingMessage(digest_id, "digest@example.org", "ada@example.org", "s", "<m@x>", b"x", "")
    outbox = tmp_path / "outbox"
    with FileTransport(outbox) as transport, pytest.raises(SendError) as caught:
        transport.send(raw)
    assert caught.value.permanent
    assert list(tmp_path.iterdir()) == [outbox]
    assert list(outbox.iterdir()) == []


def test_unusable_outbox_is_a_send_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SendError, match="cannot use outbox"):
        FileTransport(blocker / "outbox").send(message())


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_an_outbox_that_refuses_writes_stops_the_run_at_once_and_keeps_the_rest_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refused(path: Path, data: bytes, prefix: str) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("newsletter.send.file.write_atomic", refused)
    folder = make_folder(tmp_path)
    waits: list[float] = []
    made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), FileTransport(folder / "outbox"), waits.append)
    report = made.run(subs, NOW)
    made.store.close()
    assert waits == []  # no 2 s + 4 s of in-run retries per digest
    outcomes = {d.subscriber: (d.status, d.reason) for d in report.digests}
    status, reason = outcomes[READERS[0]]
    assert status == "failed" and "cannot send now" in reason and os.strerror(code) in reason
    assert {outcomes[r][0] for r in READERS[1:]} == {"skipped"}  # not tried: the outbox is down
    assert set(committed(folder).values()) <= {"retry", "pending"}  # all queued for the next run


@pytest.mark.parametrize(
    ("address", "slug"),
    [
        ("Ada.Lovelace+news@Example.org", "ada.lovelace+news@example.org"),
        ("team/ml@example.org", "team-ml@example.org"),
    ],
)
def test_a_file_name_says_when_and_to_whom(tmp_path: Path, address: str, slug: str) -> None:
    built = message("d1")
    with FileTransport(tmp_path) as transport:
        transport.send(dataclasses.replace(built, recipient=address))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"2024-03-11_{slug}_d1.eml",
        f"2024-03-11_{slug}_d1.html",
    ]


@pytest.mark.parametrize(
    "resend_unknown", [True, False], ids=["file-outbox", "a-transport-that-may-duplicate"]
)
def test_a_digest_a_full_disk_left_sending_is_written_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resend_unknown: bool
) -> None:
    """The outbox beside state.db: the write fails (ENOSPC), then so does recording the failure, and the
    digest stays 'sending'. The next run took it for 'unknown' and never wrote it (a dropped email); the
    outbox replaces a digest's files when it is written again, so it is queued again instead."""

    def full(path: Path, data: bytes, prefix: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_database(*args: object, **kwargs: object) -> None:
        raise StoreError("database error while marking a digest failed: database or disk is full")

    folder = make_folder(tmp_path)
    renderer, outbox = Renderer(PACKAGE_TEMPLATES), folder / "outbox"
    with monkeypatch.context() as disk:
        disk.setattr("newsletter.send.file.write_atomic", full)
        disk.setattr(Store, "mark_failed", full_database)
        made, subs = pipeline(folder, renderer, FileTransport(outbox))
        with made.store:
            assert "disk is full; the run stopped here" in made.run(subs, NOW).halted
    assert committed(folder)[READERS[0]] == "sending"
    made, subs = pipeline(folder, renderer, FileTransport(outbox))
    made.resend_unknown = resend_unknown  # as the file transport's pipeline is built
    with made.store:
        report = made.run(subs, NOW)
    if not resend_unknown:  # it may have arrived: left for `retry --unknown`
        assert report.recovered_unknown and committed(folder)[READERS[0]] == "unknown"
        return
    assert report.ok and report.recovered_unknown == [] and set(committed(folder).values()) == {"sent"}
    written = sorted(p.name.split("_")[1] for p in outbox.glob("*.eml"))
    assert written == sorted(READERS)  # each once


def test_only_the_file_outbox_s_pipeline_resends_what_a_crash_left_and_only_that(tmp_path: Path) -> None:
    """An 'unknown' an SMTP run left may have arrived: a later run on the file outbox leaves it alone."""
    folder = make_folder(tmp_path)
    lost = SendError("SMTP connection lost after the message was sent", unknown=True)
    made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), Recorder({READERS[0]: [lost]}))
    with made.store:
        made.run(subs, NOW)
    made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), FileTransport(folder / "outbox"))
    made.resend_unknown = True
    with made.store:
        assert made.recover(NOW) == [] and committed(folder)[READERS[0]] == "unknown"
    settings = made.settings.model_copy(update={"sender": "Papers <digest@example.org>"})
    with open_pipeline(settings, lock=False) as on_file:
        assert on_file.resend_unknown
    smtp = {"transport": "smtp", "smtp_host": "127.0.0.1"}
    with open_pipeline(settings.model_copy(update=smtp), lock=False, sending=False) as on_smtp:
        assert not on_smtp.resend_unknown


def test_with_a_shared_database_the_file_outbox_does_not_resend_what_a_crash_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another machine's outbox is not this one's: a digest written there and left 'sending' by a crash
    was written again here (two copies), as if it replaced its own files."""
    folder = make_folder(tmp_path)
    made, _ = pipeline(folder, Renderer(PACKAGE_TEMPLATES), Recorder())
    made.store.close()
    monkeypatch.setattr(Store, "shared", property(lambda self: True))
    settings = made.settings.model_copy(update={"sender": "Papers <digest@example.org>"})
    with open_pipeline(settings, lock=False) as on_file:
        assert not on_file.resend_unknown


def test_outbox_files_are_the_owner_s_alone(tmp_path: Path) -> None:
    """They hold working unsubscribe and feedback links: a umask's 0644 let every local user read them."""
    from newsletter.files import write_atomic

    for readable, mode in ((False, 0o600), (True, 0o666 & ~_umask())):
        path = tmp_path / f"m{readable}.eml"
        write_atomic(path, b"x", readable=readable)
        assert path.stat().st_mode & 0o777 == mode


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_digest_a_crash_left_sending_then_renamed_is_in_the_outbox_once(tmp_path: Path) -> None:
    """Written to the old address, left 'sending' by a crash, then `rename`d: the next run wrote it again
    under the new address's name, beside the first (two emails for one digest)."""
    with FileTransport(tmp_path) as transport:
        transport.send(message("d1"))
        transport.send(message("d2"))
    renamed = dataclasses.replace(message("d1"), recipient="new@example.org")
    with FileTransport(tmp_path) as transport:
        transport.send(renamed)
    new = "2024-03-11_new@example.org_"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{N}d2.eml",
        f"{N}d2.html",
        f"{new}d1.eml",
        f"{new}d1.html",
    ]
