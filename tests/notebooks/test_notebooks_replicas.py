"""Every notebook runs under the GPU profiles, unedited, on replicas of the real checkpoints.

A replica (:mod:`avisc_lib.models.replicas`) has the interfaces of ``llava-hf/llava-1.5-7b-hf`` or
``Salesforce/instructblip-vicuna-7b`` (tokenizer, id layout, chat template, image processing,
576 / 32 image tokens) at tiny width. Each notebook runs with the variables a user sets to run a
GPU profile elsewhere: ``AVISC_PROFILE``, ``AVISC_DEVICE=cpu``, ``AVISC_LIMIT=1``,
``AVISC_MODEL=<replica folder>``. Two cells are inserted, nothing else changes:

* after the parameters cell, one that first resolves the profile as a GPU would (24 GiB: fp16;
  a 15 GiB T4: 4-bit) and checks the result, then keeps that precision for the CPU run;
* at the end, one that checks what breaks silently on the real checkpoints: image tokens found by
  id, the 24 × 24 grid, the answer tokens the template makes the model say first ("▁Yes"/"▁No"),
  and finite attention and contrast logits in the notebook's precision.

The benchmark questions are the real POPE and AMBER files (``data/``) and MME-format fixtures; the
images are synthetic scenes saved under the real file names; notebooks 01-03 use the photographs.
Notebooks 04-07 also run with no image variable set and an empty data cache, as a Colab user first
meets them: each skips the benchmark parts it has no images for, says so in one line, and ends.

On a machine with a CUDA GPU, ``AVISC_TEST_DEVICE=cuda`` runs the same notebooks as a GPU user runs
them: no ``AVISC_DEVICE``, no inserted resolution cell (the profile resolves on the GPU that is
there), every replica at the checkpoints' 32 layers, and the final cell checks that the model is on it.
"""

import json
import os
from pathlib import Path

import nbformat
import pytest
from conftest import DATA, scene_images
from nbclient import NotebookClient
from notebook_rules import warnings_in

from avisc_lib import course
from avisc_lib.benchmarks import fetch, load_questions
from avisc_lib.benchmarks.images import pope_image_names
from avisc_lib.benchmarks.sources import image_variable
from avisc_lib.course import experiments
from avisc_lib.models.replicas import build_replica

pytestmark = pytest.mark.notebooks
NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MME_SHEETS = Path(__file__).resolve().parents[1] / "fixtures" / "mme"
# The runs with images decode every benchmark part with every method (notebook 04 alone: 36 runs): on
# the 32-layer replicas that costs tens of CPU minutes per notebook on 2 cores, so they use a language
# model of SHALLOW layers (still more than VAR's first searched layer, 2). The runs without images of
# 04-07 keep the checkpoints' 32 layers: they run every cell but the benchmark runs, notebook 07's
# per-layer loops (sink search over layers 2..31) included; tests/core/test_replicas.py covers the rest.
SHALLOW = 4
DEVICE = os.environ.get("AVISC_TEST_DEVICE", "cpu")  # "cuda": as a GPU user runs them (module docstring)
LIMIT = 1  # questions per split: the smallest run that exercises every path (MME keeps its image pairs)
# (replica, profile, GPU memory it is resolved for, quantization that implies, image tokens)
SETUPS = {
    "llava-fp16": ("llava-1.5", "llava", 24.0, None, 576),
    "instructblip-4bit": ("instructblip-vicuna", "instructblip", 15.0, "4bit", 32),
}

RESOLVE_AS_ON_A_GPU = """\
# Inserted by tests/notebooks/test_notebooks_replicas.py: the profile as a {gib:.0f} GiB GPU resolves it, run on CPU.
import dataclasses
import os

import torch
from avisc_lib import course

_resolve = course.resolve_profile


def _as_on_a_gpu(name=None):
    device = os.environ.pop("AVISC_DEVICE")
    try:
        gpu = _resolve(name, gpu_gib={gib})
    finally:
        os.environ["AVISC_DEVICE"] = device
    assert (gpu.name, gpu.device, gpu.dtype, gpu.quantization, gpu.dataset) == (
        {profile!r}, "cuda", torch.float16, {quantization!r}, "coco"), gpu
    return dataclasses.replace(_resolve(name), dtype=torch.float16, quantization=gpu.quantization)


course.resolve_profile = _as_on_a_gpu
"""

