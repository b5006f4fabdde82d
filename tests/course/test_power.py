"""The power plan: the paper's claimed gains, the detectable gain of a plan, measured discordance."""

import math
from dataclasses import replace

import pandas as pd
import pytest

from avisc_lib.benchmarks.statistics import Comparison, Interval, detectable_difference
from avisc_lib.course import experiments, power
from avisc_lib.course.paper import claimed_gain, largest_gain_split


def test_claimed_gains_come_from_the_papers_pope_table():
    assert claimed_gain("llava", "coco", "adversarial") == pytest.approx(77.53 - 77.10)
    assert claimed_gain("instructblip", "coco", "adversarial") == pytest.approx(81.57 - 73.13)
    assert claimed_gain("llava", "synthetic", "adversarial") is None  # no paper cell
    assert claimed_gain("llava", "coco", "random", "random_mask") is None  # not in the paper
    assert largest_gain_split("llava") == "random" and largest_gain_split("instructblip") == "adversarial"
    assert largest_gain_split("tiny") == "adversarial"


def test_the_plan_table_solves_for_the_detectable_gain_and_compares_it_with_the_claim():
    specs = experiments.grid("04", "coco", 1000, design="power", model="llava")
    pairs = experiments.against(specs, "sample", ["avisc"]) + experiments.avisc_against_controls(specs)
    table = power.detectable_table(pairs, "llava")
    assert list(table.method) == ["avisc", "avisc"] and list(table.baseline) == ["sample", "random_mask"]
    assert (table.questions == 1000).all() and (table.discordance == power.ASSUMED_DISCORDANCE).all()
    expected = 100 * detectable_difference(1000, power.ASSUMED_DISCORDANCE)
    assert table["detectable gain (pts)"].tolist() == [round(expected, 2)] * 2
    assert table.loc[0, "paper's gain (pts)"] == pytest.approx(87.93 - 84.47)
    assert bool(table.loc[0, "resolvable"]) is (expected <= 87.93 - 84.47)
    assert pd.isna(table.loc[1, "paper's gain (pts)"]) and pd.isna(table.loc[1, "resolvable"])  # no claim
    small = power.detectable_table([(replace(p[0], limit=20), replace(p[1], limit=20)) for p in pairs], "llava")
    assert (small["detectable gain (pts)"] == math.inf).all() and not small.loc[0, "resolvable"]


def test_measured_discordance_feeds_the_table():
    specs = experiments.grid("04", "synthetic", 100, design="power")
    found = Comparison(Interval(0.02, -0.01, 0.05), 0.3, 7, 3)
    differences = pd.DataFrame(
        [{"split": "adversarial", "method": "avisc", "baseline": "greedy", "questions": 100, "accuracy": found}]
    )
    rates = power.measured_discordance(differences)
    assert rates == {("adversarial", "avisc", "greedy"): 0.1}
    table = power.detectable_table(experiments.against(specs, "greedy", ["avisc"]), "tiny", rates)
    assert table.loc[0, "discordance"] == 0.1


def test_pairing_refuses_two_baselines_for_the_same_questions():
    specs = experiments.grid("04", "synthetic", 100)  # the sweep holds more "avisc" runs on the same questions
    with pytest.raises(ValueError, match="two 'avisc' runs"):
        experiments.avisc_against_controls(specs)
    tested = [s for s in specs if s.group in (experiments.METHODS, experiments.CONTROLS)]
    assert len(experiments.avisc_against_controls(tested)) == 6


def test_teaching_and_readme_quote_the_power_plan_the_cost_model_gives():
    from pathlib import Path

    from avisc_lib.course import profiles

    root = Path(__file__).resolve().parents[2]
    power_plan = profiles.session_plans("04", design="power").loc["llava", "T4"]
    breadth = profiles.session_plans("04").loc["llava", "T4"]
    teaching, readme = (" ".join((root / name).read_text().split()) for name in ("TEACHING.md", "README.md"))
    questions, minutes = power_plan["questions per split"], power_plan["minutes"]
    assert f"({questions:,} on a T4 in 4-bit, by the cost model about {minutes} minutes)" in teaching
    assert f"at {breadth['questions per split']} questions each on a T4" in teaching
    sessions = (breadth["full run, sessions"], power_plan["full run, sessions"])
    assert "about {} T4 sessions for LLaVA-1.5, of its power design {}".format(*sessions) in readme
