"""subscribers.yaml read as people write it (times stay times) and as attackers write it (alias bombs)."""

from __future__ import annotations

import importlib.resources
import os
import resource
import subprocess
import sys
import time
from datetime import time as clock
from pathlib import Path

import pytest
import yaml

from newsletter.daemon.schedule import SubscriberFile
from newsletter.errors import ConfigError
from newsletter.subscribers import load_subscribers, read_subscribers

from .helpers import SUBSCRIBERS, make_env


def _one(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(f"subscribers:\n  - email: ada@example.org\n    interests: [GraphSAGE]\n{extra}", "utf-8")
    return path


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("7:30", clock(7, 30)),
        ("18:00", clock(18, 0)),
        ("'07:30'", clock(7, 30)),
        ('"6:05:30"', clock(6, 5, 30)),
    ],
)
def test_an_unquoted_time_is_the_time_written_not_base_60_seconds(
    tmp_path: Path, written: str, expected: clock
) -> None:
    (subscriber,) = load_subscribers(_one(tmp_path, f"    send_at: {written}\n")).subscribers
    assert subscriber.send_at == expected


def test_other_colon_numbers_stay_text_too(tmp_path: Path) -> None:
    (subscriber,) = load_subscribers(_one(tmp_path, "    name: 1:20\n    exclude: [3:10]\n")).subscribers
    assert (subscriber.name, subscriber.exclude) == ("1:20", ("3:10",))


def test_a_merge_key_brings_in_a_shared_mapping_and_keys_beside_it_win(tmp_path: Path) -> None:
    """`<<: *common` was refused: "could not determine a constructor for the tag ...merge"."""
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "defaults: {}\n"
        "x: &lab {cadence: weekly, weekday: tue, interests: [GraphSAGE]}\n"
        "subscribers:\n"
        "  - email: ada@example.org\n"
        "    <<: *lab\n"
        "  - email: alan@example.org\n"
        "    <<: *lab\n"
        "    cadence: daily\n"
        "    interests: [Kestrel]\n",
        "utf-8",
    )
    with pytest.raises(ConfigError, match=r"subscribers.yaml:2: unknown top-level key 'x'"):
        load_subscribers(path)  # an anchor's home is still a key the file must know
    path.write_text(path.read_text("utf-8").replace("defaults: {}\nx: &lab", "defaults: &lab"), "utf-8")
    ada, alan = load_subscribers(path).subscribers
    assert (ada.cadence, ada.weekday, ada.interests) == ("weekly", "tue", ("GraphSAGE",))
    assert (alan.cadence, alan.interests) == ("daily", ("Kestrel",))
    path.write_text(path.read_text("utf-8") + "    cadence: weekly\n", "utf-8")
    with pytest.raises(ConfigError, match=r"subscribers.yaml:9: .*duplicate key 'cadence'"):
        load_subscribers(path)  # written twice beside the merge: still a duplicate


def test_merges_are_done_once_per_mapping_not_by_pyyaml_which_copied_every_repeat_before_6_0_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nested merges of aliases (a "billion laughs" of `<<`) grew nine-fold a level inside PyYAML's
    flatten_mapping before 6.0.4 (7 levels, 505 bytes: 27 s), before the expansion check ran."""

    def flatten_nothing_merged(self: object, node: yaml.MappingNode) -> None:
        assert not [k for k, _ in node.value if k.tag == "tag:yaml.org,2002:merge"], "PyYAML asked to merge"

    monkeypatch.setattr(yaml.constructor.SafeConstructor, "flatten_mapping", flatten_nothing_merged)
    levels = ["a0: &a0 {cadence: weekly, weekday: mon}"]
    levels += [f"a{n}: &a{n} {{<<: [{', '.join([f'*a{n - 1}'] * 9)}]}}" for n in range(1, 10)]
    bomb = "defaults:\n" + "".join(f"  {line}\n" for line in levels)
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        bomb + "subscribers:\n  - email: ada@example.org\n    interests: [x]\n    <<: *a9\n", "utf-8"
    )
    with pytest.raises(ConfigError, match="unknown key 'a0'"):
        load_subscribers(path)  # built (nine levels: 9^9 pairs if each merge copied), then checked
    path.write_text(
        "defaults: &d {cadence: weekly, weekday: mon}\nsubscribers:\n  - {email: a@example.org, interests: [x], <<: *d}\n"
    )
    assert load_subscribers(path).subscribers[0].weekday == "mon"


def test_a_time_that_is_a_number_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"send_at.*in quotes, e\.g\. send_at: \"07:30\""):
        load_subscribers(_one(tmp_path, "    send_at: 730\n"))


def _bomb(levels: int, width: int = 9) -> str:
    """A billion-laughs ``email``: each level lists the previous one ``width`` times."""
    first = f"&a0 [{', '.join(['lol'] * width)}]"
    rest = [f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return f"subscribers:\n  - email: [{', '.join([first, *rest])}]\n    interests: [x]\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(_bomb(6), encoding="utf-8")  # 9^6 = 531,441 values from 400 bytes
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"expands to more than .* values \(YAML aliases\)") as caught:
        load_subscribers(path)
    assert time.perf_counter() - started < 2
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_check_refuses_a_billion_laughs_in_email_quickly_and_in_bounded_memory(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    bomb = _bomb(10)  # 9^10 = 3.5 billion values from 1.5 KB
    assert len(bomb) < 1600
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(bomb, encoding="utf-8")

    def one_gigabyte() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "check"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=one_gigabyte,  # a memory cap, set in the child only
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "YAML aliases" in proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr


def test_the_daemon_keeps_the_last_valid_list_when_a_bomb_is_saved(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(SUBSCRIBERS, encoding="utf-8")
    watched = SubscriberFile(path)
    before = watched.get()
    path.write_text(_bomb(10), encoding="utf-8")
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new stamp even within the same second
    started = time.perf_counter()
    assert watched.get() is before
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("extra", "warned"),  # the key is on line 4, or 5 after a cadence
    [
        ("    weekday: mon\n", "'weekday' has no effect with cadence daily"),
        ("    cadence: each-dump\n    send_at: '07:00'\n", "'send_at' has no effect with cadence each-dump"),
        ("    cadence: weekly\n    weekday: tue\n    send_at: '07:00'\n", None),
    ],
)
def test_a_setting_the_cadence_ignores_is_warned_about_with_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, extra: str, warned: str | None
) -> None:
    """`weekday: mon` on a daily subscriber (meant as weekly) passed `check` and did nothing."""
    path = _one(tmp_path, extra)
    found = _warnings(path, caplog)
    if warned is None:
        assert found == []
    else:
        (message,) = found
        line = 5 if "cadence" in extra else 4
        assert message.startswith(f"{path}:{line}: subscriber #1 (ada@example.org): ")
        assert message.endswith(warned)


def test_an_excluded_interest_is_warned_about_with_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`interests: [GraphSAGE]` with `exclude: [graphsage]` passed `check` and sent nothing, silently."""
    path = _one(tmp_path, "    exclude: [3D, graphsage]\n")
    (message,) = _warnings(path, caplog)
    assert message.startswith(f"{path}:4: subscriber #1 (ada@example.org): 'graphsage' is both an interest")


