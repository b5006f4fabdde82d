"""Metrics dictionaries as tables: one row per run (:func:`metrics_row`), or one frame per run
(:func:`metrics_frame`)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def metrics_frame(metrics: Mapping, name: str) -> pd.DataFrame:
    """One row per dictionary of numbers, named by its key (``name`` for the top level).

    POPE's flat metrics give one row; MME gives a row per subtask plus a ``name`` row of
    totals; AMBER a row per discriminative block, a ``generative`` row and the AMBER score.
    """
    rows: dict[str, dict] = {}

    def visit(block: Mapping, row: str) -> None:
        for key, value in block.items():
            if isinstance(value, Mapping):
                visit(value, key)
            else:
                rows.setdefault(row, {})[key] = value

    visit(metrics, name)
    return pd.DataFrame.from_dict(rows, orient="index")


def metrics_row(benchmark: str, metrics: Mapping) -> dict:
    """One table row of a run's metrics (percentages for rates; MME scores out of 200 per subtask).

    POPE: accuracy, precision, recall, f1, yes_ratio and the TP/FP/TN/FN counts. MME: ``<subtask>``
    (score), ``<subtask> acc``, ``<subtask> acc+`` and the group totals (``hallucination``, and
    ``perception`` / ``cognition`` where their subtasks ran). AMBER: CHAIR, Cover, Hal, Cog, F1 per
    discriminative section, accuracy, F1 and the AMBER score.
    """
    if benchmark == "pope":
        rates = ("accuracy", "precision", "recall", "f1", "yes_ratio")
        return {**{k: 100 * metrics[k] for k in rates}, **{k: metrics[k] for k in ("TP", "FP", "TN", "FN")}}
    if benchmark == "mme":
        row = {}
        for subtask, m in metrics["subtasks"].items():
            row |= {subtask: m["score"], f"{subtask} acc": 100 * m["acc"], f"{subtask} acc+": 100 * m["acc_plus"]}
        totals = ("hallucination", "perception", "cognition")
        return row | {k: metrics[k] for k in totals if metrics.get(k) is not None}
    if benchmark == "amber":
        g, d = metrics["generative"], metrics["discriminative"]
        row = {"CHAIR": g["chair"], "Cover": g["cover"], "Hal": g["hal"], "Cog": g["cog"]}
        row |= {f"F1 {block}": d[block]["f1"] for block in ("existence", "attribute", "relation")}
        return row | {"accuracy": d["overall"]["accuracy"], "F1": d["overall"]["f1"], "AMBER": metrics["amber_score"]}
    raise ValueError(f"unknown benchmark {benchmark!r}; expected one of ('pope', 'mme', 'amber')")
