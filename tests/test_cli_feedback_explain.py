"""`newsletter feedback EMAIL PAPER --more|--less` and `newsletter explain EMAIL PAPER`, through the entry point."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pytest

from newsletter.app import open_reading_pipeline, open_store
from newsletter.config import load_settings
from newsletter.rank import SemanticRanker
from newsletter.rank.embed import ReadThroughCache
from newsletter.rank.lexical import LexicalParams
from newsletter.store import run_lock
from newsletter.store.vectors import StoreVectorCache

from .helpers import add_dumps, cli, make_env, outbox, seed_names

NOW = "2026-03-11T08:00:00Z"
LATER = "2026-03-12T08:00:00Z"
SSM = "ssm@example.org"
SENT = "Training Large Language Models to Reason in a Continuous Latent Space"  # in Sam's first digest
LEFT_OUT = "Training Chain-of-Thought via Latent-Variable Inference"
SENT_QUOTED = "Training Large Language Models to Reason in a Con…"  # a reason quotes at most 50 characters


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """After a first run over two seed dumps."""
    env = make_env(tmp_path_factory.mktemp("cli"))
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--no-fetch", "--now", NOW)
    return env


@pytest.fixture
def fresh(tmp_path: Path) -> dict[str, str]:
    env = make_env(tmp_path)
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--no-fetch", "--now", NOW)
    return env


def feedback_of(env: dict[str, str]) -> list[tuple[str, str]]:
    settings = load_settings(home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"])
    with open_store(settings) as store:
        return [(f.paper.title, f.kind) for f in store.feedback(SSM)]


def test_feedback_by_title_or_arxiv_id_is_recorded_and_the_last_word_counts(fresh: dict[str, str]) -> None:
    done = cli(fresh, "feedback", SSM, SENT.upper(), "--less", "--now", LATER)
    assert f"{SSM}: less like '{SENT}'" in done.stdout
    assert feedback_of(fresh) == [(SENT, "less")]
    cli(fresh, "feedback", SSM, SENT, "--more", "--now", LATER)
    assert feedback_of(fresh) == [(SENT, "more")]


def test_feedback_changes_the_next_digest(fresh: dict[str, str]) -> None:
    cli(fresh, "feedback", SSM, SENT, "--less", "--now", NOW)
    add_dumps(fresh, seed_names()[2])
    report = json.loads(cli(fresh, "run", "--no-fetch", "--json", "--now", LATER).stdout)
    (digest,) = [d for d in report["digests"] if d["subscriber"] == SSM]
    assert LEFT_OUT not in [item["title"] for item in digest["items"]]  # without the feedback, it is sent


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        ((SSM, "2499.99999", "--less"), 1, "error: no paper '2499.99999' in the store"),
        (("who@example.org", SENT, "--more"), 1, "no subscriber with email 'who@example.org'"),
        ((SSM, SENT), 2, "give --more or --less"),
        ((SSM, SENT, "--more", "--less"), 2, "give --more or --less, not both"),  # the last won in silence
    ],
)
def test_feedback_refuses_what_it_cannot_record(
    env: dict[str, str], args: tuple[str, ...], status: int, message: str
) -> None:
    proc = cli(env, "feedback", *args, check=False)
    assert proc.returncode == status
    assert message in proc.stderr
    assert feedback_of(env) == []


def test_explain_a_sent_paper(env: dict[str, str]) -> None:
    lines = cli(env, "explain", SSM, SENT, "--now", NOW).stdout.splitlines()
    assert lines[0] == SENT
    bar = f"against a bar of {LexicalParams().threshold:.3f}: matches: chain-of-thought, latent space"  # the tests' lexical ranker
    assert lines[1].startswith("  score ") and bar in lines[1]
    score = lines[1].split(" against ")[0].removeprefix("  score ")
    assert float(score) >= LexicalParams().threshold
    assert lines[2].startswith("  best column: ") and lines[2].endswith(f" ({score})")  # the column scored
    place = place_in_email(env, SSM, SENT)
    # the same ranker today: one line, not today's score and reason a second time as the digest's
    assert lines[3:] == [f"  sent: paper {place} of the digest of 2026-03-11 08:00 UTC, scored then as today"]


def test_explain_a_paper_an_older_version_sent_shows_the_score_that_decided_it(fresh: dict[str, str]) -> None:
    """Re-ranked by today's code alone, a paper an older ranker sent read as if today's score had sent it."""
    with sqlite3.connect(Path(fresh["NEWSLETTER_HOME"]) / "state.db") as db:
        changed = db.execute(
            "UPDATE digest_items SET score = 0.987, why = 'an older ranker''s reason' "
            "WHERE paper_id = (SELECT id FROM papers WHERE title = ?)",
            (SENT,),
        ).rowcount
    assert changed == 1

    lines = cli(fresh, "explain", SSM, SENT, "--now", LATER).stdout.splitlines()

    assert lines[1].startswith("  score ") and "0.987" not in lines[1]  # today's ranking, as before
    assert lines[-2].startswith("  sent: paper ")
    assert lines[-1] == (
        "  as ranked for that digest (2026-03-11 08:00 UTC): score 0.987: an older ranker's reason; "
        "the score above is today's"
    )


def place_in_email(env: dict[str, str], to: str, title: str) -> int:
    """Where the paper stands in the digest the outbox holds for ``to`` (its plain-text numbering)."""
    message = next(m for m in outbox(env) if to in str(m["To"]))
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return int(re.search(rf"^(\d+)\. {re.escape(title)}\r?$", text, re.MULTILINE)[1])  # type: ignore[index]


def test_explain_a_paper_left_out_below_the_bar(env: dict[str, str]) -> None:
    lines = cli(env, "explain", "diff@example.org", SENT, "--now", NOW).stdout.splitlines()
    score, bar = (
        float(x) for x in lines[1].split(":")[0].removeprefix("  score ").split(" against a bar of ")
    )
    assert score < bar
    assert "(below threshold)" in lines[1] and lines[2].startswith("  best column: interest 'sound'")
    assert lines[-1] == "  not sent: its score is below the bar"


def test_explain_a_paper_left_out_for_a_less_like_this(fresh: dict[str, str]) -> None:
    cli(fresh, "feedback", SSM, SENT, "--less", "--now", NOW)
    add_dumps(fresh, seed_names()[2])
    out = cli(fresh, "explain", SSM, LEFT_OUT, "--now", LATER).stdout
    assert f"less like '{SENT_QUOTED}' you marked (below threshold)" in out
    assert "best column: the words of your profile" in out
    assert "  less like a paper you marked: -0." in out
    assert out.endswith(
        "left out of the next digest: it is too much like a paper you marked 'less like this'\n"
    )


def test_explain_a_paper_in_the_next_digest(fresh: dict[str, str]) -> None:
    add_dumps(fresh, seed_names()[2])
    out = cli(fresh, "explain", SSM, LEFT_OUT, "--now", LATER).stdout
    assert "in the next digest: paper 1 of 1" in out


def test_explain_and_feedback_take_the_link_a_text_dump_paper_has_in_its_digest(
    fresh: dict[str, str],
) -> None:
    """A paper from a text dump has no arXiv id: its digest's link is an arXiv title search."""
    link = f"https://arxiv.org/search/?searchtype=title&query={quote_plus(SENT)}"
    assert cli(fresh, "explain", SSM, link, "--now", NOW).stdout.splitlines()[0] == SENT
    cli(fresh, "feedback", SSM, link, "--less", "--now", LATER)
    assert feedback_of(fresh) == [(SENT, "less")]


