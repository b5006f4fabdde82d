"""A benchmark as the runner sees it: questions in order, their images, and the official scorer.

:func:`build_task` turns ``(benchmark, dataset, split)`` into a :class:`Task`:

=========  ===================================  ==============================================
benchmark  datasets                             splits (first = default)
=========  ===================================  ==============================================
pope       synthetic, coco, aokvqa, gqa          random, popular, adversarial
mme        synthetic, official                   hallucination (existence, count, position,
                                                 color), all (official only: the 14 subtasks)
amber      synthetic, official                   all, generative, discriminative, attribute,
                                                 existence, relation
=========  ===================================  ==============================================

``synthetic`` builds the seeded counterpart of :mod:`.synthetic` (images rendered on demand).
The real datasets read the pinned files of :mod:`.download` (POPE's question files; AMBER's
annotations, vocabulary and queries) from the repository's ``data/`` in a checkout, else from
``data_dir``, downloading them if absent, and the
images from ``image_dir`` (COCO val2014 or GQA images for POPE, the extracted
``MME_Benchmark_release_version`` folder, which also holds MME's questions, and AMBER's
``AMBER_<n>.jpg`` files). Without ``image_dir`` the environment's folder is used (``COCO_IMAGES``,
``GQA_IMAGES``, ``MME_DIR``, ``AMBER_IMAGES``), else POPE's COCO images already extracted into
``data_dir/coco`` and MME's ``lmms-lab/MME`` dataset (pinned revision, recorded in
:attr:`Task.data`); see :func:`.sources.image_folder`. ``data_dir`` defaults to ``$AVISC_DATA_DIR``, else
``~/.cache/avisc_lib/benchmarks``. ``limit`` keeps the first N questions: of the file (POPE), of each
subtask rounded up to whole image pairs (MME), of each AMBER section (generative, attribute,
existence, relation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from PIL import Image

from . import amber, download, mme, pope, statistics, synthetic
from .io import DEFAULT_DATA_DIR, check_images, open_image
from .parsers import get_parser
from .sources import DATASETS, image_folder
from .statistics import Comparison, Measure, Units

SPLITS = {
    "pope": pope.STRATEGIES,
    "mme": ("hallucination", "all"),
    "amber": ("all", "generative", "discriminative", "attribute", "existence", "relation"),
}
# AMBER: its exact "Yes"/"No" rule after case and final-punctuation normalisation (see .amber).
DEFAULT_PARSERS = {"pope": "official", "mme": "official", "amber": "normalised"}
AMBER_SECTIONS = {
    "all": ("generative", "attribute", "existence", "relation"),
    "discriminative": ("attribute", "existence", "relation"),
}


@dataclass(frozen=True)
class Question:
    id: int
    image: str  # a name that the task's ``load_image`` understands
    text: str
    label: str  # "yes"/"no", or for a caption the objects it should mention
    group: str  # POPE split, MME subtask or AMBER section


@dataclass
class Task:
    """What to ask (``questions``, in order, unique ids) and how to score ``{id: answer}``."""

    benchmark: str
    dataset: str
    split: str
    questions: list[Question]
    load_image: Callable[[str], Image.Image]
    score: Callable[[Mapping[int, str]], dict]
    scoring: dict[str, str]  # parser (and AMBER's noun backend), recorded with the run
    units: Callable[[Mapping[int, str]], Units]  # what ``score``'s numbers are statistics of, for intervals
    measures: Mapping[str, Measure]  # ``score``'s reported numbers (paths into its output) as statistics
    data: dict[str, str] = field(default_factory=dict)  # a pinned dataset's name and revision, recorded with the run

    def score_with_intervals(self, answers: Mapping[int, str]) -> dict:
        """``score(answers)`` plus ``"intervals"``: each measure's 95 % interval (see :mod:`.statistics`)."""
        return statistics.with_intervals(self.score(answers), self.units(answers), self.measures)

    def compare(self, method: Mapping[int, str], baseline: Mapping[int, str]) -> dict[str, Comparison]:
        """Every measure, ``method``'s answers minus ``baseline``'s, paired on this task's questions."""
        return statistics.comparisons(self.units(method), self.units(baseline), self.measures)