CHECK_THE_CHECKPOINT_INTERFACE = """\
# Inserted by tests/notebooks/test_notebooks_replicas.py: what breaks silently on the real checkpoints.
import torch
from PIL import Image

import avisc_lib
from avisc_lib.scores import contrast_logits

assert profile.dtype == torch.float16 and profile.quantization == {quantization!r}
assert profile.device == {device!r} and model.device.type == {device!r}, (profile.device, model.device)
_inputs = avisc_lib.encode(model, processor, [Image.new("RGB", (400, 300), "gray")], ["Is there a cat in the image?"])
_image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
assert int((_inputs["input_ids"] == _image_id).sum()) == {tokens}
assert avisc_lib.answer_token_ids(model, processor) == processor.tokenizer.convert_tokens_to_ids(["▁Yes", "▁No"])
_attention = avisc_lib.image_attention(model, _inputs)
assert _attention.shape[-1] == {tokens} and torch.isfinite(_attention).all()
_vocab = torch.arange(model.get_output_embeddings().weight.shape[0])
_blind = avisc_lib.select_blind_tokens(_attention)
_original = avisc_lib.answer_logits(model, _inputs, _vocab)
_biased = avisc_lib.answer_logits(model, _inputs, _vocab, replace=~_blind)
assert torch.isfinite(contrast_logits(_original, _biased, 2.5)).all()
if isinstance(globals().get("grid"), int):  # notebook 01's token grid
    assert grid ** 2 == {tokens} == 576
print("checkpoint interface checks passed")
"""


