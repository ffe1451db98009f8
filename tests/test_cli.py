"""End to end through the `newsletter` entry point, on the bundled seeds."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.report import QUEUED

from .conftest import ROOT, SEEDS
from .helpers import HEADERS, add_dumps, cli, outbox, seed_names


def test_ingest_json_reports_seed_counts_and_reingest_is_a_noop(env: dict[str, str]) -> None:
    files = [str(SEEDS / n) for n in seed_names()]
    first = json.loads(cli(env, "ingest", "--json", *files).stdout)
    assert [d["new"] for d in first["dumps"]] == [81, 85, 90, 67, 62]
    assert [d["papers"] for d in first["dumps"]] == [81, 100, 100, 88, 91]
    again = json.loads(cli(env, "ingest", "--json", *files).stdout)
    assert [d["new"] for d in again["dumps"]] == [0, 0, 0, 0, 0]


def test_run_writes_one_parseable_email_per_due_subscriber(env: dict[str, str]) -> None:
    add_dumps(env, *seed_names()[:2])
    report = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:00:00+00:00").stdout)
    by_sub = {d["subscriber"]: d for d in report["digests"]}
    assert by_sub["ssm@example.org"]["status"] == "sent"
    assert by_sub["nobody@example.org"] == {
        **by_sub["nobody@example.org"],
        "status": "skipped",
        "reason": "nothing relevant",
    }
    sent = [d for d in report["digests"] if d["status"] == "sent"]
    messages = outbox(env)
    assert len(messages) == len(sent) >= 2
    for msg, digest in zip(
        sorted(messages, key=lambda m: m["To"].addresses[0].addr_spec),
        sorted(sent, key=lambda d: d["subscriber"]),
        strict=True,
    ):
        for header in HEADERS:
            assert msg[header], f"missing {header}"
        assert digest["subscriber"] in str(msg["To"])
        assert str(msg["Message-ID"]).endswith("@papers.example.org>")
        assert msg.get_content_type() == "multipart/alternative"
        parts = [p.get_content_type() for p in msg.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        text = msg.get_body(("plain",)).get_content()
        assert all(item["title"][:30] in " ".join(text.split()) for item in digest["items"])
        assert 1 <= len(digest["items"]) <= 10
        assert str(len(digest["items"])) in str(msg["Subject"])
    assert all(Path(env["NEWSLETTER_HOME"], "outbox").glob("*.html"))


def test_second_run_without_new_dump_sends_nothing(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    before = len(outbox(env))
    report = json.loads(cli(env, "run", "--json", "--now", "2026-03-12T08:00:00Z").stdout)
    assert {d["reason"] for d in report["digests"]} == {"nothing new"}
    assert len(outbox(env)) == before > 0


def test_next_dump_brings_only_unseen_papers(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    first = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z").stdout)
    add_dumps(env, seed_names()[1])
    second = json.loads(cli(env, "run", "--json", "--now", "2026-03-12T08:00:00Z").stdout)
    keys = lambda rep, who: {i["key"] for d in rep["digests"] if d["subscriber"] == who for i in d["items"]}  # noqa: E731
    for who in ("ssm@example.org", "diff@example.org"):
        assert not keys(first, who) & keys(second, who)


def test_daily_subscriber_is_not_due_twice_the_same_day(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    add_dumps(env, seed_names()[1])
    report = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T20:00:00Z").stdout)
    by_sub = {d["subscriber"]: d for d in report["digests"]}
    assert by_sub["ssm@example.org"]["reason"] == "not due"
    assert by_sub["diff@example.org"]["status"] == "sent"  # each-dump


def test_one_run_a_day_long_before_send_at_sends_a_digest_every_day(env: dict[str, str]) -> None:
    """A 07:10 digest, late for 18:00 the day before, was taken as early for the coming 18:00: every
    other day was "not due". The first digest still counts for its day's 18:00."""
    subscribers = Path(env["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_text(
        subscribers.read_text().replace("    name: Sam\n", '    name: Sam\n    send_at: "18:00"\n')
    )
    statuses = []
    for day, name in enumerate(seed_names(), start=1):
        add_dumps(env, name)
        report = json.loads(cli(env, "run", "--json", "--now", f"2026-03-{day:02}T07:10:00Z").stdout)
        (ssm,) = [d for d in report["digests"] if d["subscriber"] == "ssm@example.org"]
        statuses.append(ssm["reason"] or ssm["status"])
    assert statuses == ["sent", "not due", "sent", "sent", "sent"]
    status = json.loads(cli(env, "status", "--json", "--now", "2026-03-05T07:20:00Z").stdout)
    (row,) = [r for r in status["subscribers"] if r["subscriber"] == "ssm@example.org"]
    assert row["next_due_at"] == "2026-03-05T18:00:00+00:00"


def test_dry_run_sends_and_records_nothing(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    dry = json.loads(cli(env, "run", "--dry-run", "--json", "--now", "2026-03-11T08:00:00Z").stdout)
    assert any(d["status"] == "dry-run" and d["items"] for d in dry["digests"])
    assert outbox(env) == []
    real = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z").stdout)
    assert sorted(d["subscriber"] for d in real["digests"] if d["status"] == "sent") == sorted(
        d["subscriber"] for d in dry["digests"] if d["status"] == "dry-run"
    )


def test_a_dry_run_that_cannot_build_a_digest_says_why_in_text_mode(env: dict[str, str]) -> None:
    """It printed "failed (1 paper)" with no reason; the reason was only in --json."""
    add_dumps(env, seed_names()[0])
    proc = cli(
        {**env, "NEWSLETTER_LIST_ID": "<<>>"},
        "run",
        "--dry-run",
        "--now",
        "2026-03-11T08:00:00Z",
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot build digest" in proc.stderr and "list_id" in proc.stderr


def test_malformed_dump_is_rejected_with_file_and_line_and_others_go_on(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    bad = Path(env["NEWSLETTER_DUMPS"]) / "zz_broken.txt"
    bad.write_text("<!DOCTYPE html>\n<html><body>Just a moment...</body></html>\n")
    proc = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 1
    dumps = json.loads(proc.stdout)["dumps"]
    assert [d["new"] for d in dumps if not d["error"]] == [81]
    (rejected,) = [d for d in dumps if d["error"]]
    assert "zz_broken.txt:1" in rejected["error"]
    (logged,) = [line for line in proc.stderr.splitlines() if "rejected" in line]
    assert "ERROR" in logged and "zz_broken.txt:1" in logged  # one line, however long, for log files


@pytest.mark.parametrize("first", [("preview", "ssm@example.org"), ("explain", "ssm@example.org", "x")])
def test_a_dump_a_preview_refused_first_is_still_reported_by_the_next_run(
    env: dict[str, str], first: tuple[str, ...]
) -> None:
    """preview and explain recorded the refusal, so the run never reported it and exited 0."""
    add_dumps(env, seed_names()[0])
    (Path(env["NEWSLETTER_DUMPS"]) / "zz_broken.txt").write_text("<!DOCTYPE html>\n<html></html>\n")
    cli(env, *first, "--now", "2026-03-11T08:00:00Z", check=False)
    proc = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 1
    assert [d["file"] for d in json.loads(proc.stdout)["dumps"] if d["error"]] == [
        str(Path(env["NEWSLETTER_DUMPS"]) / "zz_broken.txt")
    ]


def test_a_link_to_nothing_or_a_fifo_named_like_a_dump_is_reported(env: dict[str, str]) -> None:
    """`run` skipped them without a word; `ingest` on the same paths reported them."""
    add_dumps(env, seed_names()[0])
    dumps = Path(env["NEWSLETTER_DUMPS"])
    (dumps / "zz_link.xml").symlink_to(dumps / "gone.xml")
    os.mkfifo(dumps / "zz_pipe.txt")
    proc = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 1
    errors = {Path(d["file"]).name: d["error"] for d in json.loads(proc.stdout)["dumps"] if d["error"]}
    assert sorted(errors) == ["zz_link.xml", "zz_pipe.txt"]
    assert errors["zz_link.xml"].endswith("not a regular file but a link to nothing")
    assert errors["zz_pipe.txt"].endswith("not a regular file but a named pipe")  # was "a link to nothing?"


def test_an_empty_api_listing_is_an_empty_dump_not_a_failed_run(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    (Path(env["NEWSLETTER_DUMPS"]) / "0000_a_weekend.json").write_text("[]\n")  # the API on a quiet day
    report = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z").stdout)
    outcomes = {Path(d["file"]).name: (d["papers"], d["error"]) for d in report["dumps"]}
    assert outcomes["0000_a_weekend.json"] == (0, None)
    assert report["counts"]["sent"] >= 2


def test_a_new_subscriber_after_an_empty_listing_gets_the_newest_papers(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    (Path(env["NEWSLETTER_DUMPS"]) / "zzzz_a_weekend.json").write_text("[]\n")  # listed after the seed
    report = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z").stdout)
    assert [d["papers"] for d in report["dumps"]] == [81, 0]
    by_sub = {d["subscriber"]: d for d in report["digests"]}
    assert by_sub["ssm@example.org"]["status"] == "sent" and by_sub["ssm@example.org"]["items"]


def test_check_reports_broken_yaml_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n  - email: a@example.org\n    interests: [x\n"
    )
    proc = cli(env, "check", check=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "subscribers.yaml:4" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("command", "setting", "value", "message"),
    [  # `check` finds what would fail only later; any command reports a bad setting in one line
        (
            "check",
            "NEWSLETTER_SOURCES",
            '[{"kind": "hf-dialy"}]',
            "error: invalid setting field 'sources[0]'",
        ),
        ("check", "NEWSLETTER_FETCH_CRON", "nonsense", "error: invalid setting field 'fetch_cron'"),
        ("check", "NEWSLETTER_TRANSPORT", "postmark", "error: transport 'postmark' needs an API key"),
        (
            "check",
            "NEWSLETTER_FROM",
            "not an address",
            "error: setting 'from' (environment variable NEWSLETTER_FROM): 'not an address': invalid email",
        ),
        (
            "status",
            "NEWSLETTER_SOURCES",
            "not json",
            "error: invalid setting field 'sources': not valid JSON",
        ),
        ("status", "NEWSLETTER_SMTP_TIMEOUT", "nan", "error: invalid setting field 'smtp_timeout'"),
        ("status", "NEWSLETTER_SMTP_PORT", "99999", "error: invalid setting field 'smtp_port'"),
        ("status", "NEWSLETTER_DATABASE_URL", "sqlite://user:pw-secret@/x", "error: invalid database URL"),
        ("status", "NEWSLETTER_HOME", "/proc/no-such-state", "error: cannot create the state folder"),
    ],
)
def test_a_bad_setting_is_one_error_line_without_a_traceback_or_a_password(
    env: dict[str, str], command: str, setting: str, value: str, message: str
) -> None:
    proc = cli({**env, setting: value}, command, check=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("warning:")]  # check's go first
    assert lines[0].startswith(message)
    assert "Traceback" not in proc.stderr and "pw-secret" not in proc.stderr


def test_check_passes_on_the_example_files(env: dict[str, str]) -> None:
    env["NEWSLETTER_SUBSCRIBERS"] = str(ROOT / "subscribers.example.yaml")
    assert cli(env, "check").stdout.startswith("ok: 4 subscribers")


def test_check_finds_a_state_folder_that_is_a_file(env: dict[str, str], tmp_path: Path) -> None:
    env["NEWSLETTER_SUBSCRIBERS"] = str(ROOT / "subscribers.example.yaml")
    (tmp_path / "a-file").write_text("not a folder\n")
    proc = cli({**env, "NEWSLETTER_HOME": str(tmp_path / "a-file" / "state")}, "check", check=False)
    assert proc.returncode == 1  # `run` would stop at "cannot create the state folder"
    assert f"{tmp_path / 'a-file'} is a file, not a folder" in proc.stderr


def test_preview_renders_without_sending(env: dict[str, str], tmp_path: Path) -> None:
    add_dumps(env, seed_names()[0])
    out = tmp_path / "p.html"
    proc = cli(env, "preview", "ssm@example.org", "--out", str(out), "--now", "2026-03-11T08:00:00Z")
    assert "Subject:" in proc.stdout
    assert "<html" in out.read_text().lower()
    assert outbox(env) == []


def test_a_preview_is_one_file_per_subscriber_however_the_address_is_written(env: dict[str, str]) -> None:
    """`preview SSM@Example.org` wrote a second file beside ssm@example.org.html."""
    add_dumps(env, seed_names()[0])
    for spelling in ("ssm@example.org", "SSM@Example.org"):
        cli(env, "preview", spelling, "--now", "2026-03-11T08:00:00Z")
    assert [p.name for p in (Path(env["NEWSLETTER_HOME"]) / "preview").iterdir()] == ["ssm@example.org.html"]
    opened = cli(
        {**env, "BROWSER": "false"}, "preview", "ssm@example.org", "--open", "--now", "2026-03-11T08:00:00Z"
    )
    shown = Path(env["NEWSLETTER_HOME"]) / "preview" / "ssm@example.org.html"
    assert f"warning: no browser to open; open {shown} yourself\n" in opened.stderr  # it said nothing


def test_a_preview_that_cannot_be_written_is_one_error_line(env: dict[str, str], tmp_path: Path) -> None:
    add_dumps(env, seed_names()[0])
    proc = cli(env, "preview", "ssm@example.org", "--out", str(tmp_path), check=False)  # a folder
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: cannot write the preview to {tmp_path}: Is a directory")


def test_one_click_unsubscribe_headers_when_base_url_is_set(env: dict[str, str]) -> None:
    env |= {
        "NEWSLETTER_BASE_URL": "https://papers.example.org",
        "NEWSLETTER_UNSUBSCRIBE_SECRET": "s3cr3t-value-of-cli",
    }
    add_dumps(env, seed_names()[0])
    proc = cli(env, "--verbose", "run", "--now", "2026-03-11T08:00:00Z")
    msg = outbox(env)[0]
    assert "<https://papers.example.org/unsubscribe/" in str(msg["List-Unsubscribe"])
    assert "mailto:" in str(msg["List-Unsubscribe"])
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "s3cr3t-value" not in proc.stdout + proc.stderr


def test_help_lists_the_commands_and_where_each_setting_comes_from() -> None:
    out = cli({}, "--help").stdout
    for command in ("ingest", "run", "preview", "check"):
        assert command in out
    assert "[env NEWSLETTER_HOME, default ./.newsletter]" in " ".join(out.split())
    assert "NEWSLETTER_* environment variables" in " ".join(out.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--bogus"], "No such option: --bogus"),
        (["ingest"], "Missing argument"),
        (["run", "--workers", "abc"], "Invalid value for '--workers'"),
        (["run", "--dry-run", "true"], "unexpected extra argument"),
        (["run", "--dry-run", "--fetch"], "error: --fetch: a dry run fetches nothing"),  # was ignored
        (["serve", "--port", "99999"], "Invalid value for '--port'"),  # was an OverflowError traceback
        (["daemon", "--tick", "0"], "Invalid value for '--tick'"),
    ],
)
def test_usage_errors_are_a_message_and_exit_2_not_a_traceback(
    env: dict[str, str], args: list[str], message: str
) -> None:
    proc = cli(env, *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--json", "--workers", "abc"], "Invalid value for '--workers'"),
        (["ingest", "--json"], "Missing argument 'FILE'"),
        (["run", "--json", "--bogus"], "No such option: --bogus"),
    ],
)
def test_typer_s_usage_errors_are_one_line_and_json_under_json(
    env: dict[str, str], args: list[str], message: str
) -> None:
    """They were typer's four-line block, with nothing on stdout for a script reading `--json`."""
    proc = cli(env, *args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {message}") and "Usage:" not in proc.stderr
    assert proc.stderr.splitlines()[1].startswith("hint: see `") and "--help`" in proc.stderr
    assert message in json.loads(proc.stdout)["error"]


@pytest.mark.parametrize("now", ["9999-12-31T23:00", "0001-01-01T00:00"])
def test_a_now_out_of_range_is_a_usage_error(env: dict[str, str], now: str) -> None:
    """An OverflowError traceback from `status`, `prune`, `preview` and dry runs."""
    for command in (["status"], ["prune"], ["run", "--dry-run"]):
        proc = cli(env, *command, "--now", now, check=False)
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.startswith("error: --now: the year must be 1970-9000"), proc.stderr


def test_an_error_nobody_foresaw_is_one_line_and_json(env: dict[str, str], tmp_path: Path) -> None:
    """Anything but our own errors was a traceback, and nothing on stdout under `--json`."""
    broken = tmp_path / "sitecustomize.py"  # a bug stood in for: the store raises what it never does
    broken.write_text(
        "import newsletter.ops.status as s\n"
        "def boom(*a, **k):\n    raise ZeroDivisionError('a bug')\n"
        "s.status_report = boom\n"
    )
    env = {**env, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    proc = cli(env, "status", "--json", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "error: unexpected ZeroDivisionError: a bug", proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["error"] == "unexpected ZeroDivisionError: a bug"
    assert "Traceback" in cli(env, "--debug", "status", check=False).stderr


NEEDS_DEV_FULL = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


def _into_a_full_stdout(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`newsletter ARGS > /dev/full`: the disk under cron's `>> run.log` full."""
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            env={**os.environ, **env},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )


@NEEDS_DEV_FULL
def test_a_report_stdout_cannot_take_is_one_error_line(env: dict[str, str]) -> None:
    """A full disk under cron's `>> run.log`: a run that had sent its digests said `unexpected
    OSError ... please report it`, then `Exception ignored`, and exited 120."""
    add_dumps(env, seed_names()[0])
    proc = _into_a_full_stdout(env, "run")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-2:] == [
        "error: cannot write the report to stdout: No space left on device",
        "hint: the run is done; `newsletter status` shows its report",
    ], proc.stderr
    assert len(outbox(env)) == 2


@NEEDS_DEV_FULL
def test_a_dry_run_stdout_cannot_take_names_no_report_it_did_not_save(env: dict[str, str]) -> None:
    """Its hint sent the user to `newsletter status` for a report a dry run never saves."""
    add_dumps(env, seed_names()[0])
    proc = _into_a_full_stdout(env, "run", "--dry-run")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "hint: the dry run is done; it saved no report: run it again where stdout has room"
    ), proc.stderr
    assert not (Path(env["NEWSLETTER_HOME"]) / "last-run.json").exists() and not outbox(env)


def _run_smtp_down_into_a_full_stdout(
    env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The command (exit 1) with SMTP down and stdout on /dev/full; its stderr's error lines."""
    add_dumps(env, seed_names()[0])
    proc = _into_a_full_stdout(_smtp_down(env), *args)
    assert proc.returncode == 1
    return proc, [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@NEEDS_DEV_FULL
def test_a_report_stdout_cannot_take_still_says_the_run_s_errors(env: dict[str, str]) -> None:
    """Only stdout had the transport down's cause (its log line left out as the report's): a cron mail
    said that stdout was full, and nothing of why no digest went."""
    proc, errors = _run_smtp_down_into_a_full_stdout(env, "run")
    assert errors[0].startswith("error: cannot send now (cannot connect to SMTP server"), proc.stderr
    assert errors[1:] == ["error: cannot write the report to stdout: No space left on device"], proc.stderr


@NEEDS_DEV_FULL
@pytest.mark.parametrize("args", [["retry"], ["retry", "--json"]])
def test_a_retry_stdout_cannot_take_names_no_report_it_did_not_save(
    env: dict[str, str], args: list[str]
) -> None:
    """`retry > /dev/full` sent the user to `newsletter status` for "its report": a retry saves none
    (status shows the last run's), so the hint named a report nobody could find."""
    add_dumps(env, seed_names()[0])
    cli(_smtp_down(env), "run", check=False)  # a digest left to retry
    proc = _into_a_full_stdout(_smtp_down(env), *args)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-2:] == [
        "error: cannot write the report to stdout: No space left on device",
        "hint: the retry is done; `newsletter status` shows the deliveries still waiting",
    ], proc.stderr


@NEEDS_DEV_FULL
def test_a_json_report_stdout_cannot_take_still_says_the_run_s_errors(env: dict[str, str]) -> None:
    """`run --json > /dev/full` said only that stdout was full: the transport down's cause was in the JSON."""
    proc, errors = _run_smtp_down_into_a_full_stdout(env, "run", "--json")
    assert len(errors) == 2 and errors[0].startswith("error: cannot send now (cannot connect to SMTP"), (
        proc.stderr
    )
    assert errors[1] == "error: cannot write the report to stdout: No space left on device"


@NEEDS_DEV_FULL
@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["check"], ["ingest"]])
def test_every_command_s_report_stdout_cannot_take_is_the_same_error_line(
    env: dict[str, str], args: list[str]
) -> None:
    """Only `run` and `retry` guarded stdout: `status > /dev/full` said `unexpected OSError`."""
    files = [str(Path(env["NEWSLETTER_DUMPS"]) / seed_names()[0])] if args == ["ingest"] else []
    add_dumps(env, seed_names()[0])
    proc = _into_a_full_stdout(env, *args, *files)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: cannot write the report to stdout: No space left on device",
        "hint: free some space, or point stdout at another file",
    ], proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ranker", "semantik", "check"], "error: invalid setting field 'ranker': "),
        (["--transport", "smpt", "check"], "error: invalid setting field 'transport': "),
        (["run", "--workers", "0"], "error: invalid setting field 'workers': "),
        (["run", "--now", "tomorrow"], "error: --now: not an ISO-8601 date/time: 'tomorrow'"),
    ],
)
def test_a_bad_flag_value_exits_2_naming_the_flag(env: dict[str, str], args: list[str], message: str) -> None:
    proc = cli(env, *args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message)
    flag = next(a for a in args if a.startswith("--"))
    assert flag in proc.stderr.splitlines()[0]
    assert "Traceback" not in proc.stderr


def test_a_bad_setting_names_the_variable_or_newsletter_toml_it_came_from(
    env: dict[str, str], tmp_path: Path
) -> None:
    proc = cli({**env, "NEWSLETTER_RANKER": "semantik"}, "check", check=False)
    assert proc.returncode == 1
    assert "(environment variable NEWSLETTER_RANKER)" in proc.stderr.splitlines()[0]
    (tmp_path / "newsletter.toml").write_text("workers = 0\n", encoding="utf-8")
    proc = cli(env, "status", check=False)  # the working directory is tmp_path
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: invalid setting field 'workers'")
    assert "(newsletter.toml, line 1)" in proc.stderr.splitlines()[0]


def test_check_warns_about_unsubscribed_addresses_still_listed(env: dict[str, str]) -> None:
    from datetime import UTC, datetime

    from newsletter.store import Store

    home = Path(env["NEWSLETTER_HOME"])
    home.mkdir()
    with Store(f"sqlite:///{home / 'state.db'}") as store:
        store.record_unsubscribe("Diff@example.org", datetime(2026, 3, 1, tzinfo=UTC))
    proc = cli(env, "check")
    assert "warning: diff@example.org unsubscribed" in proc.stderr
    assert "ssm@example.org" not in proc.stderr
    assert proc.stdout.startswith("ok: 3 subscribers")


def test_an_argument_that_is_not_utf8_is_a_usage_error(env: dict[str, str]) -> None:
    """It reached the database as a lone surrogate: a SQLAlchemy traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "explain", "a@example.org", b"Bad\xff"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument 3 (Bad\\xff) is not valid UTF-8" in proc.stderr


@pytest.mark.parametrize(
    ("toml", "first_line"),
    [
        ('sources = [{kind = "rss"}]', "error: invalid setting field 'sources[0]': unknown kind 'rss'"),
        ('sources = [{kind = "folder"}, {kind = "folder"}]', "error: invalid setting field 'sources[1]'"),
        ('from = "digest at example.org"', "error: setting 'from' (newsletter.toml, line 2): 'digest at ex"),
        ('sender = "digest at example.org"', "error: setting 'sender' (newsletter.toml, line 2): 'digest at"),
        (
            'list_id = "Papers <>"',
            "error: setting 'list_id' (newsletter.toml, line 2): 'Papers <>' has no identifier",
        ),
    ],
)
def test_sources_sender_and_list_id_errors_name_newsletter_toml(
    env: dict[str, str], tmp_path: Path, toml: str, first_line: str
) -> None:
    (tmp_path / "newsletter.toml").write_text("# the site's settings\n" + toml + "\n", encoding="utf-8")
    env = {k: v for k, v in env.items() if k != "NEWSLETTER_FROM"}  # it would win over newsletter.toml
    proc = cli(env, "check", check=False)  # the working directory is tmp_path
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith(first_line) and "(newsletter.toml, line 2)" in first, first


def test_a_stdout_open_for_reading_is_not_told_to_free_space(env: dict[str, str]) -> None:
    """`check 1</dev/null`: the disk was not full (Bad file descriptor), but the hint said to free space."""
    with open(os.devnull) as read_only:
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", "check"],
            env={**os.environ, **env},
            stdout=read_only,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-2:] == [
        "error: cannot write the report to stdout: Bad file descriptor",
        "hint: point stdout at a file or a pipe it can write to",
    ], proc.stderr


def test_a_digest_that_could_not_be_sent_says_why_and_that_it_goes_next_run(env: dict[str, str]) -> None:
    """The text line said "failed (3 papers)": the reason, and that the next run sends it, were only in
    --json (status showed it queued to retry). Then the cause was said three times (a log line, the
    digest's line, the run's error line): once now, in the error line a cron mail's reader looks at."""
    add_dumps(env, seed_names()[0])
    proc = cli(_smtp_down(env), "run", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 1
    (line,) = [line for line in proc.stdout.splitlines() if ": failed (" in line]
    said = (
        r": failed \(\d+ papers?; error \(cannot send now; .* go out next run; the error below says why\)\)$"
    )
    assert re.search(said, line), line
    assert proc.stderr.startswith("error: cannot send now (cannot connect to SMTP server"), proc.stderr
    assert (proc.stdout + proc.stderr).count("cannot connect to SMTP server") == 1, proc.stderr
    assert "cannot connect" in json.loads(cli(env, "status", "--json").stdout)["last_run"]["errors"][0]


def test_the_transport_down_is_one_error_line_with_send_workers_too(env: dict[str, str]) -> None:
    """Each worker's breaker tripped on it: the cause was said once a worker, and counted as many errors."""
    add_dumps(env, seed_names()[0])
    down = {**_smtp_down(env), "NEWSLETTER_WORKERS": "2"}
    proc = cli(down, "run", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 1
    assert len([line for line in proc.stdout.splitlines() if ": failed (" in line]) == 2, proc.stdout
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: cannot send now (cannot connect to SMTP server"), proc.stderr
    assert proc.stdout.splitlines()[-1].endswith("; 1 error"), proc.stdout


def _smtp_down(env: dict[str, str]) -> dict[str, str]:
    """``env`` sending over SMTP to a port of this machine nothing listens on."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    return {
        **env,
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
    }


def test_a_dry_run_lists_what_earlier_runs_left_queued_and_changes_nothing(env: dict[str, str]) -> None:
    """It said "skipped (nothing new)" for a digest the real run straight after sent."""
    add_dumps(env, seed_names()[0])
    first = cli(_smtp_down(env), "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    failed = [d for d in json.loads(first.stdout)["digests"] if d["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["retried"] is True  # the next run tries it by itself
    queued = json.loads(cli(env, "status", "--json").stdout)["attention"]
    assert queued and {d["status"] for d in queued} == {"retry"}  # the one tried; the others are pending
    dry = cli(env, "run", "--dry-run", "--json", "--now", "2026-03-11T08:05:00Z")
    outcomes = json.loads(dry.stdout)["digests"]
    listed = [d for d in outcomes if d["reason"] == "queued by an earlier run; the next run sends it first"]
    assert {d["subscriber"] for d in queued} < {d["subscriber"] for d in listed}
    assert all(d["status"] == "dry-run" and d["items"] for d in listed)
    assert len(outcomes) == len({d["subscriber"] for d in outcomes})  # no "skipped" beside its queued one
    text = cli(env, "run", "--dry-run", "--now", "2026-03-11T08:05:00Z").stdout
    assert re.search(
        r": dry-run \(\d+ papers?; queued by an earlier run; the next run sends it first\)", text
    )
    assert json.loads(cli(env, "status", "--json").stdout)["attention"] == queued  # nothing changed
    real = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:05:00Z").stdout)["digests"]
    sent = {(d["subscriber"], len(d["items"])) for d in real if d["status"] == "sent"}
    assert sent == {(d["subscriber"], len(d["items"])) for d in listed}  # what the real run sends first


def test_a_dry_run_lists_a_send_a_crash_interrupted_as_the_next_run_recovers_it(env: dict[str, str]) -> None:
    """The outbox writes a digest a crash left 'sending' again: the dry run said "skipped (nothing new)"
    for it, and the real run then sent it (found by a review)."""
    import sqlite3

    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    with sqlite3.connect(Path(env["NEWSLETTER_HOME"]) / "state.db") as db:
        digest_id, email = db.execute(
            "SELECT id, email FROM digests WHERE status = 'sent' LIMIT 1"
        ).fetchone()
        db.execute("UPDATE digests SET status = 'sending' WHERE id = ?", (digest_id,))
    dry = json.loads(cli(env, "run", "--dry-run", "--json", "--now", "2026-03-11T08:05:00Z").stdout)
    listed = [(d["status"], d["reason"], len(d["items"])) for d in dry["digests"] if d["subscriber"] == email]
    real = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:05:00Z").stdout)
    sent = [
        ("dry-run", QUEUED, len(d["items"]))
        for d in real["digests"]
        if d["subscriber"] == email and d["status"] == "sent"
    ]
    assert listed == sent and sent[0][2] > 0  # the same digest, written again, and nothing else for them


def test_check_lists_every_bad_setting(env: dict[str, str]) -> None:
    """A bad setting hid the others: check printed the first, without a count."""
    bad = {**env, "NEWSLETTER_SMTP_PORT": "abc", "NEWSLETTER_TICK_SECONDS": "0", "NEWSLETTER_WORKERS": "-1"}
    proc = cli(bad, "check", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert [line.split("'")[1] for line in lines[:-1]] == ["smtp_port", "workers", "tick_seconds"]
    assert lines[-1] == "3 problems found"
    other = cli(bad, "status", check=False)  # any other command: the first, as before
    assert other.stderr.splitlines() == [lines[0]]


@pytest.mark.parametrize(
    "written", ["Sam <ssm@example.org>", "mailto:ssm@example.org?subject=unsubscribe", " SSM@Example.org "]
)
def test_an_address_as_people_paste_it_names_the_listed_subscriber(env: dict[str, str], written: str) -> None:
    """A From line copied from a mailto request: `unsubscribe` said the listed subscriber was not in
    the file, `resubscribe` then that they had not unsubscribed, and `preview` knew nobody."""
    add_dumps(env, seed_names()[0])
    proc = cli(env, "unsubscribe", written)
    assert proc.stdout == "ssm@example.org: unsubscribed\n"
    assert cli(env, "preview", written).stdout.startswith("ssm@example.org: ")
    assert cli(env, "resubscribe", written).stdout.startswith("ssm@example.org: subscribed again")


def test_newsletter_alone_prints_the_help_as_typer_does() -> None:
    proc = cli({}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Usage: ") and "error:" not in proc.stderr
    assert "Commands" in proc.stderr


def test_an_unrelated_bad_entry_does_not_block_an_unsubscribe(env: dict[str, str]) -> None:
    """One subscriber's typo (or a file mid-edit) refused `unsubscribe` and `resubscribe` for everyone:
    a request to leave could not be recorded until the file was fixed."""
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    good = path.read_text()
    path.write_text(good + "  - email: typo@example.org\n    interests: [x]\n    max_items: 0\n")
    proc = cli(env, "unsubscribe", "ssm@example.org")
    assert proc.stdout == "ssm@example.org: unsubscribed\n"
    assert "max_items" in proc.stderr and proc.stderr.startswith("warning: ")
    path.write_text("subscribers: [oops\n")
    assert cli(env, "unsubscribe", "diff@example.org").stdout.startswith("diff@example.org: unsubscribed")
    path.write_text(good)
    add_dumps(env, seed_names()[0])
    assert cli(env, "run", "--json", check=False).stdout.count('"unsubscribed"') == 2
    assert cli(env, "resubscribe", "ssm@example.org").stdout.startswith("ssm@example.org: subscribed again")


def test_forget_erases_an_address_taken_out_of_the_file(env: dict[str, str]) -> None:
    """A request to be forgotten had no command: the address stayed in the delivery log (each address's
    latest digest survives `prune --sent`), its feedback, its state, the outbox and last-run.json."""
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    home = Path(env["NEWSLETTER_HOME"])
    assert any("_diff@example.org_" in p.name for p in (home / "outbox").iterdir())
    refused = cli(env, "forget", "diff@example.org", check=False)
    assert refused.returncode == 1 and "still a subscriber" in refused.stderr
    assert "stop the daemon" in refused.stderr  # it refuses under a running one
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    path.write_text(path.read_text().replace("diff@example.org", "other@example.org"))
    proc = cli(env, "forget", "Diff <DIFF@example.org>")
    assert proc.stdout.startswith("diff@example.org: forgotten (1 digest, 0 feedback marks, 2 files)")
    assert not any("diff@" in p.name for p in (home / "outbox").iterdir())
    assert "diff@example.org" not in (home / "last-run.json").read_text()
    with sqlite3.connect(home / "state.db") as db:
        for table in ("subscribers", "digests", "feedback"):
            assert not db.execute(f"SELECT 1 FROM {table} WHERE email LIKE 'diff@%'").fetchall()


@pytest.mark.parametrize("args", [["status"], ["check"], ["run"]])
def test_a_reader_that_closed_the_pipe_ends_the_command_quietly_as_seq(
    env: dict[str, str], args: list[str]
) -> None:
    """`status | head -1` exited 1, as an error does (Rich's and typer's handling of a closed pipe)."""
    add_dumps(env, *seed_names()[:1])
    cli(env, "run")
    proc = _with_the_reader_gone(env, *args)
    assert (proc.returncode, proc.stderr) == (141, "")


def _with_the_reader_gone(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command with a stdout whose reader closed it before the first write (`| head` done)."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            env={**os.environ, **env},
            stdout=closed,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )


@pytest.mark.parametrize("args", [["run"], ["retry"]])
def test_a_reader_that_closed_the_pipe_takes_neither_a_failed_run_s_errors_nor_its_status(
    env: dict[str, str], args: list[str]
) -> None:
    """`run | head` exited 141 with nothing on stderr: the run's errors (printed after the digests' lines)
    and its status 1 went with the report's reader, and `|| [ $? = 141 ]` took the run for fine."""
    add_dumps(env, *seed_names()[:1])
    down = _smtp_down(env)
    cli(down, "run", "--now", "2026-03-11T08:00:00Z", check=False)  # a digest queued for `retry`
    proc = _with_the_reader_gone(down, *args, "--now", "2026-03-11T09:00:00Z")
    assert proc.returncode == 1
    assert "error: cannot send now (cannot connect to SMTP server" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


@pytest.mark.parametrize("args", [["run", "--json", "--now", "soon"], ["status", "--json", "--home", ""]])
def test_an_error_under_json_with_the_reader_gone_is_its_line_and_status(
    env: dict[str, str], args: list[str]
) -> None:
    """The error's JSON for a reader that closed the pipe was two tracebacks after the error's line."""
    proc = _with_the_reader_gone(env, *args)
    assert proc.returncode in (1, 2) and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


@NEEDS_DEV_FULL
def test_an_error_under_json_on_a_full_disk_is_its_line_and_status(env: dict[str, str]) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", "run", "--json", "--now", "soon"],
            env={**os.environ, **env},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2 and proc.stderr.startswith("error: --now")
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
