"""The harness's leave-one-profile-out choice (benchmarks/ranking.py): each run's precision target on its own."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from ranking import Counts, Result, goal, lopo


def test_one_runs_precision_does_not_pay_for_anothers():
    clean_terse = Counts(sent=40, good=40, found=30, wanted=40)
    loose = {"full": Counts(sent=20, good=16, found=16, wanted=16), "terse": clean_terse}
    tight = {"full": Counts(sent=15, good=14, found=14, wanted=16), "terse": clean_terse}
    pooled_loose, pooled_tight = sum(loose.values(), Counts()), sum(tight.values(), Counts())
    assert min(pooled_loose.precision, pooled_tight.precision) > 0.90  # pooled, both meet 0.90 ...
    assert pooled_loose.recall > pooled_tight.recall  # ... so a pooled objective would pick loose
    assert goal(tight) > goal(loose)  # but loose's full digests are at precision 0.80


def test_recall_decides_once_every_run_meets_its_target():
    fewer = {"full": Counts(10, 10, 8, 16), "terse": Counts(10, 9, 8, 16)}
    more = {"full": Counts(12, 11, 10, 16), "terse": Counts(10, 9, 8, 16)}
    assert goal(more) > goal(fewer)


def test_lopo_scores_each_profile_with_the_choice_of_the_others():
    def result(**per: Counts) -> dict[str, Result]:
        return {"full": Result(per, {}), "terse": Result(per, {})}

    good, noisy = Counts(5, 5, 5, 5), Counts(10, 5, 5, 5)
    results = {
        "strict": result(a=good, b=good, c=Counts(1, 1, 1, 5)),
        "loose": result(a=noisy, b=noisy, c=good),
    }
    scored, chosen = lopo(results, ["a", "b", "c"])
    assert chosen == {"a": "strict", "b": "strict", "c": "strict"}  # c alone cannot pick its own best
    assert scored["full"].per["c"] == Counts(1, 1, 1, 5)
