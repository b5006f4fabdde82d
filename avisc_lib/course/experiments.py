"""Evaluation runs as data: what notebooks 04–06 and the benchmark scripts run, each run's folder,
running one, and the metrics of many runs as one table.

    specs = grid("04", "synthetic", limit=150)               # list of Experiment
    metrics = run(specs[0], model, processor, runs_dir="runs/notebooks/tiny", model_name="tiny")
    frame = table([(spec, run(spec, ...)) for spec in specs])  # one row per run: spec columns + metrics
    plan = [spec.cost() for spec in specs]                      # budget.Run, for the time plan
    specs = runnable(specs)      # leaves out (and says so) the runs whose images are not here

The grids (``kind`` is the profile's dataset kind: ``"synthetic"`` on the tiny profile, ``"coco"``
for the real benchmarks):

* ``04`` (POPE): every dataset × split × :data:`POPE_METHODS` under :data:`PROTOCOL` (group
  :data:`METHODS`); the controls :data:`CONTROL_METHODS` as full decodes on the first dataset's
  three splits (:data:`CONTROLS`); the α × λ sweep of AvisC on its adversarial split
  (:data:`SWEEP`, on ``limit`` questions, or :data:`SWEEP_FULL_LIMIT` when ``limit`` is None).
* ``05`` (MME hallucination subset) and ``06`` (AMBER, all sections): :data:`ARGMAX_METHODS` by
  argmax once (:data:`ARGMAX`), then the :data:`SAMPLED` configurations × ``seeds`` (default:
  :data:`N_SEEDS` seeds from ``seed``) with the questions of ``seed`` (:data:`SAMPLED_RUNS`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from ..benchmarks import available
from ..benchmarks.report import comparison_row, interval_row, metrics_row
from ..benchmarks.runner import run_benchmark
from ..benchmarks.statistics import Comparison
from ..benchmarks.store import ANSWERS, CONFIG, METRICS
from ..benchmarks.tasks import build_task
from . import budget
from .budget import Progress, Run
from .paper import largest_gain_split

# The tiny profile decodes by argmax; GPU profiles run the paper's protocol (sampled, see
# benchmarks.protocols), where the baseline is plain sampling.
PROTOCOL = {"synthetic": "argmax", "coco": "paper"}
BASE = {"argmax": "greedy", "paper": "sample"}
CONTROL_METHODS = ("random_mask", "zero_image")  # AvisC's second branch replaced by a control
POPE_METHODS = ("greedy", "vcd", "m3id", "avisc")  # the first is replaced by BASE[protocol]
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_DATASETS = {"synthetic": ("synthetic",), "coco": ("coco", "aokvqa", "gqa")}
SWEEP_ALPHAS = (0.0, 0.5, 1.0, 2.0, 3.0)
SWEEP_LAMS = (0.5, 1.0, 1.5, 2.0)
SWEEP_FULL_LIMIT = 500  # sweep questions when the profile runs the full benchmarks (limit None)
ARGMAX_METHODS = ("greedy", "vcd", "m3id", "avisc", *CONTROL_METHODS)
SAMPLED = (  # (label, method, extra decode options), sampled with N_SEEDS seeds
    ("sample", "sample", {}),
    ("β cut only (avisc, α=0)", "avisc", {"alpha": 0.0}),
    ("vcd", "vcd", {}),
    ("m3id", "m3id", {}),
    ("avisc", "avisc", {}),
    *((m, m, {}) for m in CONTROL_METHODS),
)
N_SEEDS = 3
# Plan groups (rows of budget.plan), also how a notebook picks its part of a grid.
METHODS = "datasets × splits × methods"
CONTROLS = "controls (random mask, zeroed image)"
SWEEP = "α × λ sweep (AvisC)"
ARGMAX = "argmax methods"
SAMPLED_RUNS = "sampled, one run per seed"
DESIGNS = ("breadth", "power")  # AVISC_PLAN: many cells, or one cell with enough questions (notebook 04)

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


@dataclass(frozen=True)
class Experiment:
    """One ``run_benchmark`` call: what to answer, how to decode, and how tables name it.

    ``decode``: extra decode options (a mapping, kept as sorted pairs). ``question_seed`` draws
    the synthetic questions (default: ``seed``); ``label`` names the run in tables (default: the
    method); ``group`` is the row of the time plan it is counted in.
    """

    benchmark: str  # "pope" | "mme" | "amber"
    dataset: str  # "synthetic", or a real source: "coco" | "aokvqa" | "gqa" (POPE), "official"
    split: str
    method: str
    seed: int = 0
    question_seed: int | None = None
    protocol: str = "argmax"
    limit: int | None = None  # questions per split / subtask / section (None: all)
    decode: tuple = ()
    label: str = ""
    group: str = field(default="", compare=False)

    def __post_init__(self):
        pairs = self.decode.items() if isinstance(self.decode, Mapping) else self.decode
        object.__setattr__(self, "decode", tuple(sorted(pairs)))
        if self.question_seed is None:
            object.__setattr__(self, "question_seed", self.seed)
        if not self.label:
            object.__setattr__(self, "label", self.method)

    @property
    def options(self) -> dict:
        """The extra decode options as keyword arguments."""
        return dict(self.decode)

    @property
    def folder(self) -> str:
        """The run's folder name: every field that changes its answers, e.g.
        ``pope_synthetic_adversarial_avisc_argmax_n150_seed0_alpha=0.5_lam=2.0``."""
        parts = [
            self.benchmark,
            self.dataset,
            self.split,
            self.method,
            self.protocol,
            f"n{'all' if self.limit is None else self.limit}",
            f"seed{self.seed}",
        ]
        if self.question_seed != self.seed:
            parts.append(f"questions{self.question_seed}")
        return "_".join(parts + [f"{k}={v}" for k, v in self.decode])

    @property
    def sampled(self) -> bool:
        return self.protocol == "paper" or bool(self.options.get("do_sample"))

    def cost(self) -> Run:
        """The run as the cost model (:mod:`.budget`) sees it: method, questions, captions."""
        kind = "synthetic" if self.dataset == "synthetic" else "coco"
        if self.benchmark == "pope":
            questions, captions = _capped(POPE_SIZE[kind], self.limit), 0
        elif self.benchmark == "mme" and self.split == "hallucination":
            per_subtask = MME_SIZE[kind] if self.limit is None else min(MME_SIZE[kind], 2 * math.ceil(self.limit / 2))
            questions, captions = MME_SUBTASKS * per_subtask, 0
        elif self.benchmark == "amber" and self.split == "all":
            sizes = {section: _capped(size, self.limit) for section, size in AMBER_SIZES[kind].items()}
            questions, captions = sum(sizes.values()), sizes["generative"]
        else:
            raise ValueError(
                f"no sizes for {self.benchmark} split {self.split!r}; the cost model knows POPE's "
                "splits, MME 'hallucination' and AMBER 'all'"
            )
        return Run(self.benchmark, self.method, questions, do_sample=self.sampled, captions=captions, group=self.group)


def _capped(size: int, limit: int | None) -> int:
    return size if limit is None else min(size, limit)


# --------------------------------------------------------------------------- the notebooks' grids


def pope_grid(kind: str, limit: int | None, seed: int = 0, seeds: Sequence[int] | None = None) -> list[Experiment]:
    """Notebook 04: the methods grid, the controls on the first dataset, the α × λ sweep (one seed:
    ``seeds`` must be None or ``[seed]``)."""
    if seeds is not None and list(seeds) != [seed]:
        raise ValueError(f"notebook 04 runs one seed (seed={seed}); got seeds={list(seeds)}")
    protocol = PROTOCOL[kind]
    datasets = POPE_DATASETS[kind]
    methods = (BASE[protocol], *POPE_METHODS[1:])
    specs = [
        Experiment("pope", d, s, m, seed, protocol=protocol, limit=limit, group=METHODS)
        for d in datasets
        for s in POPE_SPLITS
        for m in methods
    ]
    specs += [
        Experiment("pope", datasets[0], s, m, seed, protocol=protocol, limit=limit, group=CONTROLS)
        for s in POPE_SPLITS
        for m in CONTROL_METHODS
    ]
    sweep = limit or SWEEP_FULL_LIMIT
    return specs + [
        Experiment(
            "pope",
            datasets[0],
            "adversarial",
            "avisc",
            seed,
            protocol=protocol,
            limit=sweep,
            decode={"alpha": a, "lam": lam},
            group=SWEEP,
        )
        for a in SWEEP_ALPHAS
        for lam in SWEEP_LAMS
    ]


def mme_grid(kind: str, limit: int | None, seed: int = 0, seeds: Sequence[int] | None = None) -> list[Experiment]:
    """Notebook 05: argmax methods once, sampled configurations × seeds (hallucination subset)."""
    return _methods_and_seeds("mme", "hallucination", kind, limit, seed, seeds)


def amber_grid(kind: str, limit: int | None, seed: int = 0, seeds: Sequence[int] | None = None) -> list[Experiment]:
    """Notebook 06: as notebook 05, on AMBER's four sections (captions and yes/no questions)."""
    return _methods_and_seeds("amber", "all", kind, limit, seed, seeds)


