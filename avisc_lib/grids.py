"""The runs each evaluation notebook makes, as data: the notebooks, the profiles' default sizes and
the time plan (:mod:`.budget`) all read the grids from here.

    runs = notebook_runs("04", limit=100, dataset="coco")   # list of budget.Run

* ``04`` (POPE): every dataset × split × :data:`POPE_METHODS` (under :data:`PROTOCOL`), the first-token controls
  on the first dataset's adversarial split, and the α × λ sweep of AvisC there
  (:data:`SWEEP_ALPHAS` × :data:`SWEEP_LAMS`, on ``limit`` questions, or :data:`SWEEP_FULL_LIMIT`
  when ``limit`` is None).
* ``05`` (MME hallucination subset) and ``06`` (AMBER, all sections): :data:`ARGMAX_METHODS`
  once, then :data:`SAMPLED` configurations × :data:`N_SEEDS` seeds.

``dataset`` is the profile's: ``"synthetic"`` (the tiny profile) or ``"coco"`` (the real benchmarks).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .budget import Run

# The tiny profile decodes by argmax; GPU profiles run the paper's protocol (sampled, see
# benchmarks.protocols), where the baseline is plain sampling.
PROTOCOL = {"synthetic": "argmax", "coco": "paper"}
BASE = {"argmax": "greedy", "paper": "sample"}
POPE_METHODS = ("greedy", "vcd", "m3id", "avisc")  # the first is replaced by BASE[protocol]
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_DATASETS = {"synthetic": ("synthetic",), "coco": ("coco", "aokvqa", "gqa")}
SWEEP_ALPHAS = (0.0, 0.5, 1.0, 2.0, 3.0)
SWEEP_LAMS = (0.5, 1.0, 1.5, 2.0)
SWEEP_FULL_LIMIT = 500  # sweep questions when the profile runs the full benchmarks (limit None)
ARGMAX_METHODS = ("greedy", "vcd", "m3id", "avisc")
SAMPLED = (  # (label, method, extra decode options), sampled with N_SEEDS seeds
    ("sample", "sample", {}),
    ("β cut only (avisc, α=0)", "avisc", {"alpha": 0.0}),
    ("vcd", "vcd", {}),
    ("m3id", "m3id", {}),
    ("avisc", "avisc", {}),
)
N_SEEDS = 3

# Questions per POPE split, per MME hallucination subtask and per AMBER section, by dataset kind.
# Real: POPE (RUCAIBox/POPE): 500 images × 6 questions per file for COCO, A-OKVQA and GQA; MME (its
# evaluation tool's sheets): 30 images × 2 questions per hallucination subtask; AMBER
# (junyangwang0410/AMBER query_all.json): 1004 captions, 7628 attribute, 4924 existence, 1664
# relation questions. Synthetic: what benchmarks.synthetic builds.
POPE_SIZE = {"synthetic": 3000, "coco": 3000}
MME_SIZE = {"synthetic": 200, "coco": 60}
AMBER_SIZES = {
    "synthetic": {"generative": 200, "attribute": 788, "existence": 400, "relation": 292},
    "coco": {"generative": 1004, "attribute": 7628, "existence": 4924, "relation": 1664},
}
MME_SUBTASKS = 4


def _capped(size: int, limit: int | None) -> int:
    return size if limit is None else min(size, limit)


def pope_runs(limit: int | None, dataset: str) -> list[Run]:
    """Notebook 04: the argmax grid, the first-token controls and the α × λ sweep."""
    questions = _capped(POPE_SIZE[dataset], limit)
    protocol = PROTOCOL[dataset]
    methods = (BASE[protocol], *POPE_METHODS[1:])
    runs = [Run("pope", m, questions, do_sample=protocol == "paper", group="datasets × splits × methods")
            for _ in POPE_DATASETS[dataset] for _ in POPE_SPLITS for m in methods]
    runs.append(Run("pope", "controls", questions, group="first-token controls"))
    sweep = _capped(POPE_SIZE[dataset], limit or SWEEP_FULL_LIMIT)
    runs += [Run("pope", "avisc", sweep, do_sample=protocol == "paper", group="α × λ sweep (AvisC)")
             for _ in SWEEP_ALPHAS for _ in SWEEP_LAMS]
    return runs


def mme_runs(limit: int | None, dataset: str) -> list[Run]:
    """Notebook 05: argmax methods once, sampled configurations × seeds (hallucination subset)."""
    per_subtask = MME_SIZE[dataset] if limit is None else min(MME_SIZE[dataset], 2 * math.ceil(limit / 2))
    return _methods_and_seeds("mme", MME_SUBTASKS * per_subtask, captions=0)


def amber_runs(limit: int | None, dataset: str) -> list[Run]:
    """Notebook 06: as notebook 05, on AMBER's four sections (captions and yes/no questions)."""
    sizes = {section: _capped(size, limit) for section, size in AMBER_SIZES[dataset].items()}
    return _methods_and_seeds("amber", sum(sizes.values()), captions=sizes["generative"])


def _methods_and_seeds(benchmark: str, questions: int, captions: int) -> list[Run]:
    runs = [Run(benchmark, m, questions, captions=captions, group="argmax methods") for m in ARGMAX_METHODS]
    return runs + [Run(benchmark, method, questions, do_sample=True, captions=captions,
                       group=f"sampled × {N_SEEDS} seeds")
                   for _, method, _ in SAMPLED for _ in range(N_SEEDS)]


GRIDS: dict[str, Callable[[int | None, str], list[Run]]] = {"04": pope_runs, "05": mme_runs, "06": amber_runs}


def notebook_runs(notebook: str, limit: int | None, dataset: str) -> list[Run]:
    """The runs notebook ``"04"``, ``"05"`` or ``"06"`` makes with ``limit`` questions per split."""
    if notebook not in GRIDS:
        raise ValueError(f"unknown notebook {notebook!r}; expected one of {tuple(GRIDS)}")
    if dataset not in POPE_DATASETS:
        raise ValueError(f"unknown dataset kind {dataset!r}; expected one of {tuple(POPE_DATASETS)}")
    return GRIDS[notebook](limit, dataset)
