"""Small views for the evaluation notebooks (04 POPE, 05 MME, 06 AMBER).

* :func:`paper_pope`, :func:`paper_mme`, :func:`paper_amber`: the paper's LLaVA-1.5 numbers
  (its POPE, MME-hallucination and AMBER tables, arXiv 2405.17820, transcribed from the result
  images in the authors' repository) as DataFrames, to put beside ours.
* :func:`first_token_controls`: AvisC's contrast on the first answer token against honest
  controls, the same contrast with a random same-size mask or with all image-token embeddings
  zeroed after the projector as the "other" branch.
* :func:`mark_caption` / :func:`phrase_pattern`: a caption as markdown with the objects that
  are in the ground truth in **bold** and the hallucinated ones struck through.
* :func:`mean_std`: "mean ± std" cells over seeds, as the paper reports MME and AMBER.
* :func:`pope_beside_paper`: our POPE rows of one dataset beside the paper's rows of the same
  dataset (COCO, A-OKVQA, GQA), split by split, with each method's difference to the baseline.
  It and the ``paper_*`` tables take ``model="llava"`` (LLaVA-1.5, default) or ``"instructblip"``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from transformers import PreTrainedModel, ProcessorMixin

from .analysis import ablation_logits
from .attention import image_attention
from .blind import select_blind_tokens
from .decoding import contrast_logits, plausibility_cut
from .inputs import encode
from .world.scenes import COLOURS, SHAPES

PAPER_METHODS = {"base": "sample", "VCD": "vcd", "M3ID": "m3id", "AvisC": "avisc"}

# POPE, LLaVA-1.5, multinomial sampling, one run (the paper's POPE table): accuracy precision recall F1.
_POPE = """
COCO random 84.47 83.35 86.13 84.72 | 84.80 83.00 87.53 85.20 | 86.00 85.11 87.27 86.18 | 87.93 88.24 87.53 87.88
COCO popular 82.23 79.72 86.47 82.95 | 82.27 79.19 87.53 83.15 | 82.83 79.62 88.27 83.72 | 84.33 81.71 88.47 84.96
COCO adversarial 77.10 72.57 87.13 79.19 | 76.10 71.50 86.80 78.41 | 77.70 73.23 87.33 79.66 | 77.53 72.82 87.87 79.64
A-OKVQA random 82.73 77.43 92.40 84.26 | 81.30 75.45 92.80 83.23 | 83.57 77.86 93.80 85.09 | 84.60 79.29 93.67 85.88
A-OKVQA popular 76.10 69.86 91.80 79.34 | 75.43 68.58 93.87 79.26 | 76.80 70.20 93.13 80.06 | 78.83 72.10 94.07 81.63
A-OKVQA adversarial 67.90 62.11 91.80 74.09 | 67.43 61.50 93.20 74.11 | 68.10 61.99 93.60 74.58 | 68.97 62.70 93.67 75.11
GQA random 82.40 77.03 92.33 83.99 | 82.27 75.85 94.67 84.22 | 82.83 76.64 94.47 84.62 | 85.00 78.81 95.73 86.45
GQA popular 72.03 65.57 92.80 76.84 | 71.77 64.90 94.80 77.05 | 72.83 66.04 94.00 77.58 | 74.80 67.46 95.80 79.17
GQA adversarial 68.73 62.54 93.40 74.92 | 68.27 62.00 94.40 74.84 | 68.13 61.88 94.47 74.78 | 69.20 62.61 95.33 75.58
"""

# MME hallucination subset, LLaVA-1.5, mean (std) over seeds (the paper's MME-hallucination table).
_MME = """method,existence,existence_std,count,count_std,position,position_std,color,color_std,total,total_std
base,173.57,8.16,110.00,15.82,100.47,18.78,125.24,15.91,509.28,30.57
VCD,172.14,8.09,117.14,8.76,103.33,20.56,119.52,8.58,512.14,31.82
M3ID,178.33,6.83,107.22,14.78,96.39,5.52,127.50,8.28,509.44,22.52
AvisC,189.29,1.82,104.76,11.66,106.19,13.93,127.86,9.13,528.09,24.70
"""

# AMBER, LLaVA-1.5 column, mean (std) over runs (the paper's AMBER table); discriminative blocks pooled.
_AMBER = """metric,base,base_std,VCD,VCD_std,M3ID,M3ID_std,AvisC,AvisC_std
chair,7.95,0.64,6.70,0.42,6.00,0.14,6.25,0.07
cover,44.45,0.21,46.50,0.28,48.90,0.28,46.55,0.64
hal,31.00,2.83,27.80,1.70,26.00,0.28,25.60,1.70
cog,2.15,0.35,1.95,0.35,1.45,0.07,2.00,0.04
accuracy,67.00,0.71,67.30,1.41,67.25,0.21,70.70,0.57
precision,85.45,0.49,86.10,1.70,86.50,0.57,85.45,0.21
recall,60.95,1.20,60.55,1.34,60.05,0.07,67.55,0.92
f1,71.10,0.99,71.10,1.56,70.90,0.14,75.45,0.64
amber_score,81.58,0.18,82.20,0.99,82.45,0.14,84.60,0.35
"""

# The same three tables, InstructBLIP columns. As printed, two cells disagree with their row:
# POPE COCO random VCD (precision and recall imply F1 82.99, accuracy 83.07) and AMBER AvisC
# precision (72.60 repeats its accuracy; recall and F1 imply about 81.3).
_POPE_INSTRUCTBLIP = """
COCO random 82.27 82.84 81.40 82.11 | 83.37 83.39 82.60 83.24 | 84.37 84.62 84.00 84.31 | 88.73 93.88 82.87 88.03
COCO popular 77.77 74.81 83.73 79.02 | 78.00 75.12 83.73 79.19 | 77.30 74.10 83.93 78.71 | 83.90 81.33 88.00 84.53
COCO adversarial 73.13 69.41 82.60 75.46 | 75.87 72.85 82.47 77.36 | 76.03 72.47 83.93 77.79 | 81.57 80.37 83.53 81.92
A-OKVQA random 81.00 77.71 86.93 82.06 | 81.73 78.67 87.07 82.66 | 82.33 77.81 90.47 83.66 | 88.47 87.66 89.53 88.59
A-OKVQA popular 75.00 70.14 87.07 77.69 | 75.33 70.52 87.07 77.92 | 75.60 70.40 88.33 78.36 | 81.77 77.82 88.87 82.98
A-OKVQA adversarial 68.80 63.57 88.07 73.84 | 69.70 64.54 87.47 74.27 | 69.57 64.21 88.40 74.39 | 72.53 67.12 88.33 76.28
GQA random 80.00 77.08 85.40 81.02 | 81.73 79.35 85.80 82.45 | 80.57 76.77 87.67 81.85 | 86.47 85.89 87.27 86.57
GQA popular 73.53 68.80 86.13 76.49 | 74.10 69.45 86.07 76.87 | 74.57 69.45 87.83 77.53 | 78.00 73.68 87.13 79.84
GQA adversarial 68.00 63.49 84.73 72.59 | 70.27 65.43 85.93 74.29 | 68.90 64.06 86.13 73.47 | 73.07 67.80 87.87 76.54
"""

_MME_INSTRUCTBLIP = """method,existence,existence_std,count,count_std,position,position_std,color,color_std,total,total_std
base,170.19,11.12,89.52,11.04,67.62,14.04,114.76,9.60,442.09,31.51
VCD,172.62,8.92,98.33,15.99,71.90,13.42,117.14,10.70,459.99,16.56
M3ID,173.89,10.52,89.72,13.44,72.72,14.77,110.56,7.20,446.88,28.54
AvisC,184.76,5.56,82.85,12.16,74.76,6.19,131.43,4.76,473.80,19.67
"""

_AMBER_INSTRUCTBLIP = """metric,base,base_std,VCD,VCD_std,M3ID,M3ID_std,AvisC,AvisC_std
chair,8.40,0.57,7.60,0.42,6.85,0.07,6.70,0.28
cover,46.40,1.27,47.65,0.35,47.20,0.71,46.65,1.48
hal,31.10,0.64,29.90,0.99,27.50,0.71,28.00,0.28
cog,2.60,0.05,2.20,0.14,2.20,0.14,2.55,0.35
accuracy,68.20,0.14,69.65,0.35,69.05,0.35,72.60,0.42
precision,79.00,0.14,80.70,0.42,79.70,0.28,72.60,0.42
recall,70.70,0.42,71.60,0.42,71.25,0.35,76.10,0.05
f1,74.60,0.14,75.90,0.42,75.25,0.07,78.60,0.28
amber_score,83.10,0.35,84.15,0.05,84.20,0.07,85.95,0.05
"""

PAPER_MODELS = ("llava", "instructblip")  # LLaVA-1.5, InstructBLIP (the model kinds of .benchmarks.protocols)
_TABLES = {
    "llava": {"pope": _POPE, "mme": _MME, "amber": _AMBER},
    "instructblip": {"pope": _POPE_INSTRUCTBLIP, "mme": _MME_INSTRUCTBLIP, "amber": _AMBER_INSTRUCTBLIP},
}
# Our POPE dataset names -> the paper's.
POPE_DATASETS = {"coco": "COCO", "aokvqa": "A-OKVQA", "gqa": "GQA"}


def _table(model: str, benchmark: str) -> str:
    if model not in _TABLES:
        raise ValueError(f"no paper numbers for model {model!r}; expected one of {PAPER_MODELS}")
    return _TABLES[model][benchmark]


def paper_pope(dataset: str | None = "COCO", model: str = "llava") -> pd.DataFrame:
    """The paper's POPE table (percent): one row per dataset, split and method.

    ``dataset``: "COCO", "A-OKVQA", "GQA", or None for all three. ``model``: "llava"
    (LLaVA-1.5) or "instructblip". "base" is plain sampling.
    """
    rows = []
    for line in _table(model, "pope").strip().splitlines():
        name, split, rest = line.split(" ", 2)
        for method, cell in zip(PAPER_METHODS, rest.split("|")):
            acc, prec, rec, f1 = map(float, cell.split())
            rows.append({"dataset": name, "split": split, "method": method, "accuracy": acc,
                         "precision": prec, "recall": rec, "f1": f1})
    frame = pd.DataFrame(rows)
    if dataset is not None:
        if dataset not in set(frame.dataset):
            raise ValueError(f"unknown POPE dataset {dataset!r}; expected COCO, A-OKVQA, GQA or None")
        frame = frame[frame.dataset == dataset].reset_index(drop=True)
    return frame


def paper_mme(model: str = "llava") -> pd.DataFrame:
    """The paper's MME hallucination subset (``model`` "llava" or "instructblip"): mean and std per subtask."""
    return pd.read_csv(io.StringIO(_table(model, "mme"))).set_index("method")


