"""Can a run answer the question it asks? The smallest paired gain a plan detects, beside the paper's claim.

A method and its baseline answer the same questions, so what decides whether a gain is detectable
is how often the two *disagree* (the discordance: the share of questions only one of them gets
right) and how many questions there are (:func:`avisc_lib.benchmarks.statistics.detectable_difference`,
McNemar's test, 5 % two-sided, 80 % power). Before the runs the discordance is an assumption
(:data:`ASSUMED_DISCORDANCE`); after them it is measured (:func:`measured_discordance`).

The paper's claimed gain (POPE accuracy, AvisC minus its "base", plain sampling) varies by model
and split: for LLaVA-1.5 on COCO from +0.43 points (adversarial) to +3.46 (random); for
InstructBLIP up to +8.44 (adversarial). The ``power`` design
(:func:`avisc_lib.course.experiments.power_grid`) puts its questions on the COCO split of the
largest claim (:func:`avisc_lib.course.paper.largest_gain_split`), where a session has a chance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from ..benchmarks.statistics import detectable_difference
from .experiments import Experiment
from .paper import claimed_gain

# Stated assumption, used until a pilot measures it: two decoders of one model disagree on about
# one POPE question in ten (on the tiny model, argmax, AvisC and greedy disagree on 2-6 %; sampled
# LLaVA-1.5 answers vary more). Pass a measured rate to replace it.
ASSUMED_DISCORDANCE = 0.10
POWER = 0.8
LEVEL = 0.95
BASES = ("sample", "greedy")  # the labels the paper's "base" stands beside


def measured_discordance(differences: pd.DataFrame, column: str = "accuracy") -> dict[tuple[str, str, str], float]:
    """Share of questions on which exactly one of the pair is right, per ``(split, method, baseline)``
    row of :func:`avisc_lib.course.experiments.differences` (a pilot's, or a finished run's)."""
    rates = {}
    for _, row in differences.iterrows():
        found = row[column]
        rates[row.split, row.method, row.baseline] = (found.only_method + found.only_baseline) / row.questions
    return rates


def detectable_table(
    pairs: Iterable[tuple[Experiment, Experiment]],
    model: str,
    discordance: float | Mapping[tuple[str, str, str], float] = ASSUMED_DISCORDANCE,
) -> pd.DataFrame:
    """One row per ``(method spec, baseline spec)``: questions, the discordance used, the smallest
    accuracy gain (points) detectable with 80 % power, the paper's claimed gain for that cell and
    whether the plan can resolve it. ``discordance``: one rate, or measured rates keyed as
    :func:`measured_discordance` gives them (the assumption fills in missing keys)."""
    rows = []
    for method, baseline in pairs:
        n = method.cost().questions
        key = (method.split, method.label, baseline.label)
        rate = discordance.get(key, ASSUMED_DISCORDANCE) if isinstance(discordance, Mapping) else discordance
        smallest = 100 * detectable_difference(n, rate, LEVEL, POWER) if rate > 0 else float("inf")
        claim = claimed_gain(model, method.dataset, method.split, method.method) if baseline.label in BASES else None
        rows.append(
            {
                "dataset": method.dataset,
                "split": method.split,
                "method": method.label,
                "baseline": baseline.label,
                "questions": n,
                "discordance": rate,
                "detectable gain (pts)": round(smallest, 2),
                "paper's gain (pts)": claim,
                "resolvable": None if claim is None else claim >= smallest,
            }
        )
    return pd.DataFrame(rows)