def test_explain_an_unknown_paper_is_one_error_line(env: dict[str, str]) -> None:
    proc = cli(env, "explain", SSM, "No Such Paper", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no paper 'No Such Paper' in the store\nhint:")


def test_explain_and_feedback_take_a_part_of_a_title_no_other_paper_has(fresh: dict[str, str]) -> None:
    assert cli(fresh, "explain", SSM, "continuous LATENT space", "--now", NOW).stdout.splitlines()[0] == SENT
    done = cli(fresh, "feedback", SSM, "Reason in a Continuous", "--more", "--now", LATER)
    assert f"{SSM}: more like '{SENT}'" in done.stdout
    assert feedback_of(fresh) == [(SENT, "more")]


def test_a_part_of_a_title_several_papers_have_lists_them_and_records_nothing(fresh: dict[str, str]) -> None:
    proc = cli(fresh, "feedback", SSM, "latent space", "--more", "--now", LATER, check=False)
    assert proc.returncode == 1
    first, hint = proc.stderr.splitlines()
    smooth = "Smooth Diffusion: Crafting Smooth Latent Spaces in Diffusion Models"
    assert first == f"error: papers whose title holds 'latent space': {smooth}; {SENT}"
    assert hint == "hint: give more of its title, or its arXiv id"
    assert feedback_of(fresh) == []


def test_a_part_that_starts_inside_a_word_names_no_paper(env: dict[str, str]) -> None:
    proc = cli(env, "explain", SSM, "atent space", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no paper 'atent space' in the store\nhint:")


def test_a_part_too_short_to_match_says_so_not_that_no_paper_has_it(fresh: dict[str, str]) -> None:
    """A part under MIN_TITLE_PART matches no title, even one that holds it: it said 'no paper'."""
    for part, args in (("to", ()), (" in ", ()), ("Rea", ("--more", "--now", LATER))):  # all in SENT
        proc = cli(fresh, "feedback" if args else "explain", SSM, part, *args, check=False)
        assert proc.returncode == 1
        first, hint = proc.stderr.splitlines()
        assert first == f"error: {part!r} is too short to match a part of a title (4 characters at least)"
        assert hint == "hint: give more of its title, or its arXiv id"
    assert feedback_of(fresh) == []


def test_explain_prints_a_title_without_its_terminal_escape_sequences(fresh: dict[str, str]) -> None:
    """A listing's title with ESC sequences (colours, a window title) and a right-to-left override
    reached the terminal as they were."""
    title = "Mamba state space \x1b[31mRED\x1b[0m \x1b]0;pwned\x07models \u202egnol\u202c"
    paper = {"id": "2501.00009", "title": title, "summary": "We study state space models. " * 8}
    dump = Path(fresh["NEWSLETTER_DUMPS"]) / "hf-daily_2026-03-12.json"
    dump.write_text(json.dumps([{"paper": paper, "title": title}]), encoding="utf-8")
    cli(fresh, "run", "--no-fetch", "--now", LATER)
    out = cli(fresh, "explain", SSM, "2501.00009", "--now", LATER).stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert " ".join(out.splitlines()[0].split()) == "Mamba state space [31mRED [0m ]0;pwned models gnol"


def test_explain_a_relevant_paper_a_full_digest_left_out(tmp_path: Path) -> None:
    """After the run it said the paper came before the window or scored below the bar, and 'would count
    now': it was in the window, above the bar, and will never be sent."""
    env = make_env(tmp_path)
    subscribers = Path(env["NEWSLETTER_SUBSCRIBERS"])
    add_dumps(env, *seed_names()[:2])
    subscribers.write_text(
        subscribers.read_text().replace("    name: Sam\n", "    name: Sam\n    max_items: 2\n")
    )
    dry = json.loads(cli(env, "run", "--dry-run", "--json", "--now", NOW).stdout)
    (sam,) = [d for d in dry["digests"] if d["subscriber"] == SSM]
    first, second = (item["title"] for item in sam["items"])
    subscribers.write_text(subscribers.read_text().replace("    max_items: 2\n", "    max_items: 1\n"))
    cli(env, "run", "--now", NOW)
    lines = cli(env, "explain", SSM, second, "--now", LATER).stdout.splitlines()
    assert lines[-1] == (
        "  not sent: weighed for the digest of 2026-03-11 08:00 UTC, which was full (1 paper, max_items): "
        "most likely it was past them; a paper is weighed for one digest only"
    )
    assert (
        cli(env, "explain", SSM, first, "--now", LATER).stdout.splitlines()[-1].startswith("  sent: paper 1")
    )


def test_a_paper_listed_before_the_14_days_a_window_reaches_is_explained_and_nothing_is_due(
    tmp_path: Path,
) -> None:
    """Four weeks after a dump no run weighed for Sam: `explain` said the paper "would count now" (no
    window reaches it), and `status` called Sam due now while `run` said "nothing new"."""
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)  # Sam's watermark: the first dump
    add_dumps(env, seed_names()[1])  # holds SENT
    cli(env, "run", "--dry-run", "--now", LATER)  # ingested, weighed for nobody
    weeks = "2026-04-09T08:00:00Z"
    status = json.loads(cli(env, "status", "--json", "--now", weeks).stdout)
    assert {row["subscriber"]: row["next_due"] for row in status["subscribers"]}[SSM] == (
        "when a dump brings new papers"
    )
    assert cli(env, "explain", SSM, SENT, "--now", weeks).stdout.splitlines()[-1] == (
        "  not sent: it was listed more than 14 days before a digest could weigh it "
        "(a window reaches back 14 days at most)"
    )
    assert (
        cli(env, "explain", SSM, SENT, "--now", LATER)
        .stdout.splitlines()[-1]
        .startswith("  in the next digest")
    )


def test_preview_and_explain_answer_while_the_daemon_holds_the_lock(fresh: dict[str, str]) -> None:
    add_dumps(fresh, seed_names()[2])  # a new dump the holder of the lock will ingest
    command = [sys.executable, "-c", HOLD_LOCK, fresh["NEWSLETTER_HOME"]]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            left_out = (
                f"1 dump file not in the store yet left out ({seed_names()[2]}); the next run or daemon"
            )
            for args in (("preview", SSM, "--now", LATER), ("explain", SSM, SENT, "--now", LATER)):
                proc = cli(fresh, *args)  # before: "error: another run holds .../run.lock", exit 1
                assert "WARNING another process holds the run lock" in proc.stderr and left_out in proc.stderr
            assert SENT in proc.stdout
            retry = cli(fresh, "retry", check=False).stderr  # sending still waits for the lock
            assert "another run holds" in retry and "a `newsletter daemon` holds the lock" in retry
            refused = cli(fresh, "run", "--json", check=False)  # a script reading the report: JSON still
            said = json.loads(refused.stdout)
            assert refused.returncode == 1 and said["error"].startswith("another run holds")
            assert "a `newsletter daemon` holds the lock" in said["hint"]
            (Path(fresh["NEWSLETTER_DUMPS"]) / seed_names()[2]).unlink()
            assert "WARNING" not in cli(fresh, "preview", SSM, "--now", LATER).stderr  # nothing left out
        finally:
            holder.kill()
    settings = load_settings(home=fresh["NEWSLETTER_HOME"], subscribers=fresh["NEWSLETTER_SUBSCRIBERS"])
    with open_store(settings) as store:
        assert len(store.dumps()) == 2  # the new dump was the lock holder's to ingest


HOLD_LOCK = """
import sys, time
from pathlib import Path
from newsletter.store import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(300)
"""


def test_preview_and_explain_let_a_run_start_once_the_files_are_in(fresh: dict[str, str]) -> None:
    """They held the run lock while they ranked: `explain` embedding a new dump (92 s) refused a cron
    run and a daemon's start. The lock is let go once the files are ingested, so the vectors they embed
    stay in memory: a run may be rewriting a paper and its stored vectors meanwhile, and a vector stored
    then could be of the old text, kept for good (the store keeps the first vector of a key)."""
    settings = load_settings(
        home=fresh["NEWSLETTER_HOME"],
        subscribers=fresh["NEWSLETTER_SUBSCRIBERS"],
        dumps=fresh["NEWSLETTER_DUMPS"],
        ranker="semantic",
    )
    with open_reading_pipeline(settings, datetime.now(UTC)) as pipeline:
        assert pipeline.store.latest_paper_seq() is not None  # the dumps were ingested under the lock
        with run_lock(settings.home):  # ... and it is free again: a run starts
            pass
        assert isinstance(pipeline.ranker, SemanticRanker)
        cache = pipeline.ranker.cache
        assert isinstance(cache, ReadThroughCache)
        cache.put("m", {"memory": np.ones(4, dtype=np.float32)})
        assert cache.inner.get("m", ["memory"]) == {}
    with open_store(settings) as store:
        StoreVectorCache(store).put("m", {"stored": np.ones(4, dtype=np.float32)})
    command = [sys.executable, "-c", HOLD_LOCK, fresh["NEWSLETTER_HOME"]]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            with open_reading_pipeline(settings, datetime.now(UTC)) as pipeline:
                assert isinstance(pipeline.ranker, SemanticRanker)
                cache = pipeline.ranker.cache
                assert isinstance(cache, ReadThroughCache)
                cache.put("m", {"k": np.ones(4, dtype=np.float32)})
                assert set(cache.get("m", ["k"])) == {"k"} and cache.inner.get("m", ["k"]) == {}
                assert set(cache.get("m", ["stored", "k", "none"])) == {"stored", "k"}  # read through
        finally:
            holder.kill()
