"""Rewrite the "Results (tiny model, CPU)" block of README.md from the runs of notebooks 04–06.

    python benchmarks/readme_results.py          # about 3 minutes from scratch, seconds after the notebooks

Runs the same configurations as the notebooks (tiny profile: synthetic data, the profile's
``limit`` of 150 questions per split / subtask / section, batch size 32, seed 0, library
decoding defaults) into the same folders, ``runs/notebooks/tiny/``, so it resumes what the
notebooks already answered, then replaces everything between ``<!-- results:start -->`` and
``<!-- results:end -->`` in README.md.
"""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path

import pandas as pd
import torch

import avisc_lib
from avisc_lib import evaluation_views as views
from avisc_lib.benchmarks import build_task, get_parser, run_benchmark
from avisc_lib.benchmarks.pope import pope_metrics

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "notebooks" / "tiny"
START, END = "<!-- results:start -->", "<!-- results:end -->"
COMMAND = "python benchmarks/readme_results.py"
METHODS = ["greedy", "vcd", "m3id", "avisc"]
SPLITS = ["random", "popular", "adversarial"]
SEEDS = [0, 1, 2]
SAMPLED = [("sample", "sample", {}), ("β cut only (avisc, α=0)", "avisc", {"alpha": 0.0}),
           ("vcd", "vcd", {}), ("m3id", "m3id", {}), ("avisc", "avisc", {})]


class Runner:
    """The notebooks' run helpers (same folder names and settings)."""

    def __init__(self):
        torch.manual_seed(0)
        self.profile = avisc_lib.resolve_profile("tiny")
        self.model, self.processor = self.profile.load()

    def run(self, benchmark, folder, method, seed=0, question_seed=None, **kwargs):
        p = self.profile
        return run_benchmark(benchmark, model=self.model, processor=self.processor, model_name=p.model,
                             method=method, dataset="synthetic", limit=p.limit, batch_size=p.batch_size, seed=seed,
                             question_seed=question_seed, out_dir=RUNS / folder, progress=False, **kwargs)


def suffix(decode: dict) -> list[str]:
    return [f"{k}{v}" for k, v in decode.items()]


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    frame = frame.reset_index()
    cells = [[f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def pope_tables(r: Runner) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for split, method in itertools.product(SPLITS, METHODS):
        m = r.run("pope", f"pope_synthetic_{split}_{method}", method, split=split)
        rows.append({"split": split, "method": method, **{k: 100 * m[k] for k in
                     ("accuracy", "precision", "recall", "f1", "yes_ratio")}})
    task = build_task("pope", "synthetic", "adversarial", seed=0, limit=r.profile.limit)
    first = views.first_token_controls(r.model, r.processor, [task.load_image(q.image) for q in task.questions],
                                       [q.text for q in task.questions], batch_size=r.profile.batch_size, seed=0)
    parse, labels = get_parser("pope", "official"), [q.label for q in task.questions]
    controls = pd.DataFrame({c: {k: 100 * v for k, v in pope_metrics(labels, [parse(a) for a in first[c]]).items()
                                 if k in ("accuracy", "f1", "yes_ratio")} for c in first}).T
    return pd.DataFrame(rows).set_index(["split", "method"]), controls.rename_axis("contrast branch")


def mme_tables(r: Runner) -> tuple[pd.DataFrame, pd.DataFrame]:
    argmax = {}
    for method in METHODS:
        m = r.run("mme", f"mme_synthetic_hallucination_{method}_seed0", method, split="hallucination", question_seed=0)
        argmax[method] = {**{t: s["score"] for t, s in m["subtasks"].items()}, "total": m["hallucination"]}
    totals = []
    for (label, method, extra), seed in itertools.product(SAMPLED, SEEDS):
        decode = {"do_sample": True, **extra}
        folder = "_".join(["mme_synthetic_hallucination", method, f"seed{seed}", *suffix(decode)])
        m = r.run("mme", folder, method, seed=seed, question_seed=0, split="hallucination", **decode)
        totals.append({"method": label, "total": m["hallucination"]})
    sampled = views.mean_std(pd.DataFrame(totals), "method", ["total"]).rename(columns={"total": "total, sampled (3 seeds)"})
    return pd.DataFrame(argmax).T.rename_axis("method"), sampled


def amber_tables(r: Runner) -> tuple[pd.DataFrame, pd.DataFrame]:
    def flat(m):
        g, d = m["generative"], m["discriminative"]
        return {"CHAIR": g["chair"], "Cover": g["cover"], "Hal": g["hal"], "Cog": g["cog"],
                "F1 existence": d["existence"]["f1"], "F1": d["overall"]["f1"], "AMBER": m["amber_score"]}

    argmax = {m: flat(r.run("amber", f"amber_synthetic_{m}_seed0", m, split="all", question_seed=0)) for m in METHODS}
    rows = []
    for (label, method, extra), seed in itertools.product(SAMPLED, SEEDS):
        decode = {"do_sample": True, **extra}
        folder = "_".join(["amber_synthetic", method, f"seed{seed}", *suffix(decode)])
        rows.append({"method": label, **flat(r.run("amber", folder, method, seed=seed, question_seed=0,
                                                    split="all", **decode))})
    sampled = views.mean_std(pd.DataFrame(rows), "method", ["CHAIR", "F1", "AMBER"])
    return pd.DataFrame(argmax).T.rename_axis("method"), sampled


def block() -> str:
    r = Runner()
    pope, controls = pope_tables(r)
    mme, mme_sampled = mme_tables(r)
    amber, amber_sampled = amber_tables(r)
    return "\n\n".join([
        f"Generated by `{COMMAND}` from the runs of notebooks 04–06 (embedded tiny model, CPU, "
        "synthetic benchmarks, 150 questions per split / subtask / section, argmax decoding with the "
        "library defaults α = 1, β = 0.1, λ = 1 unless marked sampled; seed 0). With 150 questions one "
        "answer is 0.67 points: read differences of a point or two as noise.",
        "**POPE** (percent):\n\n" + markdown(pope),
        "**POPE controls**, adversarial split, first answer token, contrast (1+α)·orig − α·other with "
        "the β cut, for three choices of the other branch:\n\n" + markdown(controls),
        "**MME hallucination subset** (score = 100·acc + 100·acc+, max 200 per subtask):\n\n"
        + markdown(mme) + "\n\n" + markdown(mme_sampled),
        "**AMBER** (percent; AMBER = (100 − CHAIR + F1) / 2):\n\n" + markdown(amber) + "\n\n"
        + markdown(amber_sampled.rename(columns=lambda c: f"{c}, sampled (3 seeds)")),
        "Reading: the methods move POPE and CHAIR by about one question in 150; a random same-size "
        "mask or all image-token embeddings zeroed after the projector as the contrast branch does as well as AvisC's blind-token branch; "
        "under sampling the plausibility cut alone (α = 0) explains the gain over plain sampling. "
        "AvisC's clearest gain is on AMBER's existence questions. The notebooks discuss each number.",
    ])


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
