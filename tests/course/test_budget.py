"""The GPU time budget: roofline behaviour, the notebooks' grids, the plan and the progress tracker."""

import collections
import re
import warnings

import pytest

from avisc_lib.benchmarks import amber, fetch, load_queries, load_questions
from avisc_lib.benchmarks.tasks import DEFAULT_DATA_DIR, amber_section, build_task
from avisc_lib.course import budget, experiments
from avisc_lib.decoding import METHODS

SPEC = budget.MODELS["llava"]
FP16, NF4 = budget.QUANTIZATION["fp16"], budget.QUANTIZATION["4bit"]
PROMPT = SPEC.image_tokens + budget.PROMPT_TEXT_TOKENS


# --------------------------------------------------------------------------- roofline


@pytest.mark.parametrize("gpu", budget.GPUS)
def test_a_decode_step_reads_the_weights_once_whatever_the_batch(gpu):
    def step(rows):
        return budget.forward_seconds(budget.GPUS[gpu], SPEC, FP16, rows, 1, PROMPT)

    assert step(16) < 1.5 * step(1)  # bandwidth-bound: 16 rows cost little more than one
    assert step(4096) > 10 * step(1)  # compute-bound once the rows' FLOPs outweigh the weight read


@pytest.mark.parametrize("gpu", budget.GPUS)
def test_a_prefill_is_compute_bound(gpu):
    def prefill(rows):
        return budget.forward_seconds(budget.GPUS[gpu], SPEC, FP16, rows, PROMPT, 0)

    assert prefill(16) == pytest.approx(2 * prefill(8), rel=0.05)  # time grows with the positions
    assert prefill(8) > 10 * budget.forward_seconds(budget.GPUS[gpu], SPEC, FP16, 8, 1, PROMPT)


def test_decode_step_times_are_those_reported_for_7b_models():
    # Public figures for a 7B Llama with HF transformers at batch 1: ~20-40 tokens/s in fp16 on an
    # A100, ~5-20 tokens/s with bitsandbytes nf4 on a T4.
    a100 = budget.forward_seconds(budget.GPUS["A100-40GB"], SPEC, FP16, 1, 1, PROMPT)
    t4 = budget.forward_seconds(budget.GPUS["T4"], SPEC, NF4, 1, 1, PROMPT)
    assert 1 / 40 <= a100 <= 1 / 20
    assert 1 / 20 <= t4 <= 1 / 5


def test_methods_cost_what_their_passes_say():
    cost = {m: budget.estimate([budget.Run("pope", m, 80)], "A100-40GB", "llava") for m in METHODS}
    assert cost["greedy"] == cost["sample"]
    assert cost["avisc"] == cost["m3id"] < cost["vcd"]  # VCD: one more vision-tower pass
    assert cost["random_mask"] == cost["zero_image"] == cost["avisc"]  # AvisC's branch, another token set
    assert 1.4 * cost["greedy"] < cost["avisc"] < 2.2 * cost["greedy"]  # two prefills, 2B rows per step


def test_captions_and_sampling_cost_more_than_short_argmax_answers():
    def cost(**run):
        return budget.estimate([budget.Run("amber", "avisc", 80, **run)], "T4", "llava")

    assert cost(captions=80) > 1.5 * cost()
    assert cost(do_sample=True) > cost()


def test_faster_gpus_take_less_time():
    runs = experiments.notebook_runs("06", 20, "coco")
    times = [budget.estimate(runs, gpu, "llava") for gpu in ("T4", "L4", "A100-40GB", "A100-80GB")]
    assert times == sorted(times, reverse=True)


def test_time_grows_with_the_number_of_batches():
    one = budget.estimate([budget.Run("pope", "greedy", 8)], "L4", "llava")
    assert budget.estimate([budget.Run("pope", "greedy", 80)], "L4", "llava") == pytest.approx(10 * one)
    assert budget.estimate([budget.Run("pope", "greedy", 9)], "L4", "llava") == pytest.approx(2 * one)


