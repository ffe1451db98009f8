"""Progress: one bar on a terminal for the long steps, nothing on a pipe, the summary line kept;
the embedding model's own tqdm bars never show."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time

import pytest
from rich.console import Console

from newsletter import progress
from newsletter.rank.semantic import semantic_available

from .helpers import add_dumps, seed_names

RUN = [sys.executable, "-m", "newsletter", "run", "--now", "2026-03-11T08:00:00Z"]


def _run_on_a_terminal(env: dict[str, str]) -> tuple[str, str]:
    """stdout (a pipe) and everything written to stderr (a pseudo-terminal)."""
    leader, follower = pty.openpty()
    terminal = {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        RUN, env={**os.environ, **env, **terminal}, stdout=subprocess.PIPE, stderr=follower, text=True
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        screen += chunk
    stdout, _ = proc.communicate(timeout=300)
    os.close(leader)
    assert proc.returncode == 0, screen.decode(errors="replace")
    return stdout, screen.decode(errors="replace")


def test_a_run_on_a_terminal_shows_a_bar_and_on_a_pipe_nothing(env: dict[str, str]) -> None:
    add_dumps(env, *seed_names()[:2])
    piped = subprocess.run(RUN, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and piped.stderr == ""  # cron's log gets no bar
    summary = piped.stdout.splitlines()[-1]
    assert summary.startswith("2026-03-11 08:00 UTC: 2 dumps ingested")
    env["NEWSLETTER_HOME"] += "-terminal"
    stdout, screen = _run_on_a_terminal(env)
    assert "Ranking and sending digests" in screen
    assert "/3" in screen  # the bar counts the 3 subscribers
    assert stdout.splitlines()[-1] == summary  # the one summary line, as before


@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_loading_the_model_prints_no_tqdm_bars() -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"  # -v: any library bar too
        "from newsletter.rank.minilm import MiniLMEmbedder\n"
        "print(MiniLMEmbedder().embed(['a paper about graph neural networks'] * 40).shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "(40, 384)\n"
    for bar in ("Loading weights", "Batches", "it/s]"):
        assert bar not in proc.stderr


def test_a_step_inside_another_takes_its_place_and_a_pipe_gets_nothing() -> None:
    screen = io.StringIO()
    with progress.shown_on(Console(file=screen, force_terminal=True, width=100)):
        bar = progress._bar
        assert bar is not None
        with progress.step("Ranking and sending digests", 3) as advance:
            with progress.step("Embedding papers", 500) as embed:
                embed(256)
                assert [t.description for t in bar.tasks if t.visible] == ["Embedding papers"]
            advance(3)
            assert [(t.description, t.completed) for t in bar.tasks if t.visible] == [
                ("Ranking and sending digests", 3)
            ]
    assert "Embedding papers" in screen.getvalue()
    piped = io.StringIO()
    with progress.shown_on(Console(file=piped, force_terminal=False)), progress.step("Sending", 3) as advance:
        advance(3)
    assert piped.getvalue() == ""


def test_the_bar_is_cleared_when_the_last_step_ends_and_never_drawn_over_the_report() -> None:
    """The bar lived until the command ended: its last frame stayed on the first report line, and a
    redraw moved the cursor up over what the command had printed since."""
    screen = io.StringIO()
    with progress.shown_on(Console(file=screen, force_terminal=True, width=100)):
        with progress.step("Ranking and sending digests", 4) as advance:
            advance(1)
        drawn = screen.getvalue()
        screen.write("ada@example.org: sent (1 paper)\n")
        time.sleep(0.5)  # five of the bar's refresh periods
        after = screen.getvalue()[len(drawn) :]
        with progress.step("Sending queued digests", 2):  # a later step draws again
            time.sleep(0.2)
        assert "Sending queued digests" in screen.getvalue()[len(drawn) :]
    assert "Ranking and sending digests" in drawn
    assert after == "ada@example.org: sent (1 paper)\n"  # no redraw, no cursor moved over it


def test_a_terminal_that_cannot_redraw_gets_no_blank_lines() -> None:
    """On TERM=dumb (a terminal Rich does not animate) each stop of the bar printed an empty line."""
    screen = io.StringIO()
    with progress.shown_on(Console(file=screen, force_terminal=True, force_interactive=False, width=100)):
        for name in ("Ingesting", "Ranking and sending digests"):
            with progress.step(name, 2) as advance:
                advance(2)
    assert "\n" not in screen.getvalue()  # Progress.stop printed one each time