@pytest.mark.parametrize(
    ("interest", "warned"),
    [
        ("扩散模型", "has no English word"),
        ("🐍", "has no English word"),
        ("the", "is only common words"),
        ("I want papers that make large language models run faster on cheap hardware", "has 13 words"),
        (
            "quantization, pruning, Mamba",
            "holds a comma: each interest counts on its own; list them separately",
        ),
        ("diffusion; GANs", "holds a semicolon: each interest counts on its own"),
        (
            "papers on sparse attention, mixture of experts and long context models",
            "holds a comma",
        ),  # 11 words
        ("state space models", None),
        ("LoRA 🚀", None),
        ("OR", None),  # operations research: an acronym in capitals, not the word "or"
        ("IT", None),
        ("C++/CUDA kernels for LLaMA-2-70B inference on A100 GPUs", None),  # 8 words, 11 pieces
    ],
)
def test_an_interest_the_rankers_cannot_match_is_warned_about_with_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, interest: str, warned: str | None
) -> None:
    """Each of these passed `check` and brought an empty digest ("nothing relevant"), silently."""
    path = tmp_path / "subscribers.yaml"
    path.write_text(f"subscribers:\n  - email: ada@example.org\n    interests: ['{interest}']\n", "utf-8")
    found = _warnings(path, caplog)
    if warned is None:
        assert found == []
    else:
        (message,) = found
        assert message.startswith(f"{path}:3: subscriber #1 (ada@example.org): interest ")
        assert warned in message


def test_a_default_the_cadence_ignores_is_no_mistake(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "defaults: {weekday: mon}\nsubscribers:\n  - {email: a@example.org, interests: [x]}\n", "utf-8"
    )
    with caplog.at_level("WARNING", logger="newsletter.subscribers"):
        load_subscribers(path)
    assert caplog.records == []


def test_a_bad_default_is_named_once_at_its_own_line_and_a_bare_entry_at_its_line(tmp_path: Path) -> None:
    """A bad value under `defaults:` was reported once per subscriber, at each subscriber's line; a
    list entry that is not a mapping had no line at all."""
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "defaults:\n  max_items: lots\nsubscribers:\n"
        "  - email: a@example.org\n    interests: [x]\n"
        "  - email: b@example.org\n    interests: [y]\n"
        "  - c@example.org\n"
    )
    problems = read_subscribers(path)[1]
    assert [p.message for p in problems] == [
        f"{path}:2: defaults: field 'max_items': expected a whole number",
        f"{path}:8: subscriber #3: expected a mapping (email: ..., interests: [...])",
    ]


def _warnings(path: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """What loading ``path`` warns of."""
    with caplog.at_level("WARNING", logger="newsletter.subscribers"):
        load_subscribers(path)
    return [r.getMessage() for r in caplog.records]


def test_a_missing_subscribers_file_names_the_example_the_install_ships(tmp_path: Path) -> None:
    """The hint said "copy subscribers.example.yaml", a file only a clone has: a wheel's user could not find it."""
    example = Path(str(importlib.resources.files("newsletter") / "subscribers.example.yaml")).resolve()
    with pytest.raises(ConfigError) as caught:
        load_subscribers(tmp_path / "subscribers.yaml")
    assert f"copy the commented example {example} " in caught.value.hint
    assert len(load_subscribers(example).subscribers) == 4
