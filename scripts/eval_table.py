"""The synthetic-benchmark table of the embedded tiny model: greedy, VCD, M3ID, AvisC and AvisC's two
controls (random_mask, zero_image) on POPE, MME, AMBER.

    python scripts/eval_table.py            # CPU, about 9 minutes; writes results/EVAL_RESULTS.md

1. ``run_benchmark`` (as :func:`avisc_lib.course.experiments.run`) for every method on synthetic POPE
   (random, popular, adversarial; 500 scenes x 6 questions each), the MME hallucination subset
   (100 scenes x 2 questions per subtask) and AMBER (200 captions + discriminative questions), batch size 16, seed 0,
   library decoding defaults, each run in a fresh folder; its wall time; the headline numbers with
   their 95 % intervals, and each method against greedy (AvisC also against its controls), paired
   on the same questions (:func:`avisc_lib.course.experiments.compare`).
2. Questions per second of ``generate`` at batch size 1 and 16: the first 96 POPE questions
   and the first 32 AMBER captions, after a warm-up batch.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from avisc_lib import generate, load_model
from avisc_lib.benchmarks.report import interval_row
from avisc_lib.benchmarks.runner import decode_option_names
from avisc_lib.benchmarks.tasks import DEFAULT_PARSERS, build_task
from avisc_lib.course import experiments
from avisc_lib.settings import DecodeSettings

METHODS = experiments.ARGMAX_METHODS
POPE_SPLITS = experiments.POPE_SPLITS
RUNS = [("pope", split) for split in POPE_SPLITS] + [("mme", "hallucination"), ("amber", "all")]
SPECS = [experiments.Experiment(b, "synthetic", s, m) for m in METHODS for b, s in RUNS]  # full sizes, seed 0
BATCH_SIZE = 16
SPEED_SETS = {"POPE yes/no": ("pope", "random", 96), "AMBER captions": ("amber", "generative", 32)}
COMMAND = "python scripts/eval_table.py"


BASELINE = "greedy"
SPEC_OF = {(x.method, x.benchmark, x.split): x for x in SPECS}


@dataclass
class Run:
    metrics: dict
    seconds: float
    groups: Counter  # questions per group (POPE split, MME subtask, AMBER section)
    versus: dict[str, dict]  # baseline -> {column: Comparison}, paired on the same questions


def timed_run(spec: experiments.Experiment, folder: Path) -> Run:
    """One full run into a new folder; wall time includes model loading and scoring."""
    start = time.perf_counter()
    metrics = experiments.run(spec, runs_dir=folder, model_name="tiny", batch_size=BATCH_SIZE)
    seconds = time.perf_counter() - start
    return Run(metrics, seconds, Counter(r["group"] for r in experiments.answers(spec, folder)), {})


def paired(results: dict, folder: Path) -> None:
    """Each method against greedy, and AvisC against its controls, on the same questions."""
    for (method, benchmark, split), run in results.items():
        others = [BASELINE] if method != BASELINE else []
        others += list(experiments.CONTROL_METHODS) if method == "avisc" else []
        for other in others:
            run.versus[other] = experiments.compare(
                SPEC_OF[method, benchmark, split], SPEC_OF[other, benchmark, split], folder
            )


def shown(run: Run, benchmark: str, column: str) -> str:
    """``84.7 [80.1, 88.6]`` of a run's table column."""
    return interval_row(benchmark, run.metrics)[column].format(2)


def versus(run: Run, column: str, other: str = BASELINE) -> str:
    """The paired difference to ``other`` (``*``: its 95 % interval excludes 0); empty for the baseline itself."""
    return run.versus[other][column].cell(2) if other in run.versus else ""


def questions_per_second(model, processor, method: str, questions: dict[str, tuple], batch: int) -> float:
    """Rate of ``generate`` over ``questions`` (benchmark, split, count), after one warm-up batch."""
    benchmark, split, n = questions
    task = build_task(benchmark, split=split, limit=n)
    images = [task.load_image(q.image) for q in task.questions]
    texts = [q.text for q in task.questions]
    options = dict(method=method, batch_size=batch, seed=0)
    generate(model, processor, images[:batch], texts[:batch], **options)
    start = time.perf_counter()
    generate(model, processor, images, texts, **options)
    return len(texts) / (time.perf_counter() - start)


