"""One progress bar on a terminal for a run's long steps (loading the model, embedding, ranking and
sending); nothing anywhere else (cron, a pipe, the daemon, tests), where the summary line is enough.

The CLI turns the bar on for its error console with ``shown_on``; library code reports through ``step``,
which costs nothing while no bar is shown. A forked builder or worker process never draws (its copy of
the bar has no screen), nor does a thread other than the main one: only the process and thread that
started the bar report on it. A step inside another (embedding while ranking) takes the outer one's place.
The bar is drawn only while a step runs: cleared when the outermost one ends, before the command prints
its report (a live bar redrawn over what the command printed to the same screen erased it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

Advance = Callable[[int], None]

_bar: Progress | None = None
_owner = 0  # the process that shows the bar
_shown: list[TaskID] = []  # the steps in progress, innermost last; only the innermost is drawn


@contextmanager
def shown_on(console: Console) -> Iterator[None]:
    """Show steps as one transient bar on ``console`` while the block runs, when it is a terminal."""
    global _bar, _owner
    if not console.is_terminal or _bar is not None:
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    # stdout is left alone: it carries the report (--json), whatever the terminal shows on stderr
    bar = Progress(*columns, TimeElapsedColumn(), console=console, transient=True, redirect_stdout=False)
    _bar, _owner = bar, os.getpid()
    try:
        yield
    finally:
        _bar = None
        bar.live.stop()  # a step the command left running (an error): its bar is cleared too


@contextmanager
def step(description: str, total: int | None = None) -> Iterator[Advance]:
    """A step of ``total`` units (None: of unknown length); call the advance function as units finish."""
    bar = _bar
    if bar is None or os.getpid() != _owner or threading.current_thread() is not threading.main_thread():
        yield _ignore
        return
    outer = _shown[-1] if _shown else None
    if outer is None:
        bar.start()
    else:
        bar.update(outer, visible=False)  # one bar: a step inside another (embedding) takes its place
    task = bar.add_task(description, total=total)
    _shown.append(task)
    bar.refresh()  # drawn at once, even for a step shorter than a refresh period

    def advance(units: int = 1) -> None:
        bar.advance(task, units)

    try:
        yield advance
    finally:
        _shown.pop()
        bar.remove_task(task)
        if outer is None:
            bar.live.stop()  # cleared: what is printed next stays as printed (no blank line on TERM=dumb)
        else:
            bar.update(outer, visible=True)


def _ignore(units: int = 1) -> None:
    return None
