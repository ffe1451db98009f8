"""The dumps folder over many runs: a refused file is reported once and remembered, other files warned about once."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import pytest

from newsletter import intake
from newsletter.config import load_settings
from newsletter.errors import StoreError
from newsletter.intake import ingest_folder
from newsletter.report import RunReport
from newsletter.serve.preview import Previewer
from newsletter.sources import MAX_DUMP_BYTES, path_from_text, path_text
from newsletter.store import Store
from newsletter.store.rejected import KEPT_PER_PATH

from .conftest import DATA
from .helpers import cli, make_env, outbox
from .test_store_helpers import open_store

REAL = DATA / "realdata"
GOOD = [
    "hf-daily_2024-11-18.json",
    "hf-daily_2025-01-13.json",
    "hf-daily_2026-07-15.json",
    "hf-daily_2026-08-21.json",
]
DAMAGED = ["hf-daily_2024-12-11.json", "hf-daily_2025-01-09.json", "hf-daily_2025-01-10.json"]


def _run(env: dict[str, str], day: str) -> tuple[int, dict]:
    proc = cli(env, "run", "--json", "--now", f"{day}T09:00:00Z", check=False)
    return proc.returncode, json.loads(proc.stdout)


def _add(env: dict[str, str], *names: str) -> None:
    for name in names:
        shutil.copy(REAL / name, Path(env["NEWSLETTER_DUMPS"]) / name)


def test_a_replay_one_run_per_date_exits_0_with_the_damaged_files_in_the_folder(env: dict[str, str]) -> None:
    _add(env, *DAMAGED)
    code, report = _run(env, "2024-11-17")
    assert code == 1  # new problems: each damaged file reported, once, in one line
    errors = [d["error"] for d in report["dumps"] if d["error"]]
    assert len(errors) == 3 and all("\n" not in e for e in errors)
    assert all("item 1: expected an object, got a string (a Python repr" in e for e in errors)

    for name in GOOD:  # one run per listing date, the damaged files still in the folder
        _add(env, name)
        code, report = _run(env, name[9:19])
        assert code == 0, report
        assert [Path(d["file"]).name for d in report["dumps"] if not d["already"]] == [name]
        assert not any(d["error"] or d["warning"] for d in report["dumps"])

    status = json.loads(cli(env, "status", "--json").stdout)
    assert sorted(Path(r["file"]).name for r in status["rejected_files"]) == DAMAGED


def test_a_damaged_file_fails_only_the_run_it_arrives_in(env: dict[str, str]) -> None:
    days = sorted([*GOOD[:2], *DAMAGED], key=lambda name: name[9:19])
    codes = []
    for name in days:
        _add(env, name)
        codes.append(_run(env, name[9:19])[0])
    assert codes == [0, 1, 1, 1, 0]  # 2024-11-18, the three damaged, 2025-01-13


def test_a_file_no_parser_reads_is_one_warning_not_a_failure(env: dict[str, str]) -> None:
    dumps = Path(env["NEWSLETTER_DUMPS"])
    _add(env, GOOD[0])
    (dumps / "notes.md").write_text("# my notes\n")
    shutil.copy(DATA / "realdata" / "README.md", dumps / "paper.pdf")
    proc = cli(env, "run", "--json", "--now", "2024-11-18T09:00:00Z", check=False)
    assert proc.returncode == 0
    warnings = [d["warning"] for d in json.loads(proc.stdout)["dumps"] if d["warning"]]
    assert len(warnings) == 2 and "notes.md: skipped, not a dump file (run reads .txt, .json" in warnings[0]
    assert proc.stderr.count("skipped, not a dump file") == 2

    again = cli(env, "run", "--json", "--now", "2024-11-19T09:00:00Z")
    assert not any(d["warning"] for d in json.loads(again.stdout)["dumps"])
    assert "not a dump file" not in again.stderr
    listed = [line for line in cli(env, "status").stdout.splitlines() if "notes.md" in line]
    assert len(listed) == 1 and listed[0].count("notes.md") == 1, listed  # it named the file twice
    (dumps / "notes.md").write_text("# my notes, edited\n")  # new content: worth a new warning
    third = cli(env, "run", "--json", "--now", "2024-11-20T09:00:00Z")
    assert [Path(d["file"]).name for d in json.loads(third.stdout)["dumps"] if d["warning"]] == ["notes.md"]
    for edit in range(5):  # a log growing in the folder: a record a change, up to KEPT_PER_PATH
        (dumps / "notes.md").write_text(f"# my notes, edited {edit}\n")
        cli(env, "run", "--json", "--now", f"2024-11-2{edit + 1}T09:00:00Z")
    with open_store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:
        assert [Path(r.path).name for r in store.rejected_files()].count("notes.md") == KEPT_PER_PATH


def test_a_path_whose_refused_content_flips_is_reported_once_for_each(env: dict[str, str]) -> None:
    """Two hosts on one PostgreSQL, each with its own bad file at the same path (or one file flipping
    between two contents): keeping one record a path reported each again at every run (a diff review)."""
    dumps = Path(env["NEWSLETTER_DUMPS"])
    reported = []
    for day, content in enumerate(["# host a\n", "# host b\n"] * 2, start=11):
        (dumps / "notes.md").write_text(content)
        proc = cli(env, "run", "--json", "--now", f"2024-11-{day}T09:00:00Z")
        reported.append(sum(1 for d in json.loads(proc.stdout)["dumps"] if d["warning"]))
    assert reported == [1, 1, 0, 0]


def test_file_names_that_are_not_utf8_are_read_and_remembered(env: dict[str, str]) -> None:
    """A Latin-1 file name stopped every run with a traceback: the name could not be stored."""
    dumps = os.fsencode(env["NEWSLETTER_DUMPS"])
    shutil.copy(REAL / GOOD[0], dumps + b"/listing-caf\xe9.json")
    Path(os.fsdecode(dumps + b"/notes-caf\xe9.md")).write_text("# notes\n")
    shutil.copy(REAL / DAMAGED[0], dumps + b"/broken-caf\xe9.json")
    proc = cli(env, "run", "--json", "--now", "2024-11-18T09:00:00Z", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # 1: the damaged file
    report = json.loads(proc.stdout)
    files = {d["file"].rsplit("/", 1)[1]: d for d in report["dumps"]}
    assert files["listing-caf\\xe9.json"]["new"] > 0
    assert "notes-caf\\xe9.md: skipped, not a dump file" in files["notes-caf\\xe9.md"]["warning"]
    assert "broken-caf\\xe9.json" in files["broken-caf\\xe9.json"]["error"]
    assert outbox(env)
    again = cli(env, "run", "--json", "--now", "2024-11-19T09:00:00Z")  # each remembered, none reported
    assert not any(d["error"] or d["warning"] or not d["already"] for d in json.loads(again.stdout)["dumps"])
    status = json.loads(cli(env, "status", "--json").stdout)  # the refused one is still there
    assert sorted(Path(r["file"]).name for r in status["rejected_files"]) == [
        "broken-caf\\xe9.json",
        "notes-caf\\xe9.md",
    ]


def test_a_file_name_with_a_newline_is_one_line_in_the_run_and_in_status(env: dict[str, str]) -> None:
    """The name's second line printed as a line of its own: an error that looked like a failed fetch."""
    name = "broken\nerror: fetch from hf-daily failed: fake.json"
    shutil.copy(REAL / DAMAGED[0], Path(env["NEWSLETTER_DUMPS"]) / name)
    proc = cli(env, "run", "--now", "2024-11-18T09:00:00Z", check=False)
    assert proc.returncode == 1
    assert "broken\\x0aerror: fetch" in proc.stderr
    assert not any(line.startswith("error:") for line in proc.stderr.splitlines()), proc.stderr
    status = cli(env, "status").stdout
    assert "broken\\x0aerror" in status and not any(line.startswith("error:") for line in status.splitlines())


