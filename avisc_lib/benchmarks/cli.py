"""``avisc-eval``: score saved answers with the official benchmark rules.

::

    avisc-eval score pope --questions Q --answers A [--parser official|avisc|strict]
    avisc-eval score mme --results-dir DIR
    avisc-eval score amber --responses R --annotations A [--task d|g|a]

Each prints one JSON object on stdout; errors go to stderr with exit status 1. Commands are
added by the functions in :data:`COMMANDS`, each taking the top-level subparsers object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import amber, mme, pope
from .parsers import available_parsers

ERRORS = (ValueError, OSError, ImportError)  # bad input (FormatError, UnparseableAnswer), missing files


def _print_json(result: dict) -> int:
    print(json.dumps(result, indent=2))
    return 0


def _score_pope(args: argparse.Namespace) -> int:
    questions = pope.load_questions(args.questions)
    return _print_json(pope.score_pope(questions, pope.load_answers(args.answers), args.parser))


def _score_mme(args: argparse.Namespace) -> int:
    return _print_json(mme.score_mme(mme.load_results_dir(args.results_dir)))


def _score_amber(args: argparse.Namespace) -> int:
    annotations = amber.load_annotations(args.annotations)
    responses = amber.load_responses(args.responses)
    generative = {}
    if args.task in "ga":
        folder = args.annotations.parent
        vocab = amber.Vocabulary.load(
            args.relation or folder / "relation.json", args.safe_words or folder / "safe_words.txt"
        )
        backend = amber.get_backend(args.backend)
        print(f"avisc-eval: AMBER generative nouns from the {backend.name} backend", file=sys.stderr)
        generative = {"vocab": vocab, "backend": backend}
    return _print_json(amber.score_amber(annotations, responses, args.task, parser=args.parser, **generative))


def add_score_command(commands: argparse._SubParsersAction) -> None:
    """``score {pope,mme,amber}``."""
    score = commands.add_parser("score", help="score saved answers with the official rules")
    benchmarks = score.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    p = benchmarks.add_parser("pope", help="POPE question file + answers (JSON Lines)")
    p.add_argument("--questions", type=Path, required=True, help="POPE question file (JSON Lines or array)")
    p.add_argument(
        "--answers",
        type=Path,
        required=True,
        help="answers: {'answer'} per line, in order or with question_id",
    )
    p.add_argument("--parser", choices=available_parsers("pope"), default="official")
    p.set_defaults(func=_score_pope)

    m = benchmarks.add_parser("mme", help="MME answer sheets (<subtask>.txt: image, question, gt, response)")
    m.add_argument("--results-dir", type=Path, required=True)
    m.set_defaults(func=_score_mme)

    a = benchmarks.add_parser("amber", help="AMBER responses [{'id', 'response'}]")
    a.add_argument("--responses", type=Path, required=True)
    a.add_argument("--annotations", type=Path, required=True, help="AMBER annotations.json")
    a.add_argument(
        "--task", choices=amber.TASKS, default="a", help="d: discriminative, g: generative, a: all"
    )
    a.add_argument("--parser", choices=available_parsers("amber"), default="official")
    a.add_argument(
        "--backend",
        choices=amber.BACKENDS,
        default="auto",
        help="generative NLP (see avisc_lib.benchmarks.amber)",
    )
    a.add_argument("--relation", type=Path, help="relation.json (default: beside the annotations)")
    a.add_argument("--safe-words", type=Path, help="safe_words.txt (default: beside the annotations)")
    a.set_defaults(func=_score_amber)


COMMANDS = [add_score_command]


def build_parser() -> argparse.ArgumentParser:
    """The ``avisc-eval`` parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="avisc-eval", description="Evaluate VLM decoding on POPE, MME and AMBER."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ERRORS as e:
        print(f"avisc-eval: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
