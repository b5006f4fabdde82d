"""Small views for the evaluation notebooks (04 POPE, 05 MME, 06 AMBER).

* :func:`mark_caption` / :func:`phrase_pattern`: a caption as markdown with the objects that
  are in the ground truth in **bold** and the hallucinated ones struck through.
* :func:`mean_std`: "mean ± std" cells over seeds, as the paper reports MME and AMBER.
* :func:`interval_cells`: "84.7 [80.1, 88.6]" cells from a run table's ``<column> low``/``high``;
  :func:`difference_cells`: "+2.3 [+0.4, +4.2] *" cells of paired differences (``*``: the 95 %
  interval excludes 0, the difference is distinguishable from none); :func:`verdicts`: the same
  as sentences, for the notebooks' "measured here" cells.
* :func:`pope_beside_paper`: our POPE rows of one dataset beside the paper's rows of the same
  dataset (COCO, A-OKVQA, GQA), split by split, with each method's difference to the baseline.
  It takes ``model="llava"`` (LLaVA-1.5, default) or ``"instructblip"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

from ..benchmarks.statistics import Interval
from ..world.scenes import COLOURS, SHAPES
from .paper import PAPER_METHODS, POPE_DATASETS, paper_pope


def pope_beside_paper(
    ours: pd.DataFrame,
    dataset: str,
    *,
    model: str = "llava",
    base: str = "sample",
    paper_dataset: str | None = None,
    metrics: Sequence[str] = ("accuracy", "f1"),
) -> pd.DataFrame:
    """Our POPE rows of one ``dataset`` beside the paper's rows of the same dataset, split by split.

    ``ours``: columns ``dataset``, ``split``, ``method`` and ``metrics`` (percent), one row per
    dataset, split and method (average seeds first). ``dataset``:
    ours ("coco", "aokvqa", "gqa"); the paper's counterpart is :data:`POPE_DATASETS`, or
    ``paper_dataset`` ("COCO", "A-OKVQA", "GQA") for a dataset the paper does not have (the
    synthetic one). ``base``: our method the paper's "base" (plain sampling) stands beside,
    "greedy" for argmax runs. Returns rows ``(split, method)`` in our order, columns
    ``<metric>``, ``<metric> (paper)``, then ``Δ ...`` of each: the difference to ``base`` in
    the same split.
    """
    paper_name = paper_dataset or POPE_DATASETS.get(dataset)
    if paper_name is None:
        raise ValueError(
            f"the paper has no POPE dataset {dataset!r}; pass paper_dataset, one of {tuple(POPE_DATASETS.values())}"
        )
    mine = ours[ours.dataset == dataset]
    if base not in set(mine.method):
        raise ValueError(
            f"no {base!r} rows for dataset {dataset!r} in ours; base must be one of {sorted(set(mine.method))}"
        )
    keys, metrics = ["split", "method"], list(metrics)
    paper = paper_pope(paper_name, model).assign(method=lambda f: f.method.map({**PAPER_METHODS, "base": base}))
    side = mine[keys + metrics].merge(paper[keys + metrics], on=keys, how="left", suffixes=("", " (paper)"))
    side = side.set_index(keys)
    gain = side.sub(side.xs(base, level="method"), level="split")
    return side.join(gain.add_prefix("Δ "))


def interval_cells(frame: pd.DataFrame, columns: Sequence[str], digits: int = 1) -> pd.DataFrame:
    """``frame[columns]`` as "value [low, high]" text, from the ``<column> low``/``<column> high``
    bounds of :func:`avisc_lib.course.experiments.table` (a column without them stays a number)."""
    cells = pd.DataFrame(index=frame.index)
    for c in columns:
        if f"{c} low" in frame:
            bounds = zip(frame[c], frame[f"{c} low"], frame[f"{c} high"])
            cells[c] = [Interval(v, lo, hi).format(digits) for v, lo, hi in bounds]
        else:
            cells[c] = frame[c].round(digits)
    return cells


def difference_cells(frame: pd.DataFrame, columns: Sequence[str], digits: int = 1) -> pd.DataFrame:
    """:func:`avisc_lib.course.experiments.differences` as text: who is compared, then each of
    ``columns`` as "+2.3 [+0.4, +4.2] *" and McNemar's p-value with 3 significant digits."""
    cells = frame[["dataset", "split", "method", "baseline", "questions"]].copy()
    for c in columns:
        cells[f"Δ {c}"] = [comparison.cell(digits) for comparison in frame[c]]
    if "McNemar p" in frame and frame["McNemar p"].notna().any():
        cells["McNemar p"] = [f"{p:.3g}" for p in frame["McNemar p"]]
    return cells


