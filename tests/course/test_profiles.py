"""Profile resolution: the same notebook cells pick the right model, placement and sizes."""

import importlib.util
import warnings
from dataclasses import replace

import pytest
import torch

from avisc_lib.course import budget, experiments, profiles
from avisc_lib.course.profiles import LIMITS, SESSION_MINUTES, resolve_profile
from avisc_lib.models import placement
from avisc_lib.models.placement import FP16_MIN_GIB

NOTEBOOKS = ("04", "05", "06")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for variable in ("AVISC_PROFILE", "AVISC_MODEL", "AVISC_DEVICE", "AVISC_LIMIT", "AVISC_RUNS_DIR", "AVISC_PLAN"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def bitsandbytes(monkeypatch):
    """bitsandbytes importable, whether or not it is installed here."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        placement.importlib.util, "find_spec", lambda name: object() if name == "bitsandbytes" else real(name)
    )


def minutes(profile, notebook, gpu):
    runs = experiments.notebook_runs(notebook, profile.limit, profile.dataset)
    return budget.estimate(runs, gpu, profile.name, quantized=profile.quantization == "4bit") / 60


def test_default_is_tiny_on_cpu():
    p = resolve_profile(gpu_gib=0)
    assert (p.name, p.model, p.device, p.dtype, p.dataset) == ("tiny", "tiny", "cpu", torch.float32, "synthetic")


def test_default_is_llava_on_a_large_gpu():
    p = resolve_profile(gpu_gib=40)
    assert (p.model, p.device, p.dtype, p.quantization) == ("llava-hf/llava-1.5-7b-hf", "cuda", torch.float16, None)
    assert p.dataset == "coco" and p.gpu == "A100-40GB"


@pytest.mark.parametrize("name", ["llava", "instructblip"])
@pytest.mark.parametrize("gib", [40.0, 80.0])
def test_a100_sizes_are_finite_and_each_notebook_fits_20_minutes(name, gib):
    p = resolve_profile(name, gpu_gib=gib)
    assert isinstance(p.limit, int) and isinstance(p.n_samples, int)
    assert all(minutes(p, nb, p.gpu) <= 20 for nb in NOTEBOOKS)


@pytest.mark.parametrize("name", ["llava", "instructblip"])
def test_t4_in_4bit_sizes_fit_an_hour_per_notebook(bitsandbytes, name):
    p = resolve_profile(name, gpu_gib=15.0)
    assert (p.quantization, p.gpu) == ("4bit", "T4")
    assert all(minutes(p, nb, "T4") <= 60 for nb in NOTEBOOKS)


def test_notebook_04_plan_on_a_simulated_t4_stays_within_an_hour(bitsandbytes, capsys):
    table = resolve_profile("llava", gpu_gib=15.0).plan("04")
    assert table.loc["total", "minutes"] <= 60
    assert capsys.readouterr().out == ""  # an estimate, no "counts only" note


@pytest.mark.parametrize("gib", [15.0, 24.0, 40.0])
def test_the_limit_is_the_largest_round_size_that_fits(bitsandbytes, gib):
    p = resolve_profile("llava", gpu_gib=gib)
    bigger = LIMITS[LIMITS.index(p.limit) + 1]
    too_big = [minutes(replace(p, limit=bigger), nb, p.gpu) for nb in NOTEBOOKS]
    assert max(too_big) > SESSION_MINUTES[p.gpu]


@pytest.mark.parametrize("gpu", budget.GPUS)
@pytest.mark.parametrize("name", ["llava", "instructblip"])
def test_fp16_threshold_agrees_with_the_memory_arithmetic(gpu, name):
    assert (budget.GPUS[gpu].memory_gib >= FP16_MIN_GIB[name]) == budget.fits_fp16(gpu, name)


def test_environment_variable_selects_the_profile(monkeypatch):
    monkeypatch.setenv("AVISC_PROFILE", "instructblip")
    assert resolve_profile(gpu_gib=40).model == "Salesforce/instructblip-vicuna-7b"


def test_explicit_name_beats_environment(monkeypatch):
    monkeypatch.setenv("AVISC_PROFILE", "llava")
    assert resolve_profile("tiny", gpu_gib=40).model == "tiny"


def test_t4_without_bitsandbytes_explains_what_to_do(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        placement.importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real(name)
    )
    with pytest.raises(RuntimeError, match="pip install bitsandbytes"):
        resolve_profile("llava", gpu_gib=14.7)


def test_7b_profile_on_cpu_is_refused():
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*AVISC_DEVICE=cpu"):
        resolve_profile("llava", gpu_gib=0)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'gpt'"):
        resolve_profile("gpt", gpu_gib=0)


def test_t4_with_bitsandbytes_falls_back_to_4bit(bitsandbytes):
    p = resolve_profile("llava", gpu_gib=14.7)
    assert (p.quantization, p.dtype, p.device) == ("4bit", torch.float16, "cuda")


def test_model_override_keeps_the_rest(monkeypatch):
    monkeypatch.setenv("AVISC_MODEL", "/models/my-llava")
    p = resolve_profile("tiny", gpu_gib=0)
    assert (p.model, p.device, p.dataset) == ("/models/my-llava", "cpu", "synthetic")


# --------------------------------------------------------------------------- AVISC_LIMIT


@pytest.mark.parametrize(("name", "gib"), [("tiny", 0), ("llava", 40.0)])
def test_limit_sets_questions_per_split_and_caps_samples(monkeypatch, name, gib):
    samples = resolve_profile(name, gpu_gib=gib).n_samples
    monkeypatch.setenv("AVISC_LIMIT", "7")
    assert (resolve_profile(name, gpu_gib=gib).limit, resolve_profile(name, gpu_gib=gib).n_samples) == (7, 7)
    monkeypatch.setenv("AVISC_LIMIT", " 1000 ")
    p = resolve_profile(name, gpu_gib=gib)
    assert (p.limit, p.n_samples) == (1000, samples)


def test_limit_full_runs_the_full_benchmarks_and_the_plan_says_how_long(monkeypatch):
    monkeypatch.setenv("AVISC_LIMIT", "full")
    p = resolve_profile("llava", gpu_gib=40.0)
    assert p.limit is None and p.n_samples == profiles.GPU_SAMPLES
    assert {r.questions for r in p.runs("04") if r.group.startswith("datasets")} == {3000}
    assert p.plan("04").loc["total", "minutes"] > 60  # hours: shown before anything runs


@pytest.mark.parametrize("value", ["abc", "0", "-3", "2.5", "all"])
def test_bad_limit_names_the_variable_and_accepted_values(monkeypatch, value):
    monkeypatch.setenv("AVISC_LIMIT", value)
    with pytest.raises(ValueError, match=rf"AVISC_LIMIT='{value}'; expected an integer >= 1 or 'full'"):
        resolve_profile("tiny", gpu_gib=0)


# --------------------------------------------------------------------------- AVISC_DEVICE


@pytest.mark.parametrize("gib", [0, 40.0])
def test_device_cpu_runs_a_gpu_profile_on_cpu_with_a_printed_note(monkeypatch, capsys, gib):
    monkeypatch.setenv("AVISC_DEVICE", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = resolve_profile("llava", gpu_gib=gib)
    assert (p.device, p.dtype, p.quantization, p.dataset, p.gpu) == ("cpu", torch.float32, None, "coco", None)
    assert isinstance(p.limit, int)
    assert "AVISC_DEVICE=cpu" in capsys.readouterr().out


def test_device_cpu_defaults_to_the_tiny_profile(monkeypatch):
    monkeypatch.setenv("AVISC_DEVICE", "cpu")
    assert (resolve_profile(gpu_gib=40.0).name, resolve_profile("tiny", gpu_gib=40.0).device) == ("tiny", "cpu")


def test_device_cuda_needs_a_gpu(monkeypatch):
    monkeypatch.setenv("AVISC_DEVICE", "cuda")
    assert resolve_profile("tiny", gpu_gib=40.0).device == "cuda"
    with pytest.raises(RuntimeError, match="AVISC_DEVICE=cuda, but no CUDA GPU"):
        resolve_profile("tiny", gpu_gib=0)


def test_unknown_device_names_the_variable_and_accepted_values(monkeypatch):
    monkeypatch.setenv("AVISC_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"AVISC_DEVICE='tpu'; expected one of \('cpu', 'cuda'\)"):
        resolve_profile("tiny", gpu_gib=0)


# --------------------------------------------------------------------------- AVISC_RUNS_DIR


def test_runs_dir_defaults_beside_the_figures(monkeypatch, tmp_path):
    monkeypatch.setenv("AVISC_FIGURES", str(tmp_path / "figures"))
    assert resolve_profile("tiny", gpu_gib=0).runs_dir == tmp_path / "runs" / "notebooks" / "tiny"


def test_runs_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AVISC_RUNS_DIR", str(tmp_path / "drive"))
    assert resolve_profile("llava", gpu_gib=40.0).runs_dir == tmp_path / "drive" / "llava"


def test_readme_states_the_profiles_fp16_thresholds():
    """The README's model table and FP16_MIN_GIB say the same GPU memory for fp16."""
    import re
    from pathlib import Path

    row = next(
        line
        for line in (Path(__file__).parents[2] / "README.md").read_text().splitlines()
        if line.startswith("| where it runs")
    )
    stated = [float(x) for x in re.findall(r"GPU ≥ (\d+) GiB in fp16", row)]
    assert stated == [FP16_MIN_GIB["llava"], FP16_MIN_GIB["instructblip"]]


def power_minutes(profile, limit, model):
    runs = experiments.notebook_runs("04", limit, profile.dataset, "power", model)
    return budget.estimate(runs, profile.gpu, profile.name, quantized=profile.quantization == "4bit") / 60


@pytest.mark.parametrize("name", ["llava", "instructblip"])
@pytest.mark.parametrize("gib", [15.0, 24.0, 40.0, 80.0])
def test_the_power_design_takes_the_most_questions_a_session_allows(bitsandbytes, monkeypatch, name, gib):
    monkeypatch.setenv("AVISC_PLAN", "power")
    p = resolve_profile(name, gpu_gib=gib)
    assert p.design == "power" and p.design_for("04") == "power" and p.design_for("05") == "breadth"
    assert p.limit_for("04") == p.power_limit and p.limit_for("06") == p.limit
    assert power_minutes(p, p.power_limit, name) <= SESSION_MINUTES[p.gpu]
    if p.power_limit is not None:  # the next round size does not fit
        assert power_minutes(p, LIMITS[LIMITS.index(p.power_limit) + 1], name) > SESSION_MINUTES[p.gpu]
    assert p.power_limit is None or p.power_limit > p.limit  # one cell, many more questions than breadth's
    specs = experiments.grid("04", p.dataset, p.limit_for("04"), design="power", model=name)
    assert [s.method for s in specs] == ["sample", "avisc", "random_mask"]
    assert {s.split for s in specs} == {"random" if name == "llava" else "adversarial"}  # the paper's largest gain


def test_the_plan_design_is_checked(monkeypatch):
    monkeypatch.setenv("AVISC_PLAN", "depth")
    with pytest.raises(ValueError, match="AVISC_PLAN"):
        resolve_profile("tiny", gpu_gib=0)
    with pytest.raises(ValueError, match="notebook 04's"):
        experiments.grid("05", "coco", 10, design="power")


def test_session_plans_say_how_many_sessions_a_full_run_takes():
    table = profiles.session_plans("04", design="power")
    for (_, gpu), row in table.iterrows():  # minutes are rounded: allow half a minute either way
        sessions, full = row["full run, sessions"], row["full run, minutes"]
        assert (sessions - 1) * SESSION_MINUTES[gpu] < full + 0.5 and full - 0.5 <= sessions * SESSION_MINUTES[gpu]
    assert (table["full run, minutes"] >= table["minutes"]).all()
    assert (profiles.session_plans("05")["full run, sessions"] >= 1).all()
