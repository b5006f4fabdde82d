"""Every reported benchmark number has an interval whose point is that number, and paired
comparisons of two answer sets are consistent with their metrics."""

import random

import pytest

from avisc_lib.benchmarks.report import interval_row, metrics_row, value_at
from avisc_lib.benchmarks.tasks import build_task
from avisc_lib.world.scenes import CATEGORIES

SPLITS = [("pope", "adversarial"), ("mme", "hallucination"), ("amber", "all"), ("amber", "existence")]


def answers(task, seed: int) -> dict[int, str]:
    rng = random.Random(seed)
    said = {}
    for q in task.questions:
        if q.group == "generative":  # some of its objects, and sometimes one it does not hold
            named = rng.sample(q.label.split(", "), rng.randint(1, len(q.label.split(", "))))
            said[q.id] = "I see a " + " and a ".join(named + rng.sample(CATEGORIES, rng.randint(0, 1))) + "."
        else:
            said[q.id] = rng.choice(["Yes", "No", q.label.capitalize(), q.label.capitalize()])
    return said


@pytest.mark.parametrize("benchmark,split", SPLITS)
def test_each_interval_is_centred_on_its_metric(benchmark, split):
    task = build_task(benchmark, "synthetic", split, limit=60)
    given = answers(task, 0)
    metrics = task.score_with_intervals(given)
    assert set(metrics["intervals"]) == set(task.measures)
    for path, found in metrics["intervals"].items():
        assert found["value"] == pytest.approx(value_at(metrics, path), abs=1e-9), path
        assert found["low"] - 1e-9 <= found["value"] <= found["high"] + 1e-9, path
        asked = split != "existence" or not any(block in path for block in ("attribute", "relation"))
        assert (found["low"] < found["high"]) == asked, path  # 60 mixed answers per group leave room for doubt
    row, intervals = metrics_row(benchmark, metrics), interval_row(benchmark, metrics)
    assert set(intervals) <= set(row) and intervals
    for column, interval in intervals.items():
        assert interval.value == pytest.approx(row[column]), column


@pytest.mark.parametrize("benchmark,split", SPLITS)
def test_a_paired_comparison_is_the_difference_of_the_metrics(benchmark, split):
    task = build_task(benchmark, "synthetic", split, limit=60)
    first, second = answers(task, 1), answers(task, 2)
    a, b = task.score(first), task.score(second)
    for path, found in task.compare(first, second).items():
        assert found.difference.value == pytest.approx(value_at(a, path) - value_at(b, path), abs=1e-9), path
        assert found.difference.low <= found.difference.value <= found.difference.high
    for path, found in task.compare(first, first).items():
        assert found.difference.value == 0 and not found.distinguishable, path


def test_pope_accuracy_uses_wilson_and_mcnemar():
    task = build_task("pope", "synthetic", "random", limit=120)
    right = {q.id: q.label for q in task.questions}
    flipped = {"yes": "no", "no": "yes"}
    wrong_some = {q.id: q.label if i % 4 else flipped[q.label] for i, q in enumerate(task.questions)}
    accuracy = task.compare(right, wrong_some)["accuracy"]
    assert accuracy.only_method == 30 and accuracy.only_baseline == 0
    assert accuracy.p_value == pytest.approx(2 * 0.5**30)
    assert accuracy.distinguishable
    interval = task.score_with_intervals(right)["intervals"]["accuracy"]
    assert interval["value"] == 1.0 and interval["high"] == 1.0 and 0.96 < interval["low"] < 0.98  # Wilson, 120 of 120


def test_comparing_different_questions_is_refused():
    short, longer = (build_task("pope", "synthetic", "random", limit=n) for n in (20, 30))
    with pytest.raises(ValueError, match="same units"):
        short.measures["accuracy"].compare(short.units(answers(short, 0)), longer.units(answers(longer, 0)))
