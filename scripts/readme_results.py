"""Rewrite the "Results (tiny model, CPU)" block of README.md from the runs of notebooks 04–06.

    python scripts/readme_results.py          # a few minutes from scratch, seconds after the notebooks

Runs the notebooks' specs (:mod:`avisc_lib.course.experiments`: the tiny profile's grids, synthetic data,
its ``limit`` of 150 questions per split / subtask / section and batch size 32, seed 0) in the
same folders, ``runs/notebooks/tiny/``, so it resumes what the notebooks already answered, then
replaces everything between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md.
"""

from __future__ import annotations

import argparse
import re
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from avisc_lib import course
from avisc_lib.course import experiments
from avisc_lib.course import tables as views

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "notebooks" / "tiny"
START, END = "<!-- results:start -->", "<!-- results:end -->"
COMMAND = "python scripts/readme_results.py"
SEED = 0
READING = (
    "Under sampling the plausibility cut alone (α = 0) recovers most of the distance between plain sampling and "
    'the contrastive methods (compare the "sample", "β cut only" and method rows of the sampled tables). The '
    "notebooks discuss each number."
)


class Runner:
    """The tiny profile's model and the notebooks' grids, run into the notebooks' folders."""

    def __init__(self):
        torch.manual_seed(SEED)
        self.profile = course.resolve_profile("tiny")
        self.model, self.processor = self.profile.load()

    def specs(self, notebook: str, *groups: str) -> list[experiments.Experiment]:
        p = self.profile
        return [s for s in experiments.grid(notebook, p.dataset, p.limit, seed=SEED) if s.group in groups]

    def part(self, notebook: str, *groups: str) -> pd.DataFrame:
        """One row per run of ``groups`` of the notebook's grid (spec columns, flat metrics, intervals)."""
        p = self.profile
        run = partial(experiments.run, runs_dir=RUNS, model_name=p.model, batch_size=p.batch_size)
        return experiments.table([(s, run(s, self.model, self.processor)) for s in self.specs(notebook, *groups)])

    def versus(self, notebook: str, *groups: str) -> pd.DataFrame:
        """Each method against greedy and AvisC against its controls, paired (runs of :meth:`part`)."""
        specs = self.specs(notebook, *groups)
        return experiments.differences(
            experiments.against(specs, "greedy") + experiments.avisc_against_controls(specs), RUNS
        )


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    frame = frame.reset_index()
    cells = [
        [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def with_differences(frame: pd.DataFrame, versus: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """``frame`` (indexed by ``keys``) plus the paired difference of ``column`` to greedy."""
    to_greedy = versus[versus.baseline == "greedy"].set_index(keys)[column]
    return frame.join(to_greedy.map(lambda c: c.cell()).rename(f"Δ {column} vs greedy (paired)")).fillna("")


def verdict_lines(versus: pd.DataFrame, column: str, name: str) -> list[str]:
    """How many differences to greedy are distinguishable, and AvisC against each control."""
    to_greedy = versus[versus.baseline == "greedy"]
    real = [f"{r.method} {r.split} {r[column].cell()}" for _, r in to_greedy.iterrows() if r[column].distinguishable]
    lines = [
        f"- {name}, paired against greedy: distinguishable from 0: {', '.join(real) or 'none'} (of {len(to_greedy)})"
    ]
    controls = versus[versus.baseline != "greedy"]
    return lines + [f"- {name}: {line}" for line in views.verdicts(controls, column)]


def pope_table(r: Runner) -> tuple[pd.DataFrame, list[str]]:
    pope = r.part("04", experiments.METHODS, experiments.CONTROLS)  # methods, then controls, split by split
    pope["split"] = pd.Categorical(pope.split, experiments.POPE_SPLITS, ordered=True)
    pope = pope.sort_values("split", kind="stable").set_index(["split", "method"])
    versus = r.versus("04", experiments.METHODS, experiments.CONTROLS)
    table = views.interval_cells(pope, ["accuracy", "precision", "recall", "f1", "yes_ratio"])
    return with_differences(table, versus, "accuracy", ["split", "method"]), verdict_lines(
        versus, "accuracy", "POPE accuracy"
    )


def mme_tables(r: Runner) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    subtasks = ["existence", "count", "position", "color"]
    argmax = r.part("05", experiments.ARGMAX).set_index("method")
    versus = r.versus("05", experiments.ARGMAX)
    table = argmax[subtasks].join(views.interval_cells(argmax, ["hallucination"]))
    table = with_differences(table, versus, "hallucination", ["method"]).rename(
        columns=lambda c: c.replace("hallucination", "total")
    )
    sampled = r.part("05", experiments.SAMPLED_RUNS).drop(columns="method").rename(columns={"label": "method"})
    totals = views.mean_std(sampled, "method", ["hallucination"])
    return (
        table,
        totals.set_axis(["total, sampled (3 seeds)"], axis=1),
        verdict_lines(versus, "hallucination", "MME total"),
    )


def amber_tables(r: Runner) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    argmax = r.part("06", experiments.ARGMAX).set_index("method")
    versus = r.versus("06", experiments.ARGMAX)
    table = views.interval_cells(argmax, ["CHAIR", "Cover", "Hal", "Cog", "F1 existence", "F1", "AMBER"])
    sampled = r.part("06", experiments.SAMPLED_RUNS).drop(columns="method").rename(columns={"label": "method"})
    lines = verdict_lines(versus, "AMBER", "AMBER score") + verdict_lines(versus, "F1 existence", "AMBER F1 existence")
    return (
        with_differences(table, versus, "AMBER", ["method"]),
        views.mean_std(sampled, "method", ["CHAIR", "F1", "AMBER"]),
        lines,
    )


def block() -> str:
    r = Runner()
    pope, pope_lines = pope_table(r)
    mme, mme_sampled, mme_lines = mme_tables(r)
    amber, amber_sampled, amber_lines = amber_tables(r)
    return "\n\n".join(
        [
            f"Generated by `{COMMAND}` from the runs of notebooks 04–06 (embedded tiny model, CPU, "
            "synthetic benchmarks, 150 questions per split / subtask / section, argmax decoding with the "
            "library defaults α = 1, β = 0.1, λ = 1 unless marked sampled; seed 0). Brackets are 95 % intervals "
            "(Wilson for accuracy-like shares, a bootstrap over questions, image pairs or captions otherwise); "
            "Δ columns are paired differences to greedy on the same questions, `*` where the interval "
            "excludes 0 (`avisc_lib.benchmarks.statistics`). `random_mask` and "
            "`zero_image` are AvisC's controls, decoded in full: AvisC's second branch keeps a random "
            "set of image tokens of the blind set's size, or zeroes every image-token embedding after the projector.",
            "**POPE** (percent):\n\n" + markdown(pope),
            "**MME hallucination subset** (score = 100·acc + 100·acc+, max 200 per subtask):\n\n"
            + markdown(mme)
            + "\n\n"
            + markdown(mme_sampled),
            "**AMBER** (percent; AMBER = (100 − CHAIR + F1) / 2):\n\n"
            + markdown(amber)
            + "\n\n"
            + markdown(amber_sampled.rename(columns=lambda c: f"{c}, sampled (3 seeds)")),
            "Reading, from the paired intervals:\n\n" + "\n".join(pope_lines + mme_lines + amber_lines),
            READING,
        ]
    )


def rewrite(readme: Path, text: str) -> None:
    content = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(content):
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    readme.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", content), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    rewrite(args.readme, block())
    print(f"rewrote the results block of {args.readme}")


if __name__ == "__main__":
    main()