def _methods_and_seeds(
    benchmark: str, split: str, kind: str, limit: int | None, seed: int, seeds: Sequence[int] | None
) -> list[Experiment]:
    dataset = "synthetic" if kind == "synthetic" else "official"
    seeds = [seed + i for i in range(N_SEEDS)] if seeds is None else list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    specs = [Experiment(benchmark, dataset, split, m, seed, limit=limit, group=ARGMAX) for m in ARGMAX_METHODS]
    return specs + [
        Experiment(
            benchmark,
            dataset,
            split,
            method,
            s,
            question_seed=seed,
            protocol=PROTOCOL[kind],
            limit=limit,
            decode={"do_sample": True, **extra},
            label=label,
            group=SAMPLED_RUNS,
        )
        for label, method, extra in SAMPLED
        for s in seeds
    ]


def power_grid(kind: str, limit: int | None, seed: int = 0, model: str = "llava") -> list[Experiment]:
    """Notebook 04's ``power`` design: the baseline and AvisC (group :data:`METHODS`) and
    ``random_mask`` (:data:`CONTROLS`) on one split of the first dataset, the COCO split where the
    paper claims ``model``'s largest AvisC gain (:func:`.paper.largest_gain_split`; adversarial on
    synthetic data), with ``limit`` questions."""
    protocol = PROTOCOL[kind]
    split = largest_gain_split(model) if kind == "coco" else "adversarial"
    groups = {BASE[protocol]: METHODS, "avisc": METHODS, "random_mask": CONTROLS}
    dataset = POPE_DATASETS[kind][0]
    return [
        Experiment("pope", dataset, split, m, seed, protocol=protocol, limit=limit, group=g) for m, g in groups.items()
    ]


