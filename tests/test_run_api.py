"""`newsletter run` against a Postmark-shaped HTTP API on loopback (tests/api_server.py): batches, refusals,
a dropped or timed-out batch, rate limits shared by the requests in flight."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.report import BACKING_OFF
from newsletter.store import SENDING, SENT

from .api_server import Api, running
from .helpers import add_dumps, cli, seed_names
from .test_crash import open_store, write_subscribers


@pytest.fixture
def api(env: dict[str, str]) -> Iterator[Api]:
    state = Api()
    with running(state) as url:
        env |= {
            "NEWSLETTER_TRANSPORT": "postmark",
            "NEWSLETTER_API_KEY": "server-token-secret",
            "NEWSLETTER_API_BASE_URL": url,
            "NEWSLETTER_RETRY_BACKOFF": "0",
        }
        yield state


def _run(env: dict[str, str], now: str) -> tuple[int, dict[str, str]]:
    proc = cli(env, "run", "--json", "--now", now, check=False)
    digests = json.loads(proc.stdout)["digests"]
    return proc.returncode, {d["subscriber"]: d["status"] for d in digests if d["status"] != "skipped"}


def _attention(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    status = json.loads(cli(env, "status", "--json").stdout)
    return {a["subscriber"]: (a["status"], a["error"]) for a in status["attention"]}


DUE = ["diff@example.org", "ssm@example.org"]  # the two subscribers the first two seeds have papers for


def test_a_run_sends_its_digests_in_one_batch_request(env: dict[str, str], api: Api) -> None:
    add_dumps(env, *seed_names()[:2])
    code, statuses = _run(env, "2026-03-11T08:00:00Z")
    assert code == 0 and statuses == dict.fromkeys(DUE, "sent")
    assert (api.requests, api.batches) == (1, 1)
    assert sorted(api.recipients) == DUE


def test_batch_size_one_sends_a_request_per_message(env: dict[str, str], api: Api) -> None:
    add_dumps(env, *seed_names()[:2])
    code, _ = _run({**env, "NEWSLETTER_BATCH_SIZE": "1"}, "2026-03-11T08:00:00Z")
    assert code == 0 and (api.requests, api.batches) == (2, 0)


def test_a_message_the_batch_reply_refuses_fails_alone(env: dict[str, str], api: Api) -> None:
    add_dumps(env, *seed_names()[:2])
    api.refuse = {"ssm@example.org"}  # Postmark answers 200; this element has ErrorCode 406
    code, statuses = _run(env, "2026-03-11T08:00:00Z")
    assert code == 3 and statuses == {"diff@example.org": "sent", "ssm@example.org": "failed"}
    status, error = _attention(env)["ssm@example.org"]
    assert status == "failed" and "ErrorCode 406" in error and "inactive" in error
    assert api.recipients == ["diff@example.org"] and (api.requests, api.batches) == (1, 1)
    api.refuse = set()
    _run(env, "2026-03-11T09:00:00Z")  # permanent: not resent by later runs
    assert api.recipients == ["diff@example.org"]
    add_dumps(env, seed_names()[2])  # new papers: the inactive address is held, as an SMTP 5.1.1 one is
    proc = cli(env, "run", "--json", "--now", "2026-03-12T08:00:00Z", check=False)
    (held,) = [d for d in json.loads(proc.stdout)["digests"] if d["subscriber"] == "ssm@example.org"]
    assert held["status"] == "skipped" and "refused for good" in held["reason"], held
    assert proc.returncode == 0 and "ssm@example.org" not in api.recipients


@pytest.mark.parametrize("lost", ["drop", "timeout"])
def test_a_batch_whose_reply_never_comes_is_unknown_and_not_resent(
    env: dict[str, str], api: Api, lost: str
) -> None:
    add_dumps(env, *seed_names()[:2])
    if lost == "drop":
        api.mode = "drop"  # the server accepts both, then the connection goes before the reply
    else:
        api.delay = 3.0  # longer than the client waits
        env["NEWSLETTER_API_TIMEOUT"] = "1"
    code, statuses = _run(env, "2026-03-11T08:00:00Z")
    assert code == 1 and statuses == dict.fromkeys(DUE, "unknown")
    assert {who: s for who, (s, _) in _attention(env).items()} == dict.fromkeys(DUE, "unknown")
    assert api.requests == 1  # not retried: Postmark has no idempotency key
    api.mode, api.delay = "ok", 0.0
    _run(env, "2026-03-11T09:00:00Z")
    assert sorted(api.recipients) == DUE  # each once: the later run did not resend them


def test_a_refused_key_keeps_every_digest_queued_until_it_is_fixed(env: dict[str, str], api: Api) -> None:
    add_dumps(env, *seed_names()[:2])
    api.mode = "bad-key"
    code, statuses = _run({**env, "NEWSLETTER_BATCH_SIZE": "1"}, "2026-03-11T08:00:00Z")
    assert code == 1 and api.requests == 1  # the key is not tried again for the next subscriber
    assert list(statuses.values()) == ["failed"]  # the one tried; the others were never attempted
    api.mode = "ok"
    code, statuses = _run(env, "2026-03-11T08:10:00Z")
    assert code == 0
    assert sorted(api.recipients) == DUE  # nothing lost, nothing twice


def test_a_long_retry_after_ends_the_run_at_once_and_the_batch_waits(env: dict[str, str], api: Api) -> None:
    add_dumps(env, *seed_names()[:2])
    api.mode = "rate-limited"
    started = time.monotonic()
    code, statuses = _run(env, "2026-03-11T08:00:00Z")
    assert code == 1 and time.monotonic() - started < 60 and api.requests == 1  # no hour-long sleep
    assert statuses == dict.fromkeys(DUE, "failed")  # the batch the API asked to hold
    api.mode = "ok"
    later = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:10:00Z").stdout)["digests"]
    assert api.recipients == []  # it waits out its hour, and the report says so (not 'nothing new')
    assert {d["subscriber"]: d["reason"] for d in later if d["subscriber"] in DUE} == dict.fromkeys(
        DUE, BACKING_OFF
    )
    code, _ = _run(env, "2026-03-11T09:10:00Z")
    assert code == 0 and sorted(api.recipients) == DUE
    assert api.requests == 2  # in one batch again, not a request each (Postmark has no batch key)


@pytest.mark.parametrize("asked", ["86400000000000", "1e300"])
def test_a_retry_after_of_ages_is_a_day_s_wait_not_a_crash(env: dict[str, str], api: Api, asked: str) -> None:
    """timedelta(seconds=8.64e13) overflowed: a traceback, no report, and the digests left 'sending',
    which the next run called 'unknown' and never sent."""
    add_dumps(env, *seed_names()[:2])
    api.mode, api.retry_after = "rate-limited", asked
    code, statuses = _run(env, "2026-03-11T08:00:00Z")
    assert code == 1 and statuses == dict.fromkeys(DUE, "failed")
    api.mode = "ok"
    code, _ = _run(env, "2026-03-12T08:10:00Z")  # the day the longest backoff ends
    assert code == 0 and sorted(api.recipients) == DUE


@pytest.mark.parametrize("batch", ["1", "100"])
def test_retries_are_the_settings_own_not_multiplied_by_two_loops(
    env: dict[str, str], api: Api, batch: str
) -> None:
    add_dumps(env, *seed_names()[:2])
    api.mode = "down"
    run_env = {**env, "NEWSLETTER_RETRIES": "1", "NEWSLETTER_BATCH_SIZE": batch}
    code, statuses = _run(run_env, "2026-03-11T08:00:00Z")
    assert code == 1 and set(statuses.values()) == {"failed"}  # the provider down: the run's trouble
    requests = len(statuses) if batch == "1" else 1
    assert api.requests == 2 * requests  # 1 + NEWSLETTER_RETRIES per request


def test_a_429_pauses_every_request_in_flight_until_the_same_moment(
    tmp_path: Path, env: dict[str, str], api: Api
) -> None:
    write_subscribers(tmp_path / "subscribers.yaml")  # 60 subscribers, each-dump
    add_dumps(env, seed_names()[0])
    api.delay = 0.2  # per accepted request; a 429 comes back at once
    api.limit_after, api.limit_window = 6, 1.5  # the 7th request opens 1.5 s of 429s
    run_env = {**env, "NEWSLETTER_CONNECTIONS": "4", "NEWSLETTER_BATCH_SIZE": "1"}
    code, statuses = _run(run_env, "2026-03-11T08:00:00Z")
    assert code == 0 and set(statuses.values()) == {"sent"} and len(statuses) > 20
    assert Counter(api.recipients) == Counter(list(statuses))  # each once
    limited = [t for t, status in api.arrivals if status == 429]
    # The three other connections were waiting for accepted requests when the 429 came: they wait
    # out its pause instead of each running into the limit (one more only if it sent in the same ms).
    assert 1 <= len(limited) <= 2
    during = [t - limited[0] for t, _ in api.arrivals if 0.3 < t - limited[0] < 1.4]
    assert during == []  # nobody sent while the run was paused


@pytest.mark.parametrize("batch", ["1", "100"])
def test_a_kill_during_a_rate_limit_wait_leaves_the_digests_queued_not_unknown(
    env: dict[str, str], api: Api, batch: str
) -> None:
    """SIGKILL while a run waits out a 429 it was asked to wait for (30 s, within the run's 60): the API
    refused the request, so the next run sends those digests, each once, and reports nothing unknown."""
    add_dumps(env, *seed_names()[:2])
    env |= {"NEWSLETTER_BATCH_SIZE": batch}
    api.mode, api.retry_after = "rate-limited", "30"
    run = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "run", "--now", "2026-03-11T08:00:00Z"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: _refused(env) > 0 or run.poll() is not None, seconds=120)
        assert run.poll() is None, "the run ended instead of waiting out the 429"
    finally:
        run.kill()
        run.wait()
    assert api.requests >= 1 and api.recipients == []
    with open_store(env) as store:
        waiting = store.deliveries([SENDING], with_items=False)  # marked refused: not sent
    in_flight = 1 if batch == "1" else len(DUE)  # one message per request, or both in one batch
    assert len(waiting) == _refused(env) == in_flight
    assert all("rate limit" in (d.last_error or "") for d in waiting)
    api.mode = "ok"
    proc = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z")  # ...so nothing to look at: exit 0
    assert json.loads(proc.stdout)["recovered_unknown"] == []
    assert sorted(api.recipients) == DUE  # each once
    with open_store(env) as store:
        assert {d.status for d in store.deliveries(with_items=False)} == {SENT}
    assert _attention(env) == {}


def _refused(env: dict[str, str]) -> int:
    """Digests the run marked as refused and waiting (read straight from its database)."""
    path = Path(env["NEWSLETTER_HOME"]) / "state.db"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)) as db:
            return int(db.execute("SELECT count(*) FROM digests WHERE refused").fetchone()[0])
    except sqlite3.OperationalError:  # not made yet, or not migrated yet
        return 0


def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


PROXY_PASSWORD = "pr0xy-s3cret"


def test_a_password_in_the_api_url_is_masked_in_logs_errors_and_state(env: dict[str, str], api: Api) -> None:
    url = env["NEWSLETTER_API_BASE_URL"]
    env["NEWSLETTER_API_BASE_URL"] = url.replace("://", f"://proxyuser:{PROXY_PASSWORD}@")
    add_dumps(env, seed_names()[0])
    sent = cli(
        env, "--debug", "run", "--now", "2026-03-11T08:00:00Z"
    )  # httpx logs each request's URL (--debug only)
    assert "HTTP Request: POST http://proxyuser:***@127.0.0.1" in sent.stderr
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    env["NEWSLETTER_API_BASE_URL"] = f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:{closed}"
    add_dumps(env, seed_names()[1])
    failed = cli(env, "--debug", "run", "--now", "2026-03-12T08:00:00Z", check=False)
    assert (
        failed.returncode == 1 and "cannot reach Postmark at http://proxyuser:***@127.0.0.1" in failed.stderr
    )
    home = Path(env["NEWSLETTER_HOME"])
    kept = [p.read_bytes() for p in home.rglob("*") if p.is_file()]
    printed = sent.stdout + sent.stderr + failed.stdout + failed.stderr
    assert not any(PROXY_PASSWORD.encode() in data for data in [printed.encode(), *kept])


def test_debug_shows_our_steps_and_httpx_s_requests_not_the_libraries_internals(
    env: dict[str, str], api: Api
) -> None:
    """filelock's every lock and httpcore's every socket step buried our own lines."""
    add_dumps(env, seed_names()[0])
    proc = cli(env, "--debug", "run", "--now", "2026-03-11T08:00:00Z")
    assert "DEBUG compiled" in proc.stderr and "HTTP Request: POST" in proc.stderr
    assert "acquire lock" not in proc.stderr and ".started" not in proc.stderr
    assert "server-token-secret" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("batch", ["1", "100"])
def test_a_stop_during_a_rate_limit_wait_leaves_the_digests_due_at_once(
    env: dict[str, str], api: Api, batch: str
) -> None:
    """A stop (SIGTERM) during the wait a 429 asked for: 'failed' with five minutes' backoff before, so
    the next run skipped them as 'nothing new', where a kill -9 in the same wait left them due."""
    add_dumps(env, *seed_names()[:2])
    api.mode, api.retry_after = "rate-limited", "30"  # waited out in the run
    run_env = {**os.environ, **env, "NEWSLETTER_BATCH_SIZE": batch}
    command = [sys.executable, "-m", "newsletter", "run", "--json", "--now", "2026-03-11T08:00:00Z"]
    with subprocess.Popen(command, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        deadline = time.monotonic() + 60
        while not api.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # in the wait
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=30)
    digests = json.loads(out)["digests"]
    assert run.returncode == 128 + signal.SIGTERM, err.decode()  # stopped by it: the rest waits
    assert {d["status"] for d in digests if d["subscriber"] in DUE} == {"skipped"}
    api.mode = "ok"
    code, _ = _run(env, "2026-03-11T08:00:30Z")  # the same minute: due at once
    assert code == 0 and sorted(api.recipients) == DUE


def test_the_provider_down_is_the_run_s_own_trouble_not_routine_mail(env: dict[str, str], api: Api) -> None:
    """Every request answered 503 (the provider down) gave exit status 3, as for a bounce (late diff
    review): the run's trouble, 1."""
    api.mode = "down"
    add_dumps(env, *seed_names()[:2])
    proc = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    failed = [d for d in json.loads(proc.stdout)["digests"] if d["status"] == "failed"]
    assert failed, proc.stdout
    assert proc.returncode == 1, (proc.returncode, failed, json.loads(proc.stdout).get("errors"))
