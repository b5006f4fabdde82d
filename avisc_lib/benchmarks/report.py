"""Metrics dictionaries as tables: one row per run (:func:`metrics_row`, its intervals
:func:`interval_row`), or one frame per run (:func:`metrics_frame`)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce

import pandas as pd

from .statistics import Comparison, Interval


def metrics_frame(metrics: Mapping, name: str) -> pd.DataFrame:
    """One row per dictionary of numbers, named by its key (``name`` for the top level).

    POPE's flat metrics give one row; MME gives a row per subtask plus a ``name`` row of
    totals; AMBER a row per discriminative block, a ``generative`` row and the AMBER score.
    The ``intervals`` of a run's metrics are left out (see :func:`interval_row`).
    """
    rows: dict[str, dict] = {}

    def visit(block: Mapping, row: str) -> None:
        for key, value in block.items():
            if isinstance(value, Mapping):
                visit(value, key)
            else:
                rows.setdefault(row, {})[key] = value

    visit({k: v for k, v in metrics.items() if k != "intervals"}, name)
    return pd.DataFrame.from_dict(rows, orient="index")


def _columns(benchmark: str, metrics: Mapping) -> list[tuple[str, str, float]]:
    """``(column, path in metrics, scale)`` of a run's table row, in order."""
    if benchmark == "pope":
        rates = [(k, k, 100) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")]
        return rates + [(k, k, 1) for k in ("TP", "FP", "TN", "FN")]
    if benchmark == "mme":
        columns = []
        for t in metrics["subtasks"]:
            at = f"subtasks.{t}"
            columns += [(t, f"{at}.score", 1), (f"{t} acc", f"{at}.acc", 100), (f"{t} acc+", f"{at}.acc_plus", 100)]
        return columns + [(k, k, 1) for k in ("hallucination", "perception", "cognition") if metrics.get(k) is not None]
    if benchmark == "amber":  # the blocks the run scored
        columns = [(name, f"generative.{name.lower()}", 1) for name in ("CHAIR", "Cover", "Hal", "Cog")]
        columns += [(f"F1 {b}", f"discriminative.{b}.f1", 1) for b in ("existence", "attribute", "relation")]
        columns += [("accuracy", "discriminative.overall.accuracy", 1), ("F1", "discriminative.overall.f1", 1)]
        return [c for c in columns + [("AMBER", "amber_score", 1)] if c[1].split(".")[0] in metrics]
    raise ValueError(f"unknown benchmark {benchmark!r}; expected one of ('pope', 'mme', 'amber')")


def value_at(metrics: Mapping, path: str):
    """``metrics["a"]["b"]`` for the path ``"a.b"``."""
    return reduce(lambda block, key: block[key], path.split("."), metrics)


def metrics_row(benchmark: str, metrics: Mapping) -> dict:
    """One table row of a run's metrics (percentages for rates; MME scores out of 200 per subtask).

    POPE: accuracy, precision, recall, f1, yes_ratio and the TP/FP/TN/FN counts. MME: ``<subtask>``
    (score), ``<subtask> acc``, ``<subtask> acc+`` and the group totals (``hallucination``, and
    ``perception`` / ``cognition`` where their subtasks ran). AMBER: CHAIR, Cover, Hal, Cog, F1 per
    discriminative section, accuracy, F1 and the AMBER score (those of the blocks the run scored).
    """
    return {column: scale * value_at(metrics, path) for column, path, scale in _columns(benchmark, metrics)}


def interval_row(benchmark: str, metrics: Mapping) -> dict[str, Interval]:
    """The intervals of :func:`metrics_row`'s columns (those a run's ``metrics["intervals"]`` holds)."""
    found = metrics.get("intervals", {})
    return {
        column: Interval(**found[path]).scaled(scale)
        for column, path, scale in _columns(benchmark, metrics)
        if path in found
    }


def comparison_row(benchmark: str, metrics: Mapping, comparisons: Mapping[str, Comparison]) -> dict[str, Comparison]:
    """Paired comparisons (:meth:`.tasks.Task.compare`) under :func:`metrics_row`'s column names and
    units; ``metrics``: either run's metrics (they name the columns)."""
    return {
        column: comparisons[path].scaled(scale)
        for column, path, scale in _columns(benchmark, metrics)
        if path in comparisons
    }