# Notebook 07: every method of the series on a few questions of each benchmark, argmax throughout.
BEYOND_METHODS = ("greedy", "vcd", "m3id", "avisc", "pai", "clearsight", "var", "only", *CONTROL_METHODS)
BEYOND_LIMITS = {"pope": 40, "mme": 10, "amber": 6}  # per split / subtask / section
BEYOND_SPLITS = {"pope": ("random", "adversarial"), "mme": ("hallucination",), "amber": ("all",)}


def beyond_grid(
    kind: str, limit: int | None, seed: int = 0, limits: Mapping[str, int] = BEYOND_LIMITS
) -> list[Experiment]:
    """Notebook 07's runs: each of :data:`BEYOND_METHODS` on :data:`BEYOND_SPLITS` with ``limits``
    questions per benchmark, at most ``limit`` (a profile's), on synthetic data or (``kind``
    "coco") POPE COCO and the official MME and AMBER files."""
    real = kind != "synthetic"
    datasets = {"pope": "coco" if real else "synthetic", "mme": "official" if real else "synthetic"}
    datasets["amber"] = datasets["mme"]
    return [
        Experiment(b, datasets[b], split, m, seed, protocol="argmax", limit=min(n, limit or n))
        for b, n in limits.items()
        for split in BEYOND_SPLITS[b]
        for m in BEYOND_METHODS
    ]


GRIDS = {"04": pope_grid, "05": mme_grid, "06": amber_grid}


def grid(
    notebook: str,
    kind: str,
    limit: int | None,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    *,
    design: str = "breadth",
    model: str = "llava",
) -> list[Experiment]:
    """The runs notebook ``"04"``, ``"05"`` or ``"06"`` makes with ``limit`` questions per split;
    ``seeds``: the sampling seeds of notebooks 05 and 06 (default: :data:`N_SEEDS` from ``seed``).
    ``design="power"`` (notebook 04 only): :func:`power_grid` for ``model``."""
    if notebook not in GRIDS:
        raise ValueError(f"unknown notebook {notebook!r}; expected one of {tuple(GRIDS)}")
    if kind not in PROTOCOL:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {tuple(PROTOCOL)}")
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; expected one of {DESIGNS}")
    if design == "power":
        if notebook != "04":
            raise ValueError(f"the power design is notebook 04's (POPE); notebook {notebook} runs the breadth design")
        return power_grid(kind, limit, seed, model)
    return GRIDS[notebook](kind, limit, seed, seeds)


def notebook_runs(
    notebook: str, limit: int | None, kind: str, design: str = "breadth", model: str = "llava"
) -> list[Run]:
    """:meth:`Experiment.cost` of every run of :func:`grid`: what the time plan counts."""
    return [spec.cost() for spec in grid(notebook, kind, limit, design=design, model=model)]