def test_7b_fp16_does_not_fit_a_t4_with_two_kv_caches():
    weights_gib = SPEC.total_params * 2 / 2**30
    assert weights_gib < budget.GPUS["T4"].memory_gib < budget.memory_gib("llava", quantized=False)
    assert [budget.fits_fp16(g, m) for g in budget.GPUS for m in budget.MODELS] == [False] * 2 + [True] * 6
    t4 = [budget.Run("pope", "avisc", 40)]
    assert budget.estimate(t4, "T4", "llava") == budget.estimate(t4, "T4", "llava", quantized=True)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown GPU 'V100'; expected one of \('T4'"):
        budget.estimate([], "V100", "llava")
    with pytest.raises(ValueError, match="no cost figures for model 'tiny'"):
        budget.estimate([], "T4", "tiny")
    with pytest.raises(ValueError, match="unknown method 'beam'"):
        budget.Run("pope", "beam", 10)
    with pytest.raises(ValueError, match="captions <= questions"):
        budget.Run("amber", "greedy", 10, captions=11)


# --------------------------------------------------------------------------- GPU names


@pytest.mark.parametrize(
    ("name", "memory", "key"),
    [
        ("Tesla T4", 14.7, "T4"),
        ("NVIDIA L4", 22.0, "L4"),
        ("NVIDIA L40S", 44.4, None),
        ("NVIDIA A100-SXM4-40GB", 39.4, "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", 39.4, "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", 79.2, "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", 79.2, "A100-80GB"),
        ("NVIDIA A100-SXM", 79.2, "A100-80GB"),
        ("NVIDIA H100 80GB HBM3", 79.1, None),
    ],
)
def test_detect_gpu_maps_device_names(name, memory, key):
    assert budget.detect_gpu(name, memory) == key


def test_detect_gpu_without_cuda(monkeypatch):
    monkeypatch.setattr(budget.torch.cuda, "is_available", lambda: False)
    assert budget.detect_gpu() is None


def test_nearest_gpu_by_memory():
    assert [budget.nearest_gpu(m) for m in (15.0, 16.0, 24.0, 40.0, 94.0)] == [
        "T4",
        "T4",
        "L4",
        "A100-40GB",
        "A100-80GB",
    ]


# --------------------------------------------------------------------------- grids


def test_notebook_grids_are_todays_notebooks():
    pope = collections.Counter(r.group for r in experiments.notebook_runs("04", 100, "coco"))
    assert list(pope.values()) == [3 * 3 * 4, 3 * 2, 5 * 4]  # methods; controls on the first dataset; sweep
    assert len(experiments.notebook_runs("04", 100, "synthetic")) == 3 * 4 + 3 * 2 + 20
    argmax = ("greedy", "vcd", "m3id", "avisc", "random_mask", "zero_image")
    for notebook in ("05", "06"):
        runs = experiments.notebook_runs(notebook, 100, "coco")
        assert [(r.method, r.do_sample) for r in runs[:6]] == [(m, False) for m in argmax]
        assert len(runs) == 6 + 7 * 3 and all(r.do_sample for r in runs[6:])


def test_the_sweep_takes_500_questions_on_the_full_benchmarks():
    runs = experiments.notebook_runs("04", None, "coco")
    assert {r.questions for r in runs if r.group.startswith("α")} == {500}
    assert {r.questions for r in runs if r.group.startswith("datasets")} == {3000}


@pytest.mark.parametrize("limit", [1, 5, 150, None])
def test_grid_sizes_are_the_synthetic_tasks_sizes(limit):
    pope = build_task("pope", "synthetic", "adversarial", limit=limit).questions
    mme = build_task("mme", "synthetic", "hallucination", limit=limit).questions
    amber_questions = build_task("amber", "synthetic", "all", limit=limit).questions
    assert experiments.notebook_runs("04", limit, "synthetic")[0].questions == len(pope)
    assert experiments.notebook_runs("05", limit, "synthetic")[0].questions == len(mme)
    run = experiments.notebook_runs("06", limit, "synthetic")[0]
    assert (run.questions, run.captions) == (
        len(amber_questions),
        sum(q.group == "generative" for q in amber_questions),
    )


def test_grid_sizes_are_the_real_benchmark_files_sizes():
    for dataset in ("coco", "aokvqa", "gqa"):
        for split in experiments.POPE_SPLITS:
            assert (
                len(load_questions(fetch(f"pope/{dataset}/{split}", DEFAULT_DATA_DIR))) == experiments.POPE_SIZE["coco"]
            )
    annotations = amber.load_annotations(fetch("amber/annotations", DEFAULT_DATA_DIR))
    queries = load_queries(fetch("amber/query/all", DEFAULT_DATA_DIR))
    sections = collections.Counter(amber_section(annotations[q.id - 1]) for q in queries)
    assert sections == experiments.AMBER_SIZES["coco"]


def test_unknown_notebook_or_dataset():
    with pytest.raises(ValueError, match="unknown notebook '07'"):
        experiments.notebook_runs("07", 10, "coco")
    with pytest.raises(ValueError, match="unknown dataset kind 'gqa'"):
        experiments.notebook_runs("04", 10, "gqa")


# --------------------------------------------------------------------------- plan


def test_plan_sums_runs_questions_and_minutes_per_group():
    runs = experiments.notebook_runs("04", 40, "coco")
    table = budget.plan(runs, "T4", "llava")
    assert list(table.index) == [
        "datasets × splits × methods",
        "controls (random mask, zeroed image)",
        "α × λ sweep (AvisC)",
        "total",
    ]
    assert table.loc["total", "runs"] == len(runs) == table["runs"].iloc[:-1].sum()
    assert table.loc["total", "questions"] == sum(r.questions for r in runs)
    assert table.loc["total", "minutes"] == pytest.approx(budget.estimate(runs, "T4", "llava") / 60, abs=0.1)


@pytest.mark.parametrize(
    ("gpu", "model", "why"),
    [(None, "llava", "no GPU the cost model knows"), ("T4", "tiny", "no cost figures for 'tiny'")],
)
def test_plan_without_an_estimate_shows_counts_and_says_why(capsys, gpu, model, why):
    table = budget.plan(experiments.notebook_runs("05", 10, "synthetic"), gpu, model)
    assert list(table.columns) == ["runs", "questions"]
    assert table.loc["total", "questions"] == 27 * 4 * 10
    assert why in capsys.readouterr().out


# --------------------------------------------------------------------------- progress


def test_progress_prints_rate_and_eta_in_one_line(capsys):
    progress = budget.Progress(20_010)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        progress.update(10, 5.0)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert "10 of 20,010 questions done" in lines[0] and "2.00 questions/s" in lines[0]
    assert lines[0].endswith("ETA 2 h 47 min for the rest of the plan")  # 20,000 questions at 2 per second


def test_progress_rate_ignores_skipped_questions(capsys):
    progress = budget.Progress(1000)
    progress.skip(500)
    assert capsys.readouterr().out == ""
    progress.update(10, 5.0)
    assert re.search(r"510 of 1,000 .* 2\.00 questions/s; ETA 4 min", capsys.readouterr().out)  # 490 / 2 s


def test_progress_tracks_a_run_folder(tmp_path, capsys):
    progress = budget.Progress(100)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("{}\n" * 30)  # a resumed run: 30 answers from before
    with progress.track(tmp_path):
        answers.write_text("{}\n" * 50)
    assert (progress.done, progress.measured) == (50, 20)
    assert "50 of 100 questions done" in capsys.readouterr().out
    with progress.track(tmp_path):  # a finished run: nothing new, nothing printed
        pass
    assert capsys.readouterr().out == "" and progress.done == 100


def test_gpu_pope_grid_is_sampled_with_plain_sampling_as_base():
    """GPU profiles run notebook 04 under the paper's protocol: sampled runs, "sample" as baseline."""
    gpu = [r for r in experiments.notebook_runs("04", 10, "coco") if r.group.startswith("datasets")]
    tiny = [r for r in experiments.notebook_runs("04", 10, "synthetic") if r.group.startswith("datasets")]
    assert all(r.do_sample for r in gpu) and not any(r.do_sample for r in tiny)
    assert {r.method for r in gpu} == {"sample", "vcd", "m3id", "avisc"}
    assert {r.method for r in tiny} == {"greedy", "vcd", "m3id", "avisc"}


def test_progress_reports_the_first_run_then_once_a_minute(capsys):
    progress = budget.Progress(1000, every=60.0)
    for seconds in (10.0, 20.0, 29.0, 12.0):  # measured work: 10, 30, 59, 71 s (61 s after the first line)
        progress.update(10, seconds)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("10 of") and lines[1].startswith("40 of")


def test_every_decode_method_has_a_cost():
    for method in METHODS:
        assert budget.estimate([budget.Run("pope", method, 8)], "T4", "llava") > 0