def table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table; floats with 2 decimals."""
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in cells] + [""]


def pope_section(results: dict) -> list[str]:
    rows = []
    for split in POPE_SPLITS:
        for method in METHODS:
            run = results[method, "pope", split]
            m = run.metrics
            rows.append([split, method, shown(run, "pope", "accuracy"), 100 * m["precision"], 100 * m["recall"],
                         shown(run, "pope", "f1"), 100 * m["yes_ratio"], versus(run, "accuracy"),
                         versus(run, "f1"), run.seconds])  # fmt: skip
    header = ["split", "method", "accuracy", "precision", "recall", "F1", "yes-ratio", f"Δ accuracy vs {BASELINE}",
              f"Δ F1 vs {BASELINE}", "wall s"]  # fmt: skip
    count = results[METHODS[0], "pope", "random"].groups["random"]
    return [
        f"## POPE (synthetic, {count} questions per split, percent)",
        "",
        *table(header, rows),
        *controls_lines(results, "pope", POPE_SPLITS, "accuracy"),
    ]


def controls_lines(results: dict, benchmark: str, splits, column: str) -> list[str]:
    """AvisC minus each control, paired, with McNemar's p where the column is an accuracy."""
    lines = [f"AvisC minus its controls, {column}, paired on the same questions:", ""]
    for split in splits:
        run = results["avisc", benchmark, split]
        for control in experiments.CONTROL_METHODS:
            found = run.versus[control][column]
            p = "" if found.p_value is None else f", McNemar p = {found.p_value:.3g}"
            lines.append(f"- {split}, AvisC − {control}: {found.verdict(2)}{p}")
    return lines + [""]


def mme_section(results: dict) -> list[str]:
    rows = []
    for method in METHODS:
        run = results[method, "mme", "hallucination"]
        subtasks = run.metrics["subtasks"]
        scores = [subtasks[t]["score"] for t in ("existence", "count", "position", "color")]
        total = shown(run, "mme", "hallucination")
        rows.append([method, *scores, total, versus(run, "hallucination"), run.seconds])
    header = ["method", "existence", "count", "position", "color", "total (max 800)", f"Δ total vs {BASELINE}",
              "wall s"]  # fmt: skip
    count = results[METHODS[0], "mme", "hallucination"].groups["existence"]
    return [
        f"## MME hallucination subset (synthetic, {count // 2} scenes x 2 questions per subtask; "
        "score = 100 acc + 100 acc+)",
        "",
        *table(header, rows),
        *controls_lines(results, "mme", ["hallucination"], "hallucination"),
    ]


def amber_section(results: dict) -> list[str]:
    rows = []
    for method in METHODS:
        run = results[method, "amber", "all"]
        g, d = run.metrics["generative"], run.metrics["discriminative"]
        f1 = [d[block]["f1"] for block in ("existence", "attribute", "relation")]
        generative = [shown(run, "amber", "CHAIR"), *(g[key] for key in ("cover", "hal", "cog"))]
        score = [shown(run, "amber", "F1"), shown(run, "amber", "AMBER"), versus(run, "AMBER")]
        rows.append([method, *generative, *f1, *score, run.seconds])
    header = ["method", "CHAIR", "Cover", "Hal", "Cog", "F1 existence", "F1 attribute", "F1 relation",
              "F1 overall", "AMBER score", f"Δ AMBER vs {BASELINE}", "wall s"]  # fmt: skip
    groups = results[METHODS[0], "amber", "all"].groups
    counts = ", ".join(f"{n} {group}" for group, n in groups.items())
    return [
        f"## AMBER (synthetic: {counts}; percent, 'No' is the positive class)",
        "",
        *table(header, rows),
        *controls_lines(results, "amber", ["all"], "AMBER"),
    ]


def speed_section() -> list[str]:
    model, processor = load_model("tiny", device="cpu")
    rows = []
    for name, questions in SPEED_SETS.items():
        for method in METHODS:
            rates = [questions_per_second(model, processor, method, questions, b) for b in (1, BATCH_SIZE)]
            rows.append([name, method, rates[0], rates[1], f"{rates[1] / rates[0]:.1f}x"])
    header = ["questions", "method", "q/s at B = 1", f"q/s at B = {BATCH_SIZE}", "speed-up"]
    return [
        "## Questions per second (generate only, after a warm-up batch)",
        "",
        f"The first {SPEED_SETS['POPE yes/no'][2]} synthetic POPE questions and the first "
        f"{SPEED_SETS['AMBER captions'][2]} AMBER captions.",
        "",
        *table(header, rows),
    ]