def runnable(specs: Iterable[Experiment], *, download: bool = False) -> list[Experiment]:
    """The ``specs`` whose images are here (:func:`avisc_lib.benchmarks.available`), in order.

    Prints one line per benchmark and dataset left out: how many runs, and what to set to run them.
    ``download``: a checksummed image download is allowed (notebook 04's ``DOWNLOAD_COCO``).
    """

    specs = list(specs)
    verdicts = {
        key: available(*key, download=download) for key in dict.fromkeys((s.benchmark, s.dataset) for s in specs)
    }
    for (benchmark, dataset), (ok, reason) in verdicts.items():
        if not ok:
            runs = sum((s.benchmark, s.dataset) == (benchmark, dataset) for s in specs)
            print(f"skipped {benchmark} {dataset} ({runs} runs): {reason}")
    return [s for s in specs if verdicts[s.benchmark, s.dataset][0]]


def plan(specs: Sequence[Experiment], profile):
    """:func:`.budget.plan` of ``specs`` under ``profile`` (a :class:`avisc_lib.course.Profile`): the runs a
    notebook will make, with estimated minutes on the profile's GPU."""
    return budget.plan(
        [s.cost() for s in specs],
        profile.gpu,
        profile.name,
        quantized=profile.quantization == "4bit",
        batch_size=profile.batch_size,
    )


# --------------------------------------------------------------------------- running and tables


