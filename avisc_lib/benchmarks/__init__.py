"""Benchmark scoring for POPE, MME and AMBER with the official rules, a runner, and the ``avisc-eval`` CLI.

Loaders read the official file formats, named parsers (:mod:`.parsers`) turn free text into
yes/no, and the scorers are pure functions over (labels, answers). See each module's
docstring for the exact rules and every deliberate difference from the official scripts.
:mod:`.synthetic` builds seeded counterparts from the synthetic world, :mod:`.tasks` puts a
benchmark in the runner's terms, and :func:`run_benchmark` (:mod:`.runner`) answers and scores
it, resumably and across ``accelerate`` processes. :func:`available` (:mod:`.sources`) says whether a
real benchmark's images are here, and if not, what to set.
"""

from .amber import Vocabulary, get_backend, load_annotations, load_queries, load_responses, score_amber
from .download import fetch
from .io import FormatError
from .mme import load_hub, load_release, load_results_dir, load_sheet, score_mme
from .parsers import UnparseableAnswer, available_parsers, get_parser, register
from .pope import (
    ObjectStats,
    PopeAnswer,
    PopeQuestion,
    build_pope,
    coco_image_objects,
    load_answers,
    load_questions,
    pope_metrics,
    save_questions,
    score_pope,
)
from .runner import run_benchmark
from .sources import available
from .tasks import build_task

__all__ = [
    "FormatError",
    "ObjectStats",
    "PopeAnswer",
    "PopeQuestion",
    "UnparseableAnswer",
    "Vocabulary",
    "available",
    "available_parsers",
    "build_pope",
    "build_task",
    "coco_image_objects",
    "fetch",
    "get_backend",
    "get_parser",
    "load_annotations",
    "load_hub",
    "load_answers",
    "load_queries",
    "load_questions",
    "load_release",
    "load_responses",
    "load_results_dir",
    "load_sheet",
    "pope_metrics",
    "register",
    "run_benchmark",
    "save_questions",
    "score_amber",
    "score_mme",
    "score_pope",
]