NOTES = [
    "## Notes",
    "",
    "- One run per cell (no averaging over seeds). With argmax decoding the only randomness is VCD's "
    "noise, seeded per batch.",
    "- Brackets: 95 % intervals over questions (`avisc_lib.benchmarks.statistics`): Wilson for accuracy, "
    "a percentile bootstrap (2000 resamples, seed 0) for F1, MME scores, CHAIR and the AMBER score. Δ columns "
    "are paired differences on the same questions (paired bootstrap); `*` marks an interval that excludes 0, "
    "a difference distinguishable from none. McNemar's exact test is given where answers are right or wrong.",
    "- POPE: 500 scenes with 3 objects drawn from the first 2000 test scenes by POPE's own rules; the three "
    "splits share the scenes and the 1500 yes-questions, only the negatives differ (random: any absent "
    "category; popular: the most frequent; adversarial: the most co-occurring with the positive).",
    '- MME: the tiny model was trained to answer "How many objects ...?" with a number word and never to '
    'confirm a count, so it mostly answers "Are there three objects in the image?" with a number, which '
    "MME's parser scores as wrong; the count column measures that. Questions have no \"Please answer yes or "
    "no.\" suffix (the tiny tokenizer knows only the world's words).",
    "- AMBER: the world has no 'action' attribute; existence questions ask about each caption's `hallu` "
    "objects (absent, co-occurring categories first), all with truth 'no', as AMBER does; relation questions "
    "are spatial ('to the left of', 'above', ...). CHAIR/Cover/Hal/Cog count the 'colour shape' phrases of a "
    "caption.",
    "- wall s: `run_benchmark` in a new folder: model loading, building the questions, decoding at batch "
    f"size {BATCH_SIZE}, scoring.",
    "",
]


def settings_lines() -> list[str]:
    defaults = {m: DecodeSettings(method=m) for m in METHODS}
    shared = ", ".join(f"{k}={getattr(defaults['avisc'], k)}" for k in decode_option_names() if k != "alpha")
    alphas = ", ".join(f"{m} {defaults[m].alpha}" for m in ("avisc", "vcd"))
    parsers = ", ".join(f"{b} `{p}`" for b, p in DEFAULT_PARSERS.items())
    return [
        f"- decoding: the library defaults, argmax after the contrast (no sampling): alpha: {alphas}; {shared}",
        f"- batch size {BATCH_SIZE}, seed 0 (questions and decoding); parsers: {parsers}; AMBER nouns: the "
        "`world` backend (the 12 'colour shape' categories)",
    ]


def machine_lines() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores, torch threads: {torch.get_num_threads()}, "
        f"load average at start: {os.getloadavg()[0]:.2f} (other jobs share the CPU when > 0)",
        f"- python {platform.python_version()}, {versions}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "EVAL_RESULTS.md"
    )
    args = parser.parse_args()
    header = [
        "# Synthetic benchmarks: the embedded tiny model with greedy, VCD, M3ID and AvisC decoding and AvisC's "
        "controls",
        "",
        f"Generated by `{COMMAND}` on {datetime.date.today().isoformat()}. Model: the embedded tiny LLaVA "
        "(`load_model('tiny')`, CPU, fp32). Benchmarks: `avisc_lib.benchmarks.synthetic` on the test "
        "split of the synthetic world, each run through `run_benchmark` (= `avisc-eval run`) into a new "
        "folder and scored by the official scorers.",
        "",
        *machine_lines(),
        *settings_lines(),
        "",
    ]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        results = {(x.method, x.benchmark, x.split): timed_run(x, Path(folder)) for x in SPECS}
        paired(results, Path(folder))
    sections = pope_section(results) + mme_section(results) + amber_section(results) + speed_section() + NOTES
    total = f"Total time of this script: {time.perf_counter() - started:.0f} s."
    args.output.write_text("\n".join(header + sections + [total, ""]), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