def run(
    spec: Experiment,
    model=None,
    processor=None,
    *,
    runs_dir: str | Path,
    model_name: str,
    batch_size: int = 8,
    image_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict:
    """Run (or resume) ``spec`` in ``runs_dir / spec.folder`` and return its metrics.

    ``model``/``processor``: an already loaded pair (None: ``run_benchmark`` loads ``model_name``).
    ``progress``: a :class:`.budget.Progress` that times the run.
    """

    folder = Path(runs_dir) / spec.folder
    with progress.track(folder) if progress is not None else nullcontext():
        return run_benchmark(
            spec.benchmark,
            model=model,
            processor=processor,
            model_name=model_name,
            method=spec.method,
            dataset=spec.dataset,
            split=spec.split,
            limit=spec.limit,
            batch_size=batch_size,
            seed=spec.seed,
            question_seed=spec.question_seed,
            protocol=spec.protocol,
            image_dir=image_dir,
            out_dir=folder,
            **spec.options,
        )


def answers(spec: Experiment, runs_dir: str | Path) -> list[dict]:
    """The answer records of a finished run (``answers.jsonl``, in question order)."""

    path = Path(runs_dir) / spec.folder / ANSWERS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@dataclass
class Session:
    """A notebook's runs: ``specs`` decoded by one loaded ``model`` into ``profile.runs_dir``, all timed
    by one progress line. ``image_dir(spec)``: the image folder of a spec's real dataset (None:
    the runner's default, the dataset's variable)."""

    specs: Sequence[Experiment]
    model: object
    processor: object
    profile: object  # a course.profiles.Profile
    image_dir: Callable[[Experiment], str | Path | None] = lambda spec: None

    def __post_init__(self):
        self.runs_dir = self.profile.runs_dir
        self.progress = Progress(sum(spec.cost().questions for spec in self.specs))

    def run(self, spec: Experiment) -> dict:
        """Run (or resume) ``spec``, in its own folder under :attr:`runs_dir`; its metrics."""
        return run(
            spec,
            self.model,
            self.processor,
            runs_dir=self.runs_dir,
            model_name=self.profile.model,
            batch_size=self.profile.batch_size,
            image_dir=self.image_dir(spec),
            progress=self.progress,
        )

    def table(self, keep: Callable[[Experiment], bool] = lambda spec: True):
        """:func:`table` of every spec ``keep`` accepts, each run (or resumed) first."""
        return table([(spec, self.run(spec)) for spec in self.specs if keep(spec)])

    def part(self, group: str):
        """:meth:`table` of one group of the specs (``Experiment.group``)."""
        return self.table(lambda spec: spec.group == group)

    def specs_of(self, group: str) -> list[Experiment]:
        """The specs of one group, in order."""
        return [spec for spec in self.specs if spec.group == group]

    def answers(self, spec: Experiment) -> list[dict]:
        """The answer lines of ``spec``'s run folder."""
        return answers(spec, self.runs_dir)

    def differences(self, pairs: Iterable[tuple[Experiment, Experiment]]) -> pd.DataFrame:
        """:func:`differences` of ``(method, baseline)`` pairs of this session's runs (each run first)."""
        pairs = list(pairs)
        for spec in dict.fromkeys(s for pair in pairs for s in pair):
            self.run(spec)
        return differences(pairs, self.runs_dir, self.image_dir)


def table(runs: Iterable[tuple[Experiment, dict]]):
    """A DataFrame with one row per ``(spec, metrics)``: the spec's fields (decode options as their
    own columns), its folder, then :func:`avisc_lib.benchmarks.report.metrics_row` of its metrics,
    each with its 95 % interval as ``<column> low`` and ``<column> high`` where the run has one."""

    rows = []
    for spec, metrics in runs:
        fields = {k: v for k, v in asdict(spec).items() if k != "decode"}
        bounds = {}
        for column, interval in interval_row(spec.benchmark, metrics).items():
            bounds |= {f"{column} low": interval.low, f"{column} high": interval.high}
        rows.append({**fields, **spec.options, "folder": spec.folder, **metrics_row(spec.benchmark, metrics), **bounds})
    return pd.DataFrame(rows)


QUESTIONS = ("benchmark", "dataset", "split", "limit", "question_seed")  # fields that fix the questions a run answers


def against(
    specs: Iterable[Experiment], baseline: str, labels: Iterable[str] | None = None
) -> list[tuple[Experiment, Experiment]]:
    """``(spec, its baseline)`` for each spec labelled one of ``labels`` (None: every label but
    ``baseline``), the baseline being the spec labelled ``baseline`` with the same questions and
    seed (sampled runs pair seed by seed); a spec without one is left out."""
    specs = list(specs)
    base = {}
    for s in (s for s in specs if s.label == baseline):
        if base.setdefault(_paired_key(s), s) is not s:
            raise ValueError(f"two {baseline!r} runs answer the same questions ({s.folder}); pass one group of specs")
    chosen = [s for s in specs if (s.label != baseline if labels is None else s.label in set(labels))]
    return [(s, base[_paired_key(s)]) for s in chosen if _paired_key(s) in base]


def avisc_against_controls(specs: Iterable[Experiment]) -> list[tuple[Experiment, Experiment]]:
    """``(AvisC's spec, a control's spec)`` pairs on the same questions and seed (:data:`CONTROL_METHODS`)."""
    return [(avisc, control) for control, avisc in against(specs, "avisc", CONTROL_METHODS)]


def _paired_key(spec: Experiment) -> tuple:
    return (*(getattr(spec, name) for name in QUESTIONS), spec.seed)


def compare(
    method: Experiment, baseline: Experiment, runs_dir: str | Path, image_dir: str | Path | None = None
) -> dict[str, Comparison]:
    """``method``'s finished run minus ``baseline``'s, paired question by question, per table column
    (:func:`avisc_lib.benchmarks.report.comparison_row`; percent points, MME points)."""
    differ = [name for name in QUESTIONS if getattr(method, name) != getattr(baseline, name)]
    if differ:
        raise ValueError(f"runs compared must answer the same questions; they differ in {', '.join(differ)}")
    folder = Path(runs_dir) / method.folder
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    task = build_task(
        method.benchmark,
        method.dataset,
        method.split,
        seed=method.question_seed,
        limit=method.limit,
        parser=config["scoring"]["parser"],
        image_dir=image_dir,
    )
    given = [{r["id"]: r["answer"] for r in answers(spec, runs_dir)} for spec in (method, baseline)]
    metrics = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    return comparison_row(method.benchmark, metrics, task.compare(*given))


def differences(
    pairs: Iterable[tuple[Experiment, Experiment]],
    runs_dir: str | Path,
    image_dir: Callable[[Experiment], str | Path | None] = lambda spec: None,
) -> pd.DataFrame:
    """One row per ``(method, baseline)`` pair of finished runs: who is compared and on how many
    questions, then per column the
    paired difference as a :class:`~avisc_lib.benchmarks.statistics.Comparison` (see
    :func:`avisc_lib.course.tables.difference_cells` to print them), and McNemar's p-value of the
    accuracy where the benchmark has one."""
    rows = []
    for method, baseline in pairs:
        found = compare(method, baseline, runs_dir, image_dir(method))
        who = {"dataset": method.dataset, "split": method.split, "method": method.label, "baseline": baseline.label}
        who["questions"] = len(answers(method, runs_dir))
        accuracy = found.get("accuracy")
        rows.append({**who, **found, "McNemar p": accuracy.p_value if accuracy is not None else None})
    return pd.DataFrame(rows)