def paper_amber(model: str = "llava") -> pd.DataFrame:
    """The paper's AMBER column for ``model``: metric rows, method (and ``<method>_std``) columns."""
    return pd.read_csv(io.StringIO(_table(model, "amber"))).set_index("metric")


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
        raise ValueError(f"the paper has no POPE dataset {dataset!r}; pass paper_dataset, one of "
                         f"{tuple(POPE_DATASETS.values())}")
    mine = ours[ours.dataset == dataset]
    if base not in set(mine.method):
        raise ValueError(f"no {base!r} rows for dataset {dataset!r} in ours; base must be one of "
                         f"{sorted(set(mine.method))}")
    keys, metrics = ["split", "method"], list(metrics)
    paper = paper_pope(paper_name, model).assign(method=lambda f: f.method.map({**PAPER_METHODS, "base": base}))
    side = mine[keys + metrics].merge(paper[keys + metrics], on=keys, how="left", suffixes=("", " (paper)"))
    side = side.set_index(keys)
    gain = side.sub(side.xs(base, level="method"), level="split")
    return side.join(gain.add_prefix("Δ "))


def mean_std(frame: pd.DataFrame, by: str | Sequence[str], columns: Sequence[str], digits: int = 2) -> pd.DataFrame:
    """``"mean ± std"`` strings of ``columns`` per group ``by`` (std with ddof=1, 0 for one value)."""
    stats = frame.groupby(by, sort=False)[list(columns)].agg(["mean", "std"]).fillna(0.0)
    out = pd.DataFrame(index=stats.index)
    for column in columns:
        mean, std = stats[(column, "mean")], stats[(column, "std")]
        out[column] = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean, std)]
    return out


