"""Metrics dictionaries as pandas tables."""

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
