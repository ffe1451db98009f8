"""The ceiling benchmark's optimiser (benchmarks/ranking_ceiling.py): exact against brute force."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from ranking_ceiling import best_cuts, cuts, main


def brute_force(options, precision):
    feasible = (
        choice
        for choice in itertools.product(*options)
        if sum(c.good for c in choice) >= precision * sum(c.sent for c in choice) - 1e-9
    )
    return max(sum(c.found for c in choice) for choice in feasible)


def test_cuts_count_every_prefix():
    got = cuts(np.array([2, 0, 1, 2]))
    assert [(c.sent, c.good, c.found) for c in got] == [(0, 0, 0), (1, 1, 1), (2, 1, 1), (3, 2, 1), (4, 3, 2)]
    assert all(c.wanted == 2 for c in got)


def test_surplus_of_one_profile_pays_for_another():
    clean = cuts(np.array([2, 2, 2, 2, 2, 2, 2, 2, 2]))  # nine hits
    noisy = cuts(np.array([0, 2, 0, 0]))  # its one hit costs an unrelated paper first
    chosen = best_cuts([clean, noisy], 0.9)
    assert [c.sent for c in chosen] == [9, 2]  # 10 good of 11 sent: 0.909
    assert best_cuts([clean, noisy], 0.95)[1].sent == 0  # 10 of 11 is not enough


@pytest.mark.parametrize("seed", range(25))
def test_best_cuts_is_exact(seed):
    rng = np.random.default_rng(seed)
    options = [cuts(rng.choice([0, 1, 2], size=rng.integers(1, 7), p=[0.4, 0.2, 0.4])) for _ in range(3)]
    for precision in (0.5, 0.8, 0.9):
        chosen = best_cuts(options, precision)
        assert sum(c.good for c in chosen) >= precision * sum(c.sent for c in chosen) - 1e-9
        assert sum(c.found for c in chosen) == brute_force(options, precision)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "/nonexistent"], "--seeds /nonexistent: no such folder"),
        (["--judgments", "README.md"], "--judgments README.md: not a judgments file"),
        (["--grid", "nosuch=1"], "--grid nosuch=1: lexical has no parameter 'nosuch'"),
        (["--grid", "threshold=x"], "--grid threshold=x: values are numbers, true or false"),
        (["--reference", "/nonexistent"], "--reference /nonexistent: not a reference file"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(args, message, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    with pytest.raises(SystemExit) as exit_:
        main(["--ranker", "lexical", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_refused_reference_leaves_the_bundled_one_in_use(monkeypatch):
    from newsletter.rank.reference import reference_papers

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    with pytest.raises(SystemExit):
        main(["--ranker", "lexical", "--reference", "/nonexistent"])
    assert len(reference_papers()) == 256