@dataclass(frozen=True)
class Source:
    """Where questions come from: synthetic seed, or the real files and images."""

    seed: int
    limit: int | None
    image_dir: Path | None
    data_dir: Path


def build_task(
    benchmark: str,
    dataset: str = "synthetic",
    split: str | None = None,
    *,
    seed: int = 0,
    limit: int | None = None,
    parser: str | None = None,
    image_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
) -> Task:
    """The :class:`Task` for ``benchmark`` on ``dataset`` (see the module docstring)."""
    if benchmark not in DATASETS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {tuple(DATASETS)}")
    _choose("dataset", dataset, DATASETS[benchmark], benchmark)
    split = SPLITS[benchmark][0] if split is None else split
    _choose("split", split, SPLITS[benchmark], benchmark)
    parser = DEFAULT_PARSERS[benchmark] if parser is None else parser
    get_parser(benchmark, parser)  # a clear error for an unknown name
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    data_dir = Path(data_dir or DEFAULT_DATA_DIR)
    images = image_folder(benchmark, dataset, image_dir, data_dir=data_dir)
    source = Source(seed, limit, images, data_dir)
    return BUILDERS[benchmark](dataset, split, parser, source)


def _choose(what: str, value: str, allowed: Sequence[str], benchmark: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {benchmark} {what} {value!r}; expected one of {tuple(allowed)}")


def _head(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


# --------------------------------------------------------------------------- POPE


def _pope_task(dataset: str, split: str, parser: str, source: Source) -> Task:
    if dataset == "synthetic":
        questions = _head(synthetic.pope_questions(split, seed=source.seed), source.limit)
        load_image = synthetic.load_image
    else:
        folder = source.image_dir
        path = download.fetch(f"pope/{dataset}/{split}", source.data_dir)
        questions = _head(pope.load_questions(path), source.limit)
        check_images(questions, folder)
        load_image = partial(open_image, folder)
    return Task(
        "pope",
        dataset,
        split,
        [Question(q.question_id, q.image, q.text, q.label, split) for q in questions],
        load_image,
        partial(pope.score_pope, questions, parser=parser),
        {"parser": parser},
        partial(pope.score_units, questions, parser=parser),
        pope.MEASURES,
    )


# --------------------------------------------------------------------------- MME


def _mme_task(dataset: str, split: str, parser: str, source: Source) -> Task:
    if dataset == "synthetic":
        if split != "hallucination":
            raise ValueError("the synthetic MME has only the hallucination subtasks (split 'hallucination')")
        sheets, load_image, data = synthetic.mme_sheets(seed=source.seed), synthetic.load_image, {}
    else:
        sheets, load_image, data = _mme_official(split, source.image_dir)
    if source.limit is not None:
        sheets = {t: items[: 2 * math.ceil(source.limit / 2)] for t, items in sheets.items()}
    numbered = [(t, item) for t, items in sheets.items() for item in items]
    questions = [Question(n, i.image, i.question, i.gt, t) for n, (t, i) in enumerate(numbered, start=1)]
    score, units = (
        partial(_score_mme, numbered, parser, mme.score_mme),
        partial(_score_mme, numbered, parser, mme.score_units),
    )
    measures = mme.measures([t for t in mme.SUBTASKS if t in sheets])
    return Task("mme", dataset, split, questions, load_image, score, {"parser": parser}, units, measures, data)


def _mme_official(split: str, root: Path | None):
    """``(sheets, image loader, data record)`` from the release folder ``root``, or from the parquet
    dataset (``root`` a local copy, or None: ``lmms-lab/MME``). Images are named ``<subtask>/...``."""
    subtasks = mme.HALLUCINATION if split == "hallucination" else mme.SUBTASKS
    if root is None or mme.is_parquet_folder(root):
        hub = mme.load_hub(subtasks, root)
        sheets = {t: [replace(item, image=f"{t}/{item.image}") for item in items] for t, items in hub.sheets.items()}
        return sheets, hub.image, hub.source
    released = mme.load_release(root, subtasks)
    sheets = {  # images named by their path in the release, unique across subtasks
        t: [replace(item, image=_release_name(root, t, item.image)) for item in items] for t, items in released.items()
    }
    return sheets, partial(open_image, root), {}


def _release_name(root: Path, subtask: str, image: str) -> str:
    """``image`` of ``subtask`` as a path relative to the release folder."""
    return str(mme.release_image_path(root, subtask, image).relative_to(root))


def _score_mme(numbered: Sequence[tuple[str, mme.MMEItem]], parser: str, scorer: Callable, answers: Mapping[int, str]):
    """``scorer`` (:func:`.mme.score_mme` or :func:`.mme.score_units`) of the sheets with answer
    ``n`` filled into the n-th item (1-based)."""
    sheets: dict[str, list[mme.MMEItem]] = {}
    for n, (subtask, item) in enumerate(numbered, 1):
        sheets.setdefault(subtask, []).append(replace(item, pred=answers[n]))
    return scorer(sheets, parser)


# --------------------------------------------------------------------------- AMBER


def amber_section(annotation: dict) -> str:
    """generative, attribute (state, number, action), existence or relation."""
    if annotation["type"] == amber.GENERATIVE:
        return "generative"
    group = amber.GROUPS[annotation["type"]]
    return "attribute" if group in ("state", "number", "action") else group


def _amber_records(dataset: str, source: Source):
    """``(annotations, queries, vocabulary, noun backend, image loader)`` of ``dataset``."""
    if dataset == "synthetic":
        built = synthetic.amber_set(seed=source.seed)
        nouns = synthetic.WorldNouns()
        return built.annotations, built.queries, built.vocabulary, nouns, synthetic.load_image
    folder = source.image_dir
    paths = {name: download.fetch(f"amber/{name}", source.data_dir) for name in ("relation", "safe_words")}
    annotations = download.fetch("amber/annotations", source.data_dir)
    queries = amber.load_queries(download.fetch("amber/query/all", source.data_dir))
    vocabulary = amber.Vocabulary.load(paths["relation"], paths["safe_words"])
    return amber.load_annotations(annotations), queries, vocabulary, None, partial(open_image, folder)


def _amber_task(dataset: str, split: str, parser: str, source: Source) -> Task:
    annotations, queries, vocabulary, nouns, load_image = _amber_records(dataset, source)
    sections = AMBER_SECTIONS.get(split, (split,))
    chosen: dict[str, list[amber.AmberQuery]] = {s: [] for s in sections}
    for query in queries:
        section = amber_section(annotations[query.id - 1])
        if section in chosen and (source.limit is None or len(chosen[section]) < source.limit):
            chosen[section].append(query)
    picked = sorted((q for qs in chosen.values() for q in qs), key=lambda q: q.id)
    if dataset != "synthetic":
        check_images(picked, source.image_dir)
    generative = bool(chosen.get("generative"))
    discriminative = any(qs for section, qs in chosen.items() if section != "generative")
    task = "a" if generative and discriminative else ("g" if generative else "d")
    scoring, generative_scoring = {"parser": parser}, {}
    if generative:
        nouns = nouns or amber.get_backend("auto")
        scoring["nouns"] = nouns.name
        generative_scoring = {"vocab": vocabulary, "backend": nouns}
    score = partial(amber.score_amber, annotations, task=task, parser=parser, **generative_scoring)
    units = partial(amber.score_units, annotations, task=task, parser=parser, **generative_scoring)
    questions = [_amber_question(q, annotations[q.id - 1]) for q in picked]
    return Task("amber", dataset, split, questions, load_image, score, scoring, units, amber.measures(task))


def _amber_question(query: amber.AmberQuery, annotation: dict) -> Question:
    truth = annotation["truth"]
    label = ", ".join(truth) if annotation["type"] == amber.GENERATIVE else truth
    return Question(query.id, query.image, query.query, label, amber_section(annotation))


BUILDERS: dict[str, Callable[[str, str, str, Source], Task]] = {
    "pope": _pope_task,
    "mme": _mme_task,
    "amber": _amber_task,
}
