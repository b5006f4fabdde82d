"""``avisc-eval``: run a model on a benchmark, or score saved answers with the official rules.

::

    avisc-eval run {pope,mme,amber} --model NAME --method METHOD --out DIR [--dataset D] [--split S]
        [--limit N] [--batch-size B] [--seed S] [--protocol argmax|paper|official] [--parser P]
        [--dtype auto|float16|bfloat16|float32] [--quantization auto|none|4bit|8bit]
        [--image-dir DIR] [--download-images] [--methods-from FILE] [decode options]
    avisc-eval score pope --questions Q --answers A [--parser official|avisc|strict]
    avisc-eval score mme --results-dir DIR
    avisc-eval score amber --responses R --annotations A [--task d|g|a] [--official-rounding]

``run`` prints a table of the metrics and their 95 % intervals (and writes DIR/metrics.json; see
:mod:`.runner`); it also runs under ``accelerate launch``. ``--dataset`` defaults by model: the
synthetic benchmark for ``tiny``, the real one (POPE coco, MME and AMBER official) for any other,
so a real model never scores the toy benchmark unless asked to. Images come from ``--image-dir``,
else the notebooks' variables (``COCO_IMAGES``, ``GQA_IMAGES``, ``MME_DIR``, ``AMBER_IMAGES``; see
:mod:`.sources`). ``--dtype``/``--quantization`` default to the run profiles' rules
(:func:`avisc_lib.models.placement.load_options`: float16 on a GPU, 4-bit for a 7B model on a GPU too small
for it, e.g. a T4; float32 on CPU). Each ``score`` prints one JSON object on stdout: the official
metrics and their ``intervals`` (see :mod:`.statistics`). Errors go to stderr with exit status 1.
``--methods-from FILE.py`` (or a module
name; repeatable, before the command) imports a file that registers methods of your own
(:func:`avisc_lib.methods.register`): they become choices of ``--method`` with their options as
flags. Commands are added by the functions in :data:`COMMANDS`, each taking the top-level subparsers object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import methods
from ..decoding import METHODS
from ..models.loading import TINY
from ..models.placement import DTYPES, QUANTIZATIONS, load_options
from ..settings import decode_options, method_help
from . import amber, mme, pope
from .parsers import available_parsers
from .protocols import PROTOCOL_HELP, PROTOCOLS
from .report import interval_row, metrics_frame
from .runner import decode_option_names, partial_state, run_benchmark
from .sources import IMAGE_VARIABLES, image_folder
from .statistics import with_intervals
from .store import CONFIG
from .tasks import DATASETS, DEFAULT_DATA_DIR, DEFAULT_PARSERS, SPLITS

ERRORS = (ValueError, OSError, ImportError)  # bad input (FormatError, UnparseableAnswer), missing files


def _print_json(result: dict) -> int:
    print(json.dumps(result, indent=2))
    return 0


def _score_pope(args: argparse.Namespace) -> int:
    questions, answers = pope.load_questions(args.questions), pope.load_answers(args.answers)
    metrics = pope.score_pope(questions, answers, args.parser)
    return _print_json(with_intervals(metrics, pope.score_units(questions, answers, args.parser), pope.MEASURES))


def _score_mme(args: argparse.Namespace) -> int:
    sheets = mme.load_results_dir(args.results_dir)
    return _print_json(with_intervals(mme.score_mme(sheets), mme.score_units(sheets), mme.measures(list(sheets))))


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
    result = amber.score_amber(
        annotations, responses, args.task, parser=args.parser, official_rounding=args.official_rounding, **generative
    )
    units = amber.score_units(annotations, responses, args.task, parser=args.parser, **generative)
    return _print_json(with_intervals(result, units, amber.measures(args.task)))


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
    a.add_argument("--task", choices=amber.TASKS, default="a", help="d: discriminative, g: generative, a: all")
    a.add_argument("--parser", choices=available_parsers("amber"), default="official")
    a.add_argument(
        "--backend",
        choices=amber.BACKENDS,
        default="auto",
        help="generative NLP (see avisc_lib.benchmarks.amber)",
    )
    a.add_argument("--relation", type=Path, help="relation.json (default: beside the annotations)")
    a.add_argument("--safe-words", type=Path, help="safe_words.txt (default: beside the annotations)")
    a.add_argument(
        "--official-rounding",
        action="store_true",
        help="reproduce inference.py's printed numbers (0.001 counter seeds, one decimal)",
    )
    a.set_defaults(func=_score_amber)


# ``run`` flags passed to run_benchmark under their own names.
RUN_OPTIONS = (
    "dataset",
    "split",
    "limit",
    "batch_size",
    "seed",
    "protocol",
    "parser",
    "prompt_style",
    "image_dir",
    "data_dir",
)


def run_device() -> str:
    """ "cuda" or "cpu", as the runner's ``PartialState`` chooses."""
    return partial_state().device.type


def default_dataset(benchmark: str, model: str) -> str:
    """The synthetic dataset for the tiny model, the real one for any other."""
    return "synthetic" if model == TINY else DATASETS[benchmark][1]