def verdicts(frame: pd.DataFrame, column: str, digits: int = 1) -> list[str]:
    """One line per row of :func:`avisc_lib.course.experiments.differences`: "adversarial, avisc −
    greedy, accuracy: +0.7 [-2.0, +3.4], not distinguishable (McNemar p = 0.61)" (the split and
    dataset only where the rows have several)."""
    lines = []
    for _, row in frame.iterrows():
        comparison = row[column]
        p = "" if comparison.p_value is None else f" (McNemar p = {comparison.p_value:.2g})"
        where = f"{row.dataset} {row.split}, " if frame.dataset.nunique() > 1 else f"{row.split}, "
        where = "" if frame.split.nunique() == 1 and frame.dataset.nunique() == 1 else where
        lines.append(f"{where}{row.method} − {row.baseline}, {column}: {comparison.verdict(digits)}{p}")
    return lines


def mean_std(frame: pd.DataFrame, by: str | Sequence[str], columns: Sequence[str], digits: int = 2) -> pd.DataFrame:
    """``"mean ± std"`` strings of ``columns`` per group ``by`` (std with ddof=1, 0 for one value)."""
    stats = frame.groupby(by, sort=False)[list(columns)].agg(["mean", "std"]).fillna(0.0)
    out = pd.DataFrame(index=stats.index)
    for column in columns:
        mean, std = stats[(column, "mean")], stats[(column, "std")]
        out[column] = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean, std)]
    return out


# --------------------------------------------------------------------------- captions


def phrase_pattern(words: Iterable[str] | None = None) -> re.Pattern:
    """A regex for object mentions: the world's "colour shape" phrases, or any of ``words`` (plural s allowed)."""
    if words is None:
        return re.compile(rf"\b(?:{'|'.join(COLOURS)})\s+(?:{'|'.join(SHAPES)})s?\b", re.IGNORECASE)
    alternatives = sorted({re.escape(w) for w in words}, key=len, reverse=True)
    if not alternatives:
        raise ValueError("phrase_pattern needs at least one word")
    return re.compile(rf"\b(?:{'|'.join(alternatives)})(?:s|es)?\b", re.IGNORECASE)


def _canonical(mention: str) -> str:
    words = mention.lower().split()
    last = words[-1]
    if last.endswith("es") and last[:-2] in SHAPES:
        last = last[:-2]
    elif last.endswith("s") and len(last) > 2:
        last = last[:-1]
    return " ".join([*words[:-1], last])


def mark_caption(text: str, truth: Iterable[str], pattern: re.Pattern | None = None) -> tuple[str, list[str]]:
    """``(markdown, hallucinated)``: mentions in ``truth`` in **bold**, the others ~~struck~~ and listed.

    A mention counts as true when its lower-cased, singular form is in ``truth``.
    """
    pattern = pattern or phrase_pattern()
    present = {t.lower() for t in truth}
    hallucinated: list[str] = []

    def mark(match: re.Match) -> str:
        mention = match.group(0)
        if _canonical(mention) in present or mention.lower() in present:
            return f"**{mention}**"
        hallucinated.append(_canonical(mention))
        return f"~~{mention}~~"

    return pattern.sub(mark, text), hallucinated