# --------------------------------------------------------------------------- runs


# --------------------------------------------------------------------------- controls

CONTROLS = {
    "AvisC branch (blind tokens only)": "keep blind only",
    "random tokens only (same size)": "keep random only (same size)",
    "image tokens zeroed (after the projector)": "zero all",
}


@torch.no_grad()
def first_token_controls(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    images: Sequence,
    questions: Sequence[str],
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
    lam: float = 1.0,
    layer_gamma: float = 0.5,
    batch_size: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """The first answer token chosen by the contrast ``(1+α)·orig − α·other`` and β cut, per "other" branch.

    Columns: ``no contrast`` (argmax of the original logits, i.e. greedy's first token) and one
    per :data:`CONTROLS` entry: AvisC's own biased branch, a random mask keeping as many tokens
    as AvisC keeps, and an image with every token zeroed. Values are the decoded tokens.
    """
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images for {len(questions)} questions")
    vocab = torch.arange(model.get_output_embeddings().weight.shape[0])
    generator = torch.Generator(device=model.device).manual_seed(seed)
    conditions = ["original", *CONTROLS.values()]
    choices: dict[str, list[int]] = {"no contrast": [], **{name: [] for name in CONTROLS}}
    for start in range(0, len(questions), batch_size):
        inputs = encode(model, processor, images[start:start + batch_size], questions[start:start + batch_size])
        blind = select_blind_tokens(image_attention(model, inputs), layer_gamma, lam)
        logits = ablation_logits(model, inputs, blind, vocab, conditions, generator)
        original = logits["original"]
        choices["no contrast"] += original.argmax(-1).tolist()
        for name, condition in CONTROLS.items():
            scores = plausibility_cut(contrast_logits(original, logits[condition], alpha), original, beta)
            choices[name] += scores.argmax(-1).tolist()
    decode = processor.tokenizer.decode
    return pd.DataFrame({name: [decode([i]).strip() for i in ids] for name, ids in choices.items()})


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
