"""Run specs: the notebooks' grids, one folder per distinct run, running a spec, one table of many runs."""

import json
from dataclasses import replace

import pytest

from avisc_lib.benchmarks.report import metrics_row
from avisc_lib.course import budget, experiments, profiles, tables
from avisc_lib.course.experiments import Experiment

SPEC = Experiment("pope", "synthetic", "adversarial", "avisc", seed=0, limit=4)
KINDS = ("synthetic", "coco")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("notebook", ["04", "05", "06"])
def test_every_run_of_a_grid_has_its_own_folder(notebook, kind):
    specs = experiments.grid(notebook, kind, 150)
    assert len({s.folder for s in specs}) == len(specs)


@pytest.mark.parametrize(
    "change",
    [
        dict(benchmark="mme", split="hallucination"),
        dict(dataset="coco"),
        dict(split="random"),
        dict(method="vcd"),
        dict(seed=1),
        dict(question_seed=1),
        dict(protocol="paper"),
        dict(limit=5),
        dict(limit=None),
        dict(decode={"alpha": 2.0}),
    ],
    ids=lambda change: ",".join(change),
)
def test_the_folder_changes_with_every_field_that_changes_the_answers(change):
    assert replace(SPEC, **change).folder != SPEC.folder


def test_label_and_group_do_not_change_the_folder():
    assert replace(SPEC, label="AvisC (ours)", group="somewhere").folder == SPEC.folder


def test_folder_names_the_fields_in_a_fixed_order():
    spec = Experiment(
        "mme",
        "synthetic",
        "hallucination",
        "avisc",
        seed=2,
        question_seed=0,
        limit=150,
        decode={"do_sample": True, "alpha": 0.0},
    )
    assert spec.folder == "mme_synthetic_hallucination_avisc_argmax_n150_seed2_questions0_alpha=0.0_do_sample=True"
    assert spec == replace(spec, decode={"alpha": 0.0, "do_sample": True})  # option order does not matter
    assert spec.options == {"alpha": 0.0, "do_sample": True} and spec.label == "avisc"


def test_controls_run_beside_avisc_by_argmax_and_sampled():
    pope = experiments.grid("04", "synthetic", 150)
    controls = [s for s in pope if s.group == experiments.CONTROLS]
    assert {(s.split, s.method) for s in controls} == {
        (split, m) for split in ("random", "popular", "adversarial") for m in ("random_mask", "zero_image")
    }
    for notebook in ("05", "06"):
        specs = experiments.grid(notebook, "synthetic", 150, seed=7)
        argmax = [s.method for s in specs if s.group == experiments.ARGMAX]
        sampled = [s for s in specs if s.group == experiments.SAMPLED_RUNS]
        assert {"avisc", "random_mask", "zero_image"} <= set(argmax)
        assert {s.seed for s in sampled if s.method == "zero_image"} == {7, 8, 9}
        assert all(s.question_seed == 7 and s.options["do_sample"] for s in sampled)


def test_the_cost_of_a_spec_counts_its_questions_and_passes():
    amber = Experiment("amber", "synthetic", "all", "zero_image", limit=10, decode={"do_sample": True})
    run = amber.cost()
    assert (run.method, run.questions, run.captions, run.do_sample) == ("zero_image", 40, 10, True)
    paper = Experiment("pope", "coco", "random", "sample", protocol="paper", limit=None)
    assert (paper.cost().questions, paper.cost().do_sample) == (3000, True)
    with pytest.raises(ValueError, match="no sizes for mme split 'all'"):
        Experiment("mme", "official", "all", "greedy").cost()


def test_unknown_notebook_kind_or_benchmark():
    with pytest.raises(ValueError, match=r"unknown notebook '03'; expected one of \('04', '05', '06'\)"):
        experiments.grid("03", "synthetic", 10)
    with pytest.raises(ValueError, match="unknown dataset kind 'gqa'"):
        experiments.grid("04", "gqa", 10)
    with pytest.raises(ValueError, match="unknown benchmark 'vqa'"):
        metrics_row("vqa", {})


