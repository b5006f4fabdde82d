"""Notebooks 04-06 under the ``llava`` profile pick the real benchmarks without edits.

A GPU is simulated: one cell, inserted after the parameters cell, wraps ``resolve_profile`` so
that it resolves the profile as on a 24 GiB GPU, checks that this is LLaVA-1.5-7B on the real
datasets, and then swaps in what this machine can run (a random tiny LLaVA folder on CPU, two
questions per split). Every other cell is the notebook's own. The question files are the real
POPE and AMBER files (the repository's ``data/``), MME's questions are the hand-written ones of
``tests/fixtures/mme`` (MME's own are not redistributable), and the images are synthetic scenes
saved under the questions' file names.
"""

import itertools
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from avisc_lib.benchmarks import fetch, load_queries, load_questions
from avisc_lib.benchmarks.images import pope_image_names
from avisc_lib.tiny.build import build_processor
from conftest import DATA, save_model_folder, scene_images, tiny_llava

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MME_SHEETS = Path(__file__).resolve().parent / "fixtures" / "mme"
MME_SUBTASKS = ("existence", "count", "position", "color")
LIMIT = 2

SIMULATED_GPU = """\
# Inserted by tests/test_notebooks_gpu_profile.py: stands in for a 24 GiB GPU.
import dataclasses

import avisc_lib
import torch

_resolve = avisc_lib.resolve_profile


def _resolve_on_cpu(name=None):
    real = _resolve(name, gpu_gib=24.0)
    assert (real.name, real.model, real.device, real.dtype, real.dataset, real.limit) == (
        "llava", "llava-hf/llava-1.5-7b-hf", "cuda", torch.float16, "coco", None), real
    return dataclasses.replace(real, model={model!r}, device="cpu", dtype=torch.float32, limit={limit}, batch_size=2)


avisc_lib.resolve_profile = _resolve_on_cpu
"""


def _mme_release(root: Path) -> dict[str, list[str]]:
    """An MME release folder holding the fixture questions of two images per subtask."""
    asked = {}
    for subtask in MME_SUBTASKS:
        lines = (MME_SHEETS / f"{subtask}.txt").read_text().splitlines()
        rows = [line.split("\t") for line in lines if line.strip()]
        images = list(dict.fromkeys(r[0] for r in rows))[:2]
        for image in images:
            text = "".join(f"{q}\t{gt}\n" for name, q, gt, *_ in rows if name == image)
            scene_images(root / subtask, [image])
            (root / subtask / Path(image).with_suffix(".txt").name).write_text(text)
        asked[subtask] = [q for name, q, *_ in rows if name == images[0]]
    return asked


@pytest.fixture(scope="module")
def gpu_world(tmp_path_factory):
    """Environment for the notebooks: data cache, image folders, and the tiny model folder."""
    root = tmp_path_factory.mktemp("gpu_world")
    data = root / "benchmarks"  # the question files come from the repository's data/; COCO images land here
    scene_images(data / "coco" / "val2014", pope_image_names(["coco", "aokvqa"], data))  # the on-demand cache
    gqa = scene_images(root / "gqa", pope_image_names(["gqa"], data))
    queries = json.loads((DATA / "AMBER" / "data" / "query" / "query_all.json").read_text())
    amber = scene_images(root / "amber", sorted({q["image"] for q in queries}))
    mme_questions = _mme_release(root / "MME_Benchmark_release_version")
    processor = build_processor()
    model = save_model_folder(root / "llava", tiny_llava(processor.tokenizer, kv_heads=2, seed=5), processor)
    env = {
        "AVISC_PROFILE": "llava",
        "AVISC_DATA_DIR": str(data),
        "GQA_IMAGES": str(gqa),
        "AMBER_IMAGES": str(amber),
        "MME_DIR": str(root / "MME_Benchmark_release_version"),
    }
    return {"env": env, "model": model, "data": data, "mme_questions": mme_questions}


def _run(stem: str, gpu_world, monkeypatch, tmp_path) -> Path:
    """Execute notebook ``stem`` with the simulated GPU cell; return its run folder."""
    for key, value in gpu_world["env"].items():
        monkeypatch.setenv(key, value)
    for key in ("AVISC_MODEL", "COCO_IMAGES"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AVISC_FIGURES", str(tmp_path / "figures"))
    notebook = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    parameters = next(i for i, c in enumerate(notebook.cells) if "AVISC_PROFILE = None" in c.source)
    source = SIMULATED_GPU.format(model=str(gpu_world["model"]), limit=LIMIT)
    notebook.cells.insert(parameters + 1, nbformat.v4.new_code_cell(source, id="simulated-gpu"))
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    assert list((tmp_path / "figures").glob("*.png")), "no figure saved"
    return tmp_path / "runs" / "notebooks" / "llava"


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _answers(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]


def test_pope_notebook_runs_coco_aokvqa_gqa(gpu_world, monkeypatch, tmp_path):
    runs = _run("04_pope", gpu_world, monkeypatch, tmp_path)
    for dataset, split in itertools.product(("coco", "aokvqa", "gqa"), ("random", "popular", "adversarial")):
        real = load_questions(fetch(f"pope/{dataset}/{split}", gpu_world["data"]))[:LIMIT]
        for method in ("greedy", "vcd", "m3id", "avisc"):
            folder = runs / f"pope_{dataset}_{split}_{method}"
            config = _config(folder)
            assert (config["dataset"], config["split"], config["limit"], config["model"]) == (
                dataset, split, LIMIT, str(gpu_world["model"]))  # fmt: skip
            assert [(a["question"], a["image"]) for a in _answers(folder)] == [(q.text, q.image) for q in real]
    assert len(list(runs.glob("pope_coco_adversarial_avisc_alpha*"))) == 20  # the α × λ sweep


def test_mme_notebook_runs_the_release_folder(gpu_world, monkeypatch, tmp_path):
    runs = _run("05_mme", gpu_world, monkeypatch, tmp_path)
    folders = sorted(runs.glob("mme_*"))
    assert len(folders) == 4 + 5 * 3  # argmax runs, then 5 sampled configurations × 3 seeds
    for folder in folders:
        assert (_config(folder)["dataset"], _config(folder)["split"]) == ("official", "hallucination")
    answers = _answers(runs / "mme_official_hallucination_avisc_seed0")
    for subtask, questions in gpu_world["mme_questions"].items():
        assert [a["question"] for a in answers if a["group"] == subtask] == questions


def test_amber_notebook_runs_the_real_amber(gpu_world, monkeypatch, tmp_path):
    runs = _run("06_amber", gpu_world, monkeypatch, tmp_path)
    folders = sorted(runs.glob("amber_*"))
    assert len(folders) == 4 + 5 * 3
    assert {_config(f)["dataset"] for f in folders} == {"official"}
    queries = load_queries(fetch("amber/query/all", gpu_world["data"]))
    answers = _answers(runs / "amber_official_greedy_seed0")
    assert [a["group"] for a in answers] == [g for g in ("generative", "attribute", "existence", "relation")
                                             for _ in range(LIMIT)]
    by_id = {q.id: q for q in queries}
    assert all(by_id[a["id"]].query == a["question"] for a in answers)
