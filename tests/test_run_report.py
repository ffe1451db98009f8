"""The run report (last-run.json) when the disk refuses it: one error line after the run's own output."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from newsletter.app import open_pipeline, save_report
from newsletter.config import Settings, load_settings
from newsletter.daemon.schedule import Daemon
from newsletter.errors import StoreError
from newsletter.report import RunReport

from .helpers import add_dumps, cli, outbox, seed_names


def test_a_report_that_cannot_be_written_is_one_error_line_after_the_run(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    home = Path(env["NEWSLETTER_HOME"])
    (home / "last-run.json").mkdir(parents=True)  # the report cannot be put in its place
    proc = cli(env, "run", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot save the run report {home / 'last-run.json'}: Is a directory "
        "(the deliveries are recorded; `status` shows an older last run)"
    ]
    assert "sent" in proc.stdout.splitlines()[-1]  # the summary line still comes
    assert len(outbox(env)) >= 2
    assert json.loads(cli(env, "status", "--json").stdout)["last_run"] is None


def test_a_full_disk_is_a_store_error_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:  # part of it written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("newsletter.files.os.fsync", full)
    settings = Settings(home=tmp_path)
    with pytest.raises(StoreError, match="No space left on device"):
        save_report(settings, RunReport())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_daemon_logs_a_report_it_cannot_save_and_keeps_ticking(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    add_dumps(env, seed_names()[0])
    settings = load_settings(
        home=env["NEWSLETTER_HOME"],
        subscribers=env["NEWSLETTER_SUBSCRIBERS"],
        dumps=env["NEWSLETTER_DUMPS"],
        ranker="lexical",
    )
    (settings.home / "last-run.json").mkdir(parents=True)  # the report cannot be put in its place
    daemon = Daemon(settings)
    with open_pipeline(settings) as pipeline:
        daemon.tick(pipeline)  # no exception out of the scheduler's job
        add_dumps(env, seed_names()[1])
        daemon.tick(pipeline)
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tick failed")]
    assert len(failures) == 2 and all("cannot save the run report" in f for f in failures)
    assert len(outbox(env)) >= 3  # both ticks delivered


def test_digests_another_run_handled_are_one_reason_in_the_summary() -> None:
    """Each held its digest id in the reason: the summary grew a '1 skipped: digest ...' part per digest."""
    from newsletter.deliver.courier import _not_queued
    from newsletter.models import OutgoingMessage

    report = RunReport()
    for n in range(3):
        message = OutgoingMessage(
            f"d{n}", "p@example.org", f"r{n}@example.org", "s", f"<d{n}@example.org>", b""
        )
        report.add(_not_queued(message, ()))
    assert report.summary() == "3 skipped: no longer queued (cancelled, or sent by another run)"