POPE_METRICS = {
    "TP": 3,
    "FP": 1,
    "TN": 2,
    "FN": 0,
    "accuracy": 5 / 6,
    "precision": 0.75,
    "recall": 1.0,
    "f1": 6 / 7,
    "yes_ratio": 4 / 6,
}
MME_METRICS = {
    "subtasks": {"existence": {"acc": 0.5, "acc_plus": 0.25, "score": 75.0}},
    "perception": None,
    "cognition": None,
    "hallucination": 75.0,
}
AMBER_METRICS = {
    "generative": {"chair": 10.0, "cover": 50.0, "hal": 20.0, "cog": 5.0},
    "discriminative": {
        "existence": {"f1": 80.0},
        "attribute": {"f1": 70.0},
        "relation": {"f1": 60.0},
        "overall": {"accuracy": 71.0, "f1": 72.0},
    },
    "amber_score": 81.0,
}


def test_table_has_one_row_per_run_with_spec_columns_and_flat_metrics():
    sweep = [replace(SPEC, decode={"alpha": a}) for a in (0.0, 1.0)]
    frame = experiments.table([(sweep[0], POPE_METRICS), (sweep[1], POPE_METRICS)])
    assert list(frame.alpha) == [0.0, 1.0] and list(frame.folder) == [s.folder for s in sweep]
    assert frame.loc[0, "accuracy"] == pytest.approx(100 * 5 / 6) and frame.loc[0, "TP"] == 3
    assert (frame.loc[1, "benchmark"], frame.loc[1, "split"], frame.loc[1, "label"]) == ("pope", "adversarial", "avisc")


def test_flatten_mme_and_amber():
    assert metrics_row("mme", MME_METRICS) == {
        "existence": 75.0,
        "existence acc": 50.0,
        "existence acc+": 25.0,
        "hallucination": 75.0,
    }
    amber = metrics_row("amber", AMBER_METRICS)
    assert amber == {
        "CHAIR": 10.0,
        "Cover": 50.0,
        "Hal": 20.0,
        "Cog": 5.0,
        "F1 existence": 80.0,
        "F1 attribute": 70.0,
        "F1 relation": 60.0,
        "accuracy": 71.0,
        "F1": 72.0,
        "AMBER": 81.0,
    }


def test_run_writes_the_spec_folder_resumes_and_reports_progress(tmp_path, embedded_case, capsys):
    progress = budget.Progress(2 * SPEC.limit)
    kwargs = dict(runs_dir=tmp_path, model_name="tiny", batch_size=2, progress=progress)
    metrics = experiments.run(SPEC, embedded_case.model, embedded_case.processor, **kwargs)
    folder = tmp_path / SPEC.folder
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert metrics["TP"] + metrics["FP"] + metrics["TN"] + metrics["FN"] == SPEC.limit
    config = json.loads((folder / "config.json").read_text())
    assert (config["method"], config["limit"], config["question_seed"]) == ("avisc", 4, 0)
    assert [r["id"] for r in experiments.answers(SPEC, tmp_path)] == [1, 2, 3, 4]
    assert experiments.run(SPEC, embedded_case.model, embedded_case.processor, **kwargs) == metrics  # resumed
    assert progress.done == 2 * SPEC.limit and progress.measured == SPEC.limit
    assert "4 of 8 questions done" in capsys.readouterr().out


@pytest.mark.parametrize("method", experiments.CONTROL_METHODS)
def test_controls_run_as_full_decodes(tmp_path, embedded_case, method):
    spec = replace(SPEC, method=method)
    metrics = experiments.run(
        spec, embedded_case.model, embedded_case.processor, runs_dir=tmp_path, model_name="tiny", batch_size=2
    )
    assert metrics["TP"] + metrics["FP"] + metrics["TN"] + metrics["FN"] == spec.limit
    assert {r["method"] for r in experiments.answers(spec, tmp_path)} == {method}


def test_sampled_runs_take_the_seeds_given():
    """Notebooks 05/06 pass SEEDS: ten seeds make ten runs per sampled configuration, same questions."""
    specs = [
        s
        for s in experiments.grid("05", "synthetic", 10, seed=0, seeds=range(10))
        if s.group == experiments.SAMPLED_RUNS
    ]
    assert len(specs) == 10 * len(experiments.SAMPLED)
    assert {s.seed for s in specs} == set(range(10)) and {s.question_seed for s in specs} == {0}
    default = experiments.grid("06", "synthetic", 10, seed=5)
    assert {s.seed for s in default if s.group == experiments.SAMPLED_RUNS} == {5, 6, 7}
    with pytest.raises(ValueError, match="distinct"):
        experiments.grid("05", "synthetic", 10, seeds=[1, 1])
    with pytest.raises(ValueError, match="one seed"):
        experiments.grid("04", "synthetic", 10, seeds=[0, 1])


