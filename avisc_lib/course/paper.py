"""The paper's result tables (POPE, MME hallucination subset, AMBER) for LLaVA-1.5 and InstructBLIP.

Source: arXiv 2405.17820v1 (May 2024), as published in the result images ``assets/pope.png``,
``assets/mme-hallucination.png`` and ``assets/amber.png`` of the authors' repository
github.com/sangminwoo/AvisC: added in commit 62d34c5 on 2024-05-29, the date its README gives
for "Paper online", and unchanged since (e.g. at 772eba4). The tables exist only as images; they
were transcribed by hand into ``paper_data/{pope,mme,amber}.csv``. Whether the later ACL 2025
Findings version changed any number was not checked.

* POPE: one sampled run; accuracy, precision, recall, F1 (percent) per dataset, split, method.
* MME: mean and std over seeds of each hallucination subtask's score and of their total.
* AMBER: mean and std over runs; the discriminative metrics pool its three blocks.

Methods are the paper's names (:data:`PAPER_METHODS`); "base" is plain sampling. As printed,
two cells disagree with their row: InstructBLIP POPE COCO random VCD (its precision and recall
imply F1 82.99 and accuracy 83.07) and InstructBLIP AMBER AvisC precision (72.60 repeats its
accuracy; its recall and F1 imply about 81.3). The files keep the printed values.

``paper_data/beyond.csv`` (:func:`paper_beyond`) holds the few numbers the attention methods after
AvisC (PAI, ClearSight, VAR, ONLY) report for LLaVA-1.5 that could be sourced, one number per row
with its source: ONLY's POPE COCO-random and MME hallucination numbers, from its paper (arXiv
2507.00898v1; the source names the table by content, as the paper's table numbering was not
re-checked when the citation was written), and the POPE-random accuracies of ClearSight's README
(its VAF row with that README's "Regular" and VCD rows). The READMEs of PAI (LALBJ/PAI at 9bbd8bd)
and VAR (MICV-yonsei/VisAttnSink at 98e62d6) print no numbers. Each paper ran its own protocol, so
rows of different sources are not comparable with each other; ``protocol="official"``
(:mod:`.benchmarks.protocols`) reruns ONLY's POPE and MME and ClearSight's POPE the way they ran.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

PAPER_MODELS = ("llava", "instructblip")  # LLaVA-1.5, InstructBLIP (the model kinds of .benchmarks.protocols)
PAPER_METHODS = {"base": "sample", "VCD": "vcd", "M3ID": "m3id", "AvisC": "avisc"}  # paper name -> ours
POPE_DATASETS = {"coco": "COCO", "aokvqa": "A-OKVQA", "gqa": "GQA"}  # our POPE dataset name -> the paper's


def _rows(benchmark: str, model: str) -> pd.DataFrame:
    """The rows of ``paper_data/<benchmark>.csv`` for ``model``, without the model column."""
    if model not in PAPER_MODELS:
        raise ValueError(f"no paper numbers for model {model!r}; expected one of {PAPER_MODELS}")
    with resources.files(__package__).joinpath("paper_data", f"{benchmark}.csv").open() as f:
        table = pd.read_csv(f)
    return table[table.model == model].drop(columns="model").reset_index(drop=True)


def paper_pope(dataset: str | None = "COCO", model: str = "llava") -> pd.DataFrame:
    """The paper's POPE table (percent): one row per dataset, split and method, in the paper's order.

    ``dataset``: "COCO", "A-OKVQA", "GQA", or None for all three. ``model``: "llava"
    (LLaVA-1.5) or "instructblip". Columns: dataset, split, method, accuracy, precision, recall, f1.
    """
    frame = _rows("pope", model)
    if dataset is None:
        return frame
    if dataset not in set(frame.dataset):
        raise ValueError(f"unknown POPE dataset {dataset!r}; expected COCO, A-OKVQA, GQA or None")
    return frame[frame.dataset == dataset].reset_index(drop=True)


def paper_mme(model: str = "llava") -> pd.DataFrame:
    """The paper's MME hallucination subset for ``model``: method rows, ``<subtask>`` and ``<subtask>_std`` columns."""
    return _rows("mme", model).set_index("method")


def paper_amber(model: str = "llava") -> pd.DataFrame:
    """The paper's AMBER column for ``model``: metric rows, method (and ``<method>_std``) columns."""
    return _rows("amber", model).set_index("metric")


def paper_beyond(model: str = "llava") -> pd.DataFrame:
    """Reported numbers of the attention methods after AvisC for ``model``, one per row: paper_method,
    method (ours), benchmark, dataset, split, metric, value (percent; MME: score) and source."""
    return _rows("beyond", model)


def claimed_gain(model: str, dataset: str, split: str, method: str = "avisc") -> float | None:
    """The paper's POPE accuracy of ``method`` minus its base (points) for ``model`` ("llava",
    "instructblip") on our ``dataset`` ("coco", "aokvqa", "gqa") and ``split``; None where the
    paper has no such cell (another model, the synthetic data, a control)."""
    paper_name = {ours: name for name, ours in PAPER_METHODS.items()}.get(method)
    if model not in PAPER_MODELS or dataset not in POPE_DATASETS or paper_name in (None, "base"):
        return None
    table = paper_pope(POPE_DATASETS[dataset], model).set_index(["split", "method"]).accuracy
    return float(table[split, paper_name] - table[split, "base"])


def largest_gain_split(model: str) -> str:
    """The COCO split on which the paper claims AvisC's largest POPE gain for ``model`` (adversarial
    for a model the paper does not cover)."""
    if model not in PAPER_MODELS:
        return "adversarial"
    gains = {split: claimed_gain(model, "coco", split) for split in ("random", "popular", "adversarial")}
    return max(gains, key=gains.get)