def test_a_huge_file_is_one_error_line_and_the_rest_is_delivered(env: dict[str, str]) -> None:
    """A 3 GB backup named .json was read whole: a MemoryError traceback, and no digest, at every run."""
    dumps = Path(env["NEWSLETTER_DUMPS"])
    _add(env, GOOD[0])
    with (dumps / "papers-backup.json").open("wb") as huge:
        huge.truncate(MAX_DUMP_BYTES + 1)  # sparse: no disk used
    with (dumps / "video.mp4").open("wb") as other:  # not a dump: hashed in blocks, not read whole
        other.truncate(MAX_DUMP_BYTES + 1)
    proc = cli(env, "run", "--json", "--now", "2024-11-18T09:00:00Z", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (error,) = [d["error"] for d in json.loads(proc.stdout)["dumps"] if d["error"]]
    assert (
        f"papers-backup.json: {MAX_DUMP_BYTES + 1:,} bytes, more than a listing can be (at most 64 MB)"
        in error
    )
    assert outbox(env)
    again = cli(env, "run", "--json", "--now", "2024-11-19T09:00:00Z")  # reported once, as run --help says
    assert not any(d["error"] for d in json.loads(again.stdout)["dumps"])


def test_a_fixed_file_is_read_again_and_ingest_still_reports_a_refused_one(env: dict[str, str]) -> None:
    dumps = Path(env["NEWSLETTER_DUMPS"])
    _add(env, DAMAGED[2])
    assert _run(env, "2025-01-10")[0] == 1
    assert _run(env, "2025-01-11")[0] == 0
    proc = cli(
        env, "ingest", str(dumps / DAMAGED[2]), check=False
    )  # named on the command line: always checked
    assert proc.returncode == 1 and "Python repr" in proc.stdout + proc.stderr
    shutil.copy(REAL / GOOD[1], dumps / DAMAGED[2])  # the same name, now a good listing
    code, report = _run(env, "2025-01-13")
    assert code == 0 and [d["new"] for d in report["dumps"]] == [
        len(json.loads((REAL / GOOD[1]).read_bytes()))
    ]
    assert "Files in the dumps folder that runs skip" not in cli(env, "status").stdout  # fixed: not skipped


def test_the_same_bad_bytes_under_a_new_name_are_reported_and_status_lists_what_is_still_there(
    env: dict[str, str],
) -> None:
    dumps = Path(env["NEWSLETTER_DUMPS"])
    _add(env, DAMAGED[0])
    assert _run(env, "2024-12-11")[0] == 1
    shutil.copy(dumps / DAMAGED[0], dumps / "hf-daily_2024-12-12.json")  # the same failure the next day
    code, report = _run(env, "2024-12-12")
    assert code == 1
    assert [Path(d["file"]).name for d in report["dumps"] if d["error"]] == ["hf-daily_2024-12-12.json"]
    assert _run(env, "2024-12-13")[0] == 0  # each reported once
    (dumps / DAMAGED[0]).unlink()
    status = json.loads(cli(env, "status", "--json").stdout)
    assert [Path(r["file"]).name for r in status["rejected_files"]] == ["hf-daily_2024-12-12.json"]


def test_a_moved_dumps_folder_reports_its_refused_files_no_more_and_status_finds_them(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Refused files were known by their absolute path: after the dumps folder moved (a new disk, another
    mount point) each was reported again and the run exited 1, and `status` lost them."""
    _add(env, DAMAGED[0])
    (Path(env["NEWSLETTER_DUMPS"]) / "notes.md").write_text("# my notes\n")
    assert _run(env, "2024-12-11")[0] == 1
    moved = tmp_path / "elsewhere" / "dumps"
    shutil.move(env["NEWSLETTER_DUMPS"], moved)
    env["NEWSLETTER_DUMPS"] = str(moved)
    code, report = _run(env, "2024-12-12")
    assert code == 0 and not any(d["error"] or d["warning"] for d in report["dumps"]), report["dumps"]
    status = json.loads(cli(env, "status", "--json").stdout)
    files = sorted(r["file"] for r in status["rejected_files"])
    assert files == sorted([str(moved / DAMAGED[0]), str(moved / "notes.md")])
    assert all(str(moved) in r["problem"] for r in status["rejected_files"])


def test_a_refused_file_copied_to_a_second_folder_is_a_file_of_its_own(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Matched by name and bytes alone, a copy in another folder took the first one's record (which
    moved back and forth at each scan) and was never reported: only a file whose old path is gone moved."""
    _add(env, DAMAGED[0])
    assert _run(env, "2024-12-11")[0] == 1
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(Path(env["NEWSLETTER_DUMPS"]) / DAMAGED[0], other / DAMAGED[0])
    first = Path(env["NEWSLETTER_DUMPS"]) / DAMAGED[0]
    code, report = _run({**env, "NEWSLETTER_DUMPS": str(other)}, "2024-12-12")
    assert code == 1 and [d["file"] for d in report["dumps"] if d["error"]] == [str(other / DAMAGED[0])]
    status = json.loads(cli(env, "status", "--json").stdout)
    assert sorted(r["file"] for r in status["rejected_files"]) == sorted(
        [str(first), str(other / DAMAGED[0])]
    )


def test_a_second_scan_does_not_parse_the_files_already_in(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon scans the folder every tick: files whose bytes are a dump in the store are not parsed
    again, and are reported as they were (already in, with their papers)."""
    folder = tmp_path / "dumps"
    folder.mkdir()
    for name in GOOD[:2]:
        shutil.copy(REAL / name, folder / name)
    now = datetime(2026, 3, 11, 8, tzinfo=UTC)
    with open_store(store_url) as store:
        first = ingest_folder(store, folder, now)
        monkeypatch.setattr(intake, "parse_dump", _no_parsing)
        again = ingest_folder(store, folder, now)
        shutil.copy(REAL / GOOD[2], folder / GOOD[2])
        with pytest.raises(AssertionError, match="parsed"):  # a new file is still read
            ingest_folder(store, folder, now)
    assert [(o.file, o.papers, o.already) for o in again] == [(o.file, o.papers, True) for o in first]
    assert all(o.papers and not o.already for o in first)


def test_ingest_of_a_file_named_like_no_dump_asks_whether_it_is_one(tmp_path: Path, store_url: str) -> None:
    notes, broken = tmp_path / "notes.md", tmp_path / "broken.txt"
    notes.write_text("# My notes\n\nSome text.\n")
    broken.write_text("# My notes\n\nSome text.\n")
    with open_store(store_url) as store:
        outcomes = intake.ingest_files(store, [notes, broken], datetime(2026, 3, 11, 8, tzinfo=UTC))
    assert [
        o.error.endswith("; not a dump file? (dumps are .txt, .json, .xml, .rss, .atom, .html, .htm files)")
        for o in outcomes
        if o.error
    ] == [True, False]


def _no_parsing(data: bytes, source: str) -> NoReturn:
    raise AssertionError(f"{source} parsed")


def test_status_finds_a_refused_file_in_a_folder_whose_name_is_not_utf8(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path) + b"/dumps-caf\xe9"
    os.mkdir(folder)
    Path(os.fsdecode(folder + b"/broken-\xe9.json")).write_text("[1]")
    stored = path_text(Path(os.fsdecode(folder + b"/broken-\xe9.json")))
    assert stored.endswith("dumps-caf\\xe9/broken-\\xe9.json")
    assert path_from_text(stored).read_text() == "[1]"


def test_a_database_error_while_ingesting_is_not_the_dump_s_and_it_is_read_again(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk under the database: the file was reported 'rejected' (1 dump rejected), though it is
    not remembered as bad and the next run ingests it."""
    folder = tmp_path / "dumps"
    folder.mkdir()
    shutil.copy(REAL / GOOD[0], folder / GOOD[0])
    now = datetime(2026, 3, 11, 8, tzinfo=UTC)
    report = RunReport(ingested=True)
    with open_store(store_url) as store:
        with monkeypatch.context() as disk:
            disk.setattr(type(store), "ingest", _full_disk)
            report.dumps = ingest_folder(store, folder, now)
        again = ingest_folder(store, folder, now)
    (outcome,) = report.dumps
    assert outcome.later and "database or disk is full" in (outcome.error or "")
    assert "not ingested now (the next run tries again)" in report.summary()
    assert "rejected" not in report.summary()
    assert [(o.papers > 0, o.error) for o in again] == [(True, None)]


def _full_disk(*args: object) -> NoReturn:
    raise StoreError("database error while ingesting: database or disk is full")


def test_serve_tries_a_dump_again_after_a_database_error(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve remembered the file as seen ('dump rejected') and never read it again until it changed."""
    _add(env, GOOD[0])
    settings = load_settings(
        home=env["NEWSLETTER_HOME"],
        subscribers=env["NEWSLETTER_SUBSCRIBERS"],
        dumps=env["NEWSLETTER_DUMPS"],
        ranker="lexical",
    )
    previewer = Previewer(settings, clock=lambda: datetime(2026, 3, 11, 8, tzinfo=UTC))
    try:
        with monkeypatch.context() as disk:
            disk.setattr(Store, "ingest", _full_disk)
            notes = previewer.index().notes
        assert any("not ingested now" in note and "disk is full" in note for note in notes)
        assert previewer.index().notes == ()  # read again, and in
        assert len(previewer.store().dumps()) == 1
    finally:
        previewer.close()


def test_a_dry_run_leaves_a_damaged_file_for_the_real_run_to_report(env: dict[str, str]) -> None:
    """A dry run used up the one report: the real run, the one cron logs, exited 0 and said nothing."""
    _add(env, DAMAGED[0])
    dry = cli(env, "run", "--dry-run", "--json", check=False)
    assert dry.returncode == 1
    real = cli(env, "run", "--json", check=False)
    assert real.returncode == 1
    assert [Path(d["file"]).name for d in json.loads(real.stdout)["dumps"] if d.get("error")] == [DAMAGED[0]]
    assert cli(env, "run", check=False).returncode == 0  # reported once


def test_status_says_why_the_last_run_left_a_dump_for_the_next(env: dict[str, str]) -> None:
    """A daemon whose database disk was full logged each tick's reason, but `status` said only "1 dump
    not ingested now (the next run tries again)", not why."""
    _add(env, GOOD[0])
    _run(env, "2024-11-18")
    last_run = Path(env["NEWSLETTER_HOME"]) / "last-run.json"
    data = json.loads(last_run.read_text())
    error = "database error while ingesting x.json: OperationalError: database or disk is full"
    data["dumps"] = [
        {"file": "x.json", "papers": 0, "new": 0, "already": False, "error": error, "later": True}
    ]
    last_run.write_text(json.dumps(data))
    assert f"  not ingested now: {error}" in cli(env, "status").stdout.splitlines()


def test_run_without_the_dumps_folder_says_to_create_it_as_check_does(env: dict[str, str]) -> None:
    """An install from a wheel has no ./seeds: run's hint left out the fix check gives, creating it."""
    env = {**env, "NEWSLETTER_DUMPS": env["NEWSLETTER_DUMPS"] + "-missing"}
    ran, checked = (cli(env, *command, check=False) for command in (["run"], ["check"]))
    assert ran.returncode == checked.returncode == 1
    hint = "hint: create it or set NEWSLETTER_DUMPS (--dumps)"
    assert hint in ran.stderr
    assert hint in checked.stderr


def test_two_hosts_on_one_database_each_report_their_own_refused_file(tmp_path: Path, pg_url: str) -> None:
    """Two hosts share a PostgreSQL database, each with its dumps folder at another path, and fetch the
    same bad file: host B found A's record under a path it does not have (so 'moved'), took it over and
    never reported its own file; A took it back at its next scan, B again at its: a write every run."""
    hosts = {}
    for host in ("a", "b"):
        (tmp_path / host).mkdir()
        hosts[host] = {**make_env(tmp_path / host), "NEWSLETTER_DATABASE_URL": pg_url}
        _add(hosts[host], DAMAGED[0])
    runs = []
    for host, other, day in (("a", "b", "2024-12-11"), ("b", "a", "2024-12-12"), ("a", "b", "2024-12-13")):
        away = Path(hosts[other]["NEWSLETTER_DUMPS"])  # the other host's folder, not on this one
        away.rename(away.with_name("away"))
        try:
            runs.append(_run(hosts[host], day)[0])
        finally:
            away.with_name("away").rename(away)
    assert runs == [1, 1, 0]
    status = json.loads(cli(hosts["a"], "status", "--json").stdout)
    assert sorted(r["file"] for r in status["rejected_files"]) == sorted(
        str(Path(hosts[host]["NEWSLETTER_DUMPS"]) / DAMAGED[0]) for host in hosts
    )
