"""SIGTERM or Ctrl-C to `newsletter run` (a real subprocess, with its builder process): it ends within seconds,
takes its children with it, and leaves no digest 'sending' that the transport was not handed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from newsletter.store import Store

from .helpers import add_dumps, cli, outbox, seed_names
from .test_daemon import wait_for

SUBSCRIBERS = 300  # two chunks of 256: the builder is busy, or blocked handing over the second
NOW = "2026-03-11T08:00:00Z"


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _start_run(env: dict[str, str]) -> subprocess.Popen[str]:
    subs = [
        {
            "email": f"reader{i:03d}@example.org",
            "interests": ["large language models"],
            "cadence": "each-dump",
        }
        for i in range(SUBSCRIBERS)
    ]
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(yaml.safe_dump({"subscribers": subs}), encoding="utf-8")
    add_dumps(env, seed_names()[0])
    run_env = {**os.environ, **env, "NEWSLETTER_BUILD_PROCESS": "on", "NEWSLETTER_SEND_RATE": "40"}
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "run", "--now", NOW],
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the builder is found (and cleaned up) by it
    )


def _signal_mid_run(env: dict[str, str], signum: int) -> tuple[str, int]:
    """Send ``signum`` to the run's process once it has sent a few digests; its stderr and exit status."""
    proc = _start_run(env)
    group = proc.pid
    try:
        assert wait_for(lambda: len(outbox(env)) >= 5, 120), "the run sent nothing"
        proc.send_signal(signum)  # to the run's process only, as `kill PID` does
        stopped_at = time.monotonic()
        proc.wait(timeout=30)
        assert wait_for(lambda: not _alive(group), 10), "a child of the run outlived it"
        assert time.monotonic() - stopped_at < 10
    finally:
        if _alive(group):
            os.killpg(group, signal.SIGKILL)
        _, err = proc.communicate()
    return err, proc.returncode


def test_a_builder_whose_run_was_killed_does_not_linger(env: dict[str, str]) -> None:
    _signal_mid_run(env, signal.SIGKILL)  # the builder must not block forever writing to the pipe


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_ends_the_run_and_its_builder_within_seconds(env: dict[str, str], signum: int) -> None:
    """Ctrl-C (SIGINT) as SIGTERM: it abandoned the message in flight, which became 'unknown'. It ends
    with 128 + the signal's number, as a shell reports it (it exited 0: a cron wrapper saw a whole run)."""
    err, status = _signal_mid_run(env, signum)
    assert "Traceback" not in err and signal.Signals(signum).name in err
    assert status == 128 + signum, err
    sent = len(outbox(env))
    assert sent < SUBSCRIBERS  # stopped part-way
    with Store(f"sqlite:///{Path(env['NEWSLETTER_HOME']) / 'state.db'}") as store:
        statuses = Counter(d.status for d in store.deliveries(with_items=False))
    assert statuses["sending"] == statuses["unknown"] == 0
    assert statuses["sent"] == sent
    report = json.loads(cli(env, "run", "--json", "--now", NOW).stdout)  # the rest, once each
    assert report["counts"].get("sent", 0) == SUBSCRIBERS - sent
    assert len({m["To"].addresses[0].addr_spec for m in outbox(env)}) == len(outbox(env)) == SUBSCRIBERS