def _run(args: argparse.Namespace) -> int:
    state = partial_state()
    if args.dataset is None:
        args.dataset = default_dataset(args.benchmark, args.model)
        if state.is_main_process:
            print(
                f"avisc-eval: dataset {args.dataset} (the default for model {args.model}; --dataset to choose)",
                file=sys.stderr,
            )
    if args.download_images:
        with state.main_process_first():  # one download, then every process finds the images
            args.image_dir = image_folder(
                args.benchmark, args.dataset, args.image_dir, data_dir=args.data_dir, download=True
            )
    device = run_device()
    try:
        loading = load_options(args.model, device, args.dtype, args.quantization)
    except RuntimeError as e:  # a 7B model needs 4-bit here, and bitsandbytes is missing
        raise ValueError(str(e)) from e
    if state.is_main_process:
        quantized = f", {loading['quantization']}" if loading["quantization"] else ""
        print(
            f"avisc-eval: {args.model} on {device} in {str(loading['dtype']).removeprefix('torch.')}{quantized}",
            file=sys.stderr,
        )
    decode = {name: getattr(args, name) for name in decode_option_names() if getattr(args, name) is not None}
    where = {name: getattr(args, name) for name in RUN_OPTIONS}
    metrics = run_benchmark(
        args.benchmark,
        model_name=args.model,
        method=args.method,
        out_dir=args.out,
        load_options=loading,
        **where,
        **decode,
    )
    if state.is_main_process:
        run = f"{args.benchmark} {args.dataset}/{args.split}"
        parser = json.loads((args.out / CONFIG).read_text())["scoring"]["parser"]
        print(f"{run}: {args.model}, {args.method}, protocol {args.protocol}, parser {parser}")
        print(metrics_frame(metrics, args.benchmark).round(4).to_string())
        shown = interval_row(args.benchmark, metrics).items()
        print("95 % intervals: " + "; ".join(f"{column} {interval.format(2)}" for column, interval in shown))
        print(f"avisc-eval: answers and metrics in {args.out}", file=sys.stderr)
    return 0


def _add_decode_options(p: argparse.ArgumentParser) -> None:
    """One flag per decode option, typed and explained by its ``DecodeSettings`` field."""
    group = p.add_argument_group("decoding (omitted: the protocol's values, see avisc_lib.decode)")
    for option in decode_options():
        if option.name == "seed":  # a run-level flag: it also draws synthetic questions
            continue
        kind = option.kind
        flag = "--" + option.name.replace("_", "-")
        default = "" if option.default is None else f" (library default {option.default})"
        help_text = option.help + default
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(flag, type=kind, help=help_text)


def _option_help(name: str) -> str:
    return next(option.help for option in decode_options() if option.name == name)


def add_run_command(commands: argparse._SubParsersAction) -> None:
    """``run {pope,mme,amber}``."""
    run = commands.add_parser("run", help="answer a benchmark with a model, resumably, and score it")
    benchmarks = run.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, datasets in DATASETS.items():
        p = benchmarks.add_parser(name, help=f"{name}: datasets {', '.join(datasets)}")
        p.add_argument("--model", required=True, help="'tiny', a known hub id or a local model folder")
        p.add_argument("--method", required=True, choices=METHODS, help=method_help())
        p.add_argument("--out", type=Path, required=True, help="output folder (resumed if it exists)")
        p.add_argument(
            "--dataset",
            choices=datasets,
            help=f"default: synthetic for --model {TINY}, {datasets[1]} for any other model",
        )
        p.add_argument("--split", choices=SPLITS[name], default=SPLITS[name][0])
        p.add_argument("--limit", type=int, help="first N questions (MME: per subtask, AMBER: per section)")
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument(
            "--seed",
            type=int,
            default=0,
            help=f"{_option_help('seed')}; also draws synthetic questions; batch k decodes with seed S + k",
        )
        p.add_argument(
            "--protocol",
            choices=PROTOCOLS,
            default="argmax",
            help="; ".join(f"{name}: {text}" for name, text in PROTOCOL_HELP.items()),
        )
        p.add_argument(
            "--parser",
            choices=available_parsers(name),
            help=f"default: the protocol's (argmax: {DEFAULT_PARSERS[name]})",
        )
        p.add_argument("--prompt-style", help="see avisc_lib.build_prompt (default: the protocol's)")
        variables = sorted({v for (b, _), v in IMAGE_VARIABLES.items() if b == name})
        p.add_argument(
            "--image-dir", type=Path, help=f"image folder of a real dataset (default: ${', $'.join(variables)})"
        )
        p.add_argument(
            "--download-images",
            action="store_true",
            help="pope coco/aokvqa without an image folder: download COCO val2014.zip (6.6 GB, "
            "sha256-checked) into the data dir and extract the images POPE asks about",
        )
        p.add_argument(
            "--dtype",
            choices=("auto", *DTYPES),
            default="auto",
            help="weights dtype (auto: float16 on a GPU, float32 on CPU)",
        )
        p.add_argument(
            "--quantization",
            choices=QUANTIZATIONS,
            default="auto",
            help="bitsandbytes loading (auto: 4bit for a 7B model on a GPU with too little memory "
            "for float16, e.g. a T4; none on CPU)",
        )
        p.add_argument("--data-dir", type=Path, help=f"benchmark file cache (default {DEFAULT_DATA_DIR})")
        _add_decode_options(p)
        p.set_defaults(func=_run)


COMMANDS = [add_score_command, add_run_command]


def _methods_from(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--methods-from",
        action="append",
        default=[],
        metavar="FILE",
        help="a Python file (or module) that registers methods of your own; repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``avisc-eval`` parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="avisc-eval", description="Evaluate VLM decoding on POPE, MME and AMBER.")
    _methods_from(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def load_user_methods(argv: list[str] | None) -> None:
    """Import the ``--methods-from`` files first, so that the parser offers their methods and options."""
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _methods_from(early)
    for source in early.parse_known_args(argv)[0].methods_from:
        methods.load(source)


def main(argv: list[str] | None = None) -> int:
    try:
        load_user_methods(argv)
    except (ValueError, ImportError, SyntaxError) as e:
        print(f"avisc-eval: error: --methods-from: {e}", file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ERRORS as e:
        print(f"avisc-eval: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
