"""The builder process (NEWSLETTER_BUILD_PROCESS): same digests as one process, the cap, stops and deaths."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from newsletter.deliver.building import DigestBuilder
from newsletter.executors.parallel import BuilderError

from .helpers import add_dumps, cli, make_env, one_installation, seed_names
from .test_crash import NOW, READERS, Recorder, committed, make_folder, next_run, pipeline

FIRST, SECOND = seed_names()[:2]


def _outbox(env: dict[str, str]) -> dict[str, bytes]:
    outbox = Path(env["NEWSLETTER_HOME"]) / "outbox"
    return {path.name: path.read_bytes() for path in sorted(outbox.glob("*.eml"))}


def _run(env: dict[str, str], *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cli(env, "run", "--json", *args).stdout)
    return result


def test_builder_process_sends_byte_for_byte_what_one_process_sends(tmp_path: Path) -> None:
    envs = {}
    for mode in ("off", "on"):
        (tmp_path / mode).mkdir()
        envs[mode] = {**make_env(tmp_path / mode), "NEWSLETTER_BUILD_PROCESS": mode}
        add_dumps(envs[mode], FIRST)
    one_installation(*(Path(env["NEWSLETTER_HOME"]) for env in envs.values()))
    reports = {mode: _run(env, "--now", "2026-03-11T08:00:00Z") for mode, env in envs.items()}
    assert reports["on"]["digests"] == reports["off"]["digests"]
    assert sum(d["status"] == "sent" for d in reports["on"]["digests"]) == 2
    assert _outbox(envs["on"]) == _outbox(envs["off"]) != {}
    assert "render" in reports["on"]["timings"]  # the builder's stage times reach the report
    stages = {"ingest", "select", "rank", "render", "mime", "store", "send", "forget", "total"}
    for report in reports.values():  # the run's own stages too, beside those of its digests
        assert set(report["timings"]) == stages


class Keeper(Recorder):
    """Keeps every message it accepts."""

    def __init__(self, uses_parts: bool) -> None:
        super().__init__()
        self.uses_parts = uses_parts  # type: ignore[misc]
        self.messages: dict[str, Any] = {}

    def send(self, message: Any) -> None:
        super().send(message)
        self.messages[message.recipient] = message


def test_a_transport_that_reads_only_raw_bytes_gets_the_same_bytes_without_the_parts(
    tmp_path: Path,
) -> None:
    kept = {}
    one_installation(tmp_path / "off" / "state", tmp_path / "on" / "state")
    for mode, uses_parts in (("off", True), ("on", False)):
        folder = make_folder(tmp_path / mode)
        transport = Keeper(uses_parts)
        made, subs = pipeline(folder, _renderer(), transport, build_process=mode)
        made.run(subs, NOW)
        made.store.close()
        kept[mode] = transport.messages
    assert sorted(kept["on"]) == sorted(kept["off"]) == sorted(READERS)
    for reader in READERS:
        whole, lean = kept["off"][reader], kept["on"][reader]
        assert lean.raw == whole.raw
        assert whole.html and whole.text
        assert _decoded_parts(whole.raw) == [whole.text.strip(), whole.html.strip()]  # what the raw holds
        assert (lean.html, lean.text) == ("", "")


def _decoded_parts(raw: bytes) -> list[str]:
    import email
    from email import policy

    parsed = email.message_from_bytes(raw, policy=policy.default)
    parts = [part.get_content() for part in parsed.walk() if not part.is_multipart()]
    return [part.replace("\r\n", "\n").strip() for part in parts]


def test_builder_process_respects_the_run_cap_and_the_next_run_sends_the_rest(tmp_path: Path) -> None:
    env = {**make_env(tmp_path), "NEWSLETTER_BUILD_PROCESS": "on", "NEWSLETTER_MAX_PER_RUN": "1"}
    add_dumps(env, FIRST)
    first = _run(env, "--now", "2026-03-11T08:00:00Z")
    statuses = sorted((d["status"], d["reason"]) for d in first["digests"])
    assert statuses.count(("sent", "")) == 1
    assert ("skipped", "run cap reached; due at the next run") in statuses
    second = _run(env, "--now", "2026-03-11T09:00:00Z")
    assert sum(d["status"] == "sent" for d in second["digests"]) == 1
    assert len(_outbox(env)) == 2


def test_a_stop_reaches_the_builder_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_folder(tmp_path)
    monkeypatch.setattr("newsletter.deliver.building.PLAN_BATCH", 1)
    stop = threading.Event()
    transport = StopsAfterFirst(stop)
    made, subs = pipeline(folder, _renderer(), transport, build_process="on")
    report = made.run(subs, NOW, stop=stop)
    made.store.close()
    outcomes = {o.subscriber: (o.status, o.reason) for o in report.digests}
    assert transport.sent == [READERS[0]]
    assert outcomes[READERS[0]] == ("sent", "")
    assert {outcomes[r][0] for r in READERS[1:]} == {"skipped"}
    _, sent, after = next_run(folder, _renderer())
    assert sorted(sent) == sorted(READERS[1:])
    assert set(after.values()) == {"sent"}


def test_a_dying_builder_is_a_one_line_error_and_what_was_sent_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_folder(tmp_path)
    monkeypatch.setattr("newsletter.deliver.building.PLAN_BATCH", 1)
    real = DigestBuilder.chunks

    def dies_after_one(self: DigestBuilder, *args: Any, **options: Any) -> Any:
        for index, built in enumerate(real(self, *args, **options)):
            if index == 1:
                os._exit(3)  # in the builder process: no report, no goodbye
            yield built

    monkeypatch.setattr(DigestBuilder, "chunks", dies_after_one)
    transport = Recorder()
    made, subs = pipeline(folder, _renderer(), transport, build_process="on")
    with pytest.raises(BuilderError) as caught:
        made.run(subs, NOW)
    made.store.close()
    assert "builder process died (exit status 3)" in str(caught.value)
    assert transport.sent == [READERS[0]]
    assert committed(folder) == {READERS[0]: "sent"}
    monkeypatch.setattr(DigestBuilder, "chunks", real)
    _, sent, after = next_run(folder, _renderer())
    assert sorted(sent) == sorted(READERS[1:])
    assert set(after.values()) == {"sent"}


class StopsAfterFirst(Recorder):
    """Accepts one message, then sets the run's stop event (as SIGTERM's handler would)."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def send(self, message: Any) -> None:
        super().send(message)
        self.stop.set()


def _renderer() -> Any:
    from newsletter.config import PACKAGE_TEMPLATES
    from newsletter.render import Renderer

    return Renderer(PACKAGE_TEMPLATES)


def test_an_error_while_sending_stops_and_reaps_the_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    folder = make_folder(tmp_path)
    monkeypatch.setattr("newsletter.deliver.building.PLAN_BATCH", 1)  # the builder is blocked on a full pipe
    made, subs = pipeline(folder, _renderer(), Broken(), build_process="on")
    with pytest.raises(RuntimeError, match="transport bug"):
        made.run(subs, NOW)
    made.store.close()
    assert multiprocessing.active_children() == []
    assert set(committed(folder).values()) == {"sending"}  # the one it was sending: reported unknown next


class Broken(Recorder):
    """A transport with a bug (not a SendError): the run must end, not hang on its builder."""

    def send(self, message: Any) -> None:
        raise RuntimeError("transport bug")