def _mme_release(root: Path) -> dict[str, list[str]]:
    """An MME release folder holding the fixture questions of two images per subtask."""
    asked = {}
    for subtask in ("existence", "count", "position", "color"):
        rows = [line.split("\t") for line in (MME_SHEETS / f"{subtask}.txt").read_text().splitlines() if line.strip()]
        images = list(dict.fromkeys(r[0] for r in rows))[:2]
        for image in images:
            scene_images(root / subtask, [image])
            text = "".join(f"{q}\t{gt}\n" for name, q, gt, *_ in rows if name == image)
            (root / subtask / Path(image).with_suffix(".txt").name).write_text(text)
        asked[subtask] = [q for name, q, *_ in rows if name == images[0]]
    return asked


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Replica folders, benchmark data cache with COCO images, GQA / AMBER / MME image folders."""
    root = tmp_path_factory.mktemp("replica_world")
    data = root / "benchmarks"  # question files come from data/; the COCO images land here, as downloaded
    scene_images(data / "coco" / "val2014", pope_image_names(["coco", "aokvqa"], data))
    queries = json.loads((DATA / "AMBER" / "data" / "query" / "query_all.json").read_text())
    env = {
        **({"AVISC_DEVICE": "cpu"} if DEVICE == "cpu" else {}),
        "AVISC_LIMIT": str(LIMIT),
        "AVISC_DATA_DIR": str(data),
        "GQA_IMAGES": str(scene_images(root / "gqa", pope_image_names(["gqa"], data))),
        "AMBER_IMAGES": str(scene_images(root / "amber", sorted({q["image"] for q in queries}))),
        "MME_DIR": str(root / "MME_Benchmark_release_version"),
    }
    names = ("llava-1.5", "instructblip-vicuna")
    folders = {name: build_replica(name, root / name) for name in names}
    if DEVICE == "cpu":  # see SHALLOW; a GPU runs every notebook at full depth
        shallow = {name: build_replica(name, root / f"{name}-shallow", layers=SHALLOW) for name in names}
    return {
        "root": root,
        "data": data,
        "env": env,
        "mme": _mme_release(Path(env["MME_DIR"])),
        "folders": folders,
        "shallow": shallow if DEVICE == "cpu" else folders,
    }


IMAGE_VARIABLES = ("COCO_IMAGES", "GQA_IMAGES", "MME_DIR", "AMBER_IMAGES")
# What notebooks 04-07 print without images: one line per benchmark and dataset they skip.
SKIPPED = {
    "04_pope": ("skipped pope coco ", "skipped pope aokvqa ", "skipped pope gqa "),
    "05_mme": ("skipped mme official ",),
    "06_amber": ("skipped amber official ",),
    "07_beyond_avisc": ("skipped pope coco ", "skipped mme official ", "skipped amber official "),
}


def _execute(path: Path, setup: str, world, monkeypatch, tmp_path, images: bool = True):
    """Run notebook ``path`` under ``setup`` (``images``: with every image variable set, else with
    none and an empty data cache); return its run folder and the executed notebook."""
    replica, profile, gib, quantization, tokens = SETUPS[setup]
    for key, value in world["env"].items():
        monkeypatch.setenv(key, value)
    if not images:
        for key in IMAGE_VARIABLES:
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("AVISC_DATA_DIR", str(tmp_path / "empty_cache"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # MME's hub dataset is not in the (empty) cache either
    monkeypatch.setenv("AVISC_PROFILE", profile)
    monkeypatch.setenv("AVISC_MODEL", str(world["shallow" if images else "folders"][replica]))
    monkeypatch.setenv("AVISC_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("AVISC_FIGURES", str(tmp_path / "figures"))
    monkeypatch.delenv("COCO_IMAGES", raising=False)
    notebook = nbformat.read(path, as_version=4)
    values = {"gib": gib, "profile": profile, "quantization": quantization, "tokens": tokens, "device": DEVICE}
    if DEVICE == "cpu":
        parameters = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
        cell = nbformat.v4.new_code_cell(RESOLVE_AS_ON_A_GPU.format(**values), id="gpu")
        notebook.cells.insert(parameters + 1, cell)
    else:  # the GPU that is there resolves the profile
        values["quantization"] = course.resolve_profile(profile).quantization
    notebook.cells.append(nbformat.v4.new_code_cell(CHECK_THE_CHECKPOINT_INTERFACE.format(**values), id="check"))
    NotebookClient(
        notebook, timeout=2400, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    assert "checkpoint interface checks passed" in notebook.cells[-1].outputs[0]["text"]
    assert not warnings_in(notebook)
    if path.stem == "01_attention_bias":  # the blank-image cell prints the token count it found
        assert any(f"{tokens} image tokens" in o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert path.stem == "00_setup" or not images or list((tmp_path / "figures").glob("*.png")), "no figure saved"
    return tmp_path / "runs" / profile, notebook


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _answers(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]


def _specs(notebook: str, group: str) -> list:
    return [s for s in experiments.grid(notebook, "coco", LIMIT) if s.group == group]


def _check_pope_runs(runs: Path, world) -> None:
    """Every dataset × split × method ran the paper protocol on the real questions; controls and sweep ran."""
    for spec in _specs("04", experiments.METHODS) + _specs("04", experiments.CONTROLS):
        real = load_questions(fetch(f"pope/{spec.dataset}/{spec.split}", world["data"]))[:LIMIT]
        config = _config(runs / spec.folder)
        assert (config["dataset"], config["split"], config["limit"], config["protocol"]) == (
            spec.dataset, spec.split, LIMIT, "paper")  # fmt: skip
        assert [(a["question"], a["image"]) for a in _answers(runs / spec.folder)] == [(q.text, q.image) for q in real]
    assert all((runs / s.folder / "metrics.json").is_file() for s in _specs("04", experiments.SWEEP))


def _check_mme_runs(runs: Path, world) -> None:
    folders = sorted(runs.glob("mme_*"))
    argmax, sampled = _specs("05", experiments.ARGMAX), _specs("05", experiments.SAMPLED_RUNS)
    assert {f.name for f in folders} == {s.folder for s in argmax + sampled}
    assert {(_config(f)["dataset"], _config(f)["split"]) for f in folders} == {("official", "hallucination")}
    assert {_config(runs / s.folder)["protocol"] for s in sampled} == {"paper"}
    answers = _answers(runs / next(s for s in argmax if s.method == "avisc").folder)
    for subtask, questions in world["mme"].items():
        assert [a["question"] for a in answers if a["group"] == subtask] == questions


def _check_amber_runs(runs: Path, world) -> None:
    folders = sorted(runs.glob("amber_*"))
    specs = _specs("06", experiments.ARGMAX) + _specs("06", experiments.SAMPLED_RUNS)
    assert {f.name for f in folders} == {s.folder for s in specs}
    assert {_config(f)["dataset"] for f in folders} == {"official"}
    answers = _answers(runs / specs[0].folder)  # greedy, argmax
    sections = ("generative", "attribute", "existence", "relation")
    assert [a["group"] for a in answers] == [g for g in sections for _ in range(LIMIT)]


RUN_CHECKS = {"04_pope": _check_pope_runs, "05_mme": _check_mme_runs, "06_amber": _check_amber_runs}


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_replica(path, setup, world, monkeypatch, tmp_path):
    runs, _ = _execute(path, setup, world, monkeypatch, tmp_path)
    if path.stem in RUN_CHECKS:
        RUN_CHECKS[path.stem](runs, world)


def _printed(notebook) -> list[str]:
    return [line for c in notebook.cells for o in c.get("outputs", []) for line in o.get("text", "").splitlines()]


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem in SKIPPED], ids=lambda p: p.stem)
def test_notebook_without_images_skips_and_says_what_to_set(path, setup, world, monkeypatch, tmp_path):
    runs, notebook = _execute(path, setup, world, monkeypatch, tmp_path, images=False)
    skipped = [line for line in _printed(notebook) if line.startswith("skipped ")]
    assert len(skipped) == len(SKIPPED[path.stem]), skipped
    for start, line in zip(SKIPPED[path.stem], skipped):  # one line each, naming the variable to set
        benchmark, dataset = start.split()[1:]
        assert line.startswith(start) and image_variable(benchmark, dataset) in line, line
    assert not runs.exists(), "a skipped benchmark made a run"