def test_runnable_keeps_what_is_here_and_names_what_to_set(monkeypatch, tmp_path, capsys):
    for variable in ("COCO_IMAGES", "GQA_IMAGES", "MME_DIR", "AMBER_IMAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GQA_IMAGES", str(tmp_path))
    specs = experiments.grid("04", "coco", 10)
    kept = experiments.runnable(specs, download=False)
    assert kept == [s for s in specs if s.dataset == "gqa"]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["skipped pope coco", "skipped pope aokvqa"]
    assert all("COCO_IMAGES" in line for line in lines)
    assert lines[0].startswith(f"skipped pope coco ({sum(s.dataset == 'coco' for s in specs)} runs)")
    assert experiments.runnable(experiments.grid("05", "synthetic", 10)) == experiments.grid("05", "synthetic", 10)


def test_plan_of_specs_counts_what_runs(capsys):
    class Profile:  # what experiments.plan reads of an avisc_lib.course.Profile
        gpu, name, quantization, batch_size = "T4", "llava", "4bit", 8

    specs = experiments.grid("06", "coco", 20)
    table = experiments.plan(specs[:3], Profile())
    assert table.loc["total", "runs"] == 3 and table.loc["total", "minutes"] > 0
    assert experiments.plan([], Profile()).loc["total", "runs"] == 0


def test_session_plans_price_every_gpu_and_model():
    table = profiles.session_plans("06")
    assert set(table.index) == {(m, g) for m in ("llava", "instructblip") for g in budget.GPUS}
    t4 = table.loc[("llava", "T4")]
    runs = experiments.notebook_runs("06", t4["questions per split"], "coco")
    assert t4["weights"] == "4-bit" and t4["runs"] == len(runs)
    assert t4["minutes"] == round(budget.estimate(runs, "T4", "llava", quantized=True) / 60)


def test_a_run_table_carries_intervals_and_paired_differences_match_the_metrics(tmp_path, embedded_case):
    specs = [replace(SPEC, method=m, limit=24) for m in ("avisc", "greedy")]
    kwargs = dict(runs_dir=tmp_path, model_name="tiny", batch_size=8)
    runs = [(spec, experiments.run(spec, embedded_case.model, embedded_case.processor, **kwargs)) for spec in specs]
    frame = experiments.table(runs)
    assert (frame["accuracy low"] <= frame["accuracy"]).all() and (frame["accuracy"] <= frame["accuracy high"]).all()
    assert "TP low" not in frame  # counts have no interval
    cells = tables.interval_cells(frame, ["accuracy", "TP"])
    value, low, high = frame.loc[0, ["accuracy", "accuracy low", "accuracy high"]]
    assert cells.loc[0, "accuracy"] == f"{value:.1f} [{low:.1f}, {high:.1f}]"
    assert cells.loc[0, "TP"] == frame.loc[0, "TP"]
    found = experiments.differences([tuple(specs)], tmp_path)
    accuracy = found.loc[0, "accuracy"]
    assert accuracy.difference.value == pytest.approx(frame.loc[0, "accuracy"] - frame.loc[1, "accuracy"])
    assert found.loc[0, "McNemar p"] == accuracy.p_value and 0 <= accuracy.p_value <= 1
    shown = tables.difference_cells(found, ["accuracy", "f1"])
    assert list(shown.columns) == [
        "dataset",
        "split",
        "method",
        "baseline",
        "questions",
        "Δ accuracy",
        "Δ f1",
        "McNemar p",
    ]
    assert shown.loc[0, "questions"] == 24
    assert shown.loc[0, "Δ accuracy"] == accuracy.cell()
    with pytest.raises(ValueError, match="differ in split"):
        experiments.compare(specs[0], replace(specs[1], split="random"), tmp_path)


def test_more_seeds_keep_the_first_seeds_runs():
    """Notebook 05's exercise: SEEDS = list(range(10)) adds sampled runs and resumes the first three."""
    three = experiments.grid("05", "synthetic", 150, 0, [0, 1, 2])
    ten = experiments.grid("05", "synthetic", 150, 0, list(range(10)))
    assert {s.folder for s in three} <= {s.folder for s in ten}
    sampled = [s for s in ten if s.group == experiments.SAMPLED_RUNS]
    assert {s.seed for s in sampled} == set(range(10)) and {s.question_seed for s in sampled} == {0}
