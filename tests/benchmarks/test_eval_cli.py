"""``avisc-eval score ...`` end to end, and where the pinned benchmark files come from: the repository's
``data/`` offline, else a verified download (mocked)."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import DATA, scene_images

from avisc_lib.benchmarks import download
from avisc_lib.benchmarks.amber import load_queries
from avisc_lib.benchmarks.cli import build_parser, main
from avisc_lib.benchmarks.pope import load_questions
from avisc_lib.benchmarks.tasks import build_task

POPE_KEYS = ["TP", "FP", "TN", "FN", "accuracy", "precision", "recall", "f1", "yes_ratio"]
BLOCK_KEYS = ["accuracy", "precision", "recall", "f1"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("parser, accuracy", [("official", 0.5), ("avisc", 1.0)])
def test_score_pope(tmp_path, capsys, parser, accuracy):
    questions = DATA / "POPE/output/coco/coco_pope_adversarial.json"
    labels = [json.loads(line)["label"] for line in questions.read_text().splitlines()]
    answers = _jsonl(tmp_path / "answers.jsonl", [{"answer": "Yes." if lab == "yes" else "NO"} for lab in labels])
    code, result, _ = _run(
        capsys, "score", "pope", "--questions", str(questions), "--answers", str(answers), "--parser", parser
    )
    assert code == 0 and list(result) == [*POPE_KEYS, "intervals"]
    assert result["accuracy"] == accuracy  # the official parser reads "NO" as yes
    assert result["intervals"]["accuracy"]["value"] == accuracy
    assert result["intervals"]["accuracy"]["low"] < accuracy <= result["intervals"]["accuracy"]["high"]


def test_score_pope_strict_refuses_unclear_answers(tmp_path, capsys):
    questions = DATA / "POPE/output/coco/coco_pope_random.json"
    answers = _jsonl(tmp_path / "a.jsonl", [{"question_id": i + 1, "answer": "I think so"} for i in range(3000)])
    code, _, err = _run(
        capsys,
        "score",
        "pope",
        "--questions",
        str(questions),
        "--answers",
        str(answers),
        "--parser",
        "strict",
    )
    assert code == 1 and "3000 of 3000 answers are not a clear yes/no" in err


def test_score_mme(capsys):
    sheets = Path(__file__).resolve().parents[1] / "fixtures" / "mme"  # worked by hand in test_mme.py
    code, result, _ = _run(capsys, "score", "mme", "--results-dir", str(sheets))
    assert code == 0 and list(result) == ["subtasks", "perception", "cognition", "hallucination", "intervals"]
    assert result["intervals"]["subtasks.count.score"]["value"] == 125.0
    assert result["subtasks"]["count"] == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0}
    assert round(result["perception"], 2) == 1275 and round(result["cognition"], 2) == 475


@pytest.mark.parametrize(
    "task, keys",
    [
        ("d", ["discriminative"]),
        ("g", ["generative"]),
        ("a", ["discriminative", "generative", "amber_score"]),
    ],
)
def test_score_amber(tmp_path, capsys, task, keys):
    responses = tmp_path / "responses.json"
    responses.write_text(
        json.dumps([{"id": 1, "response": "A person on a road with a dog."}, {"id": 8633, "response": "No"}])
    )
    annotations = DATA / "AMBER/data/annotations.json"
    code, result, err = _run(
        capsys,
        "score",
        "amber",
        "--responses",
        str(responses),
        "--annotations",
        str(annotations),
        "--task",
        task,
        "--backend",
        "builtin",
    )
    assert code == 0 and list(result) == [*keys, "intervals"]
    if "discriminative" in result:
        assert list(result["discriminative"]) == [
            "overall",
            "existence",
            "attribute",
            "state",
            "number",
            "action",
            "relation",
        ]
        assert list(result["discriminative"]["existence"]) == BLOCK_KEYS
        assert result["discriminative"]["existence"]["accuracy"] == 100.0
    if "generative" in result:
        assert result["generative"] == {"chair": 100 / 3, "cover": 200 / 7, "hal": 100.0, "cog": 20.0}
        assert "builtin backend" in err


def test_errors_go_to_stderr_with_status_1(tmp_path, capsys):
    code, _, err = _run(capsys, "score", "mme", "--results-dir", str(tmp_path / "absent"))
    assert code == 1 and err.startswith("avisc-eval: error: MME results folder")
    (tmp_path / "q.json").write_text('{"question_id": 1}\n')
    (tmp_path / "a.json").write_text('{"answer": "yes"}\n')
    code, _, err = _run(
        capsys,
        "score",
        "pope",
        "--questions",
        str(tmp_path / "q.json"),
        "--answers",
        str(tmp_path / "a.json"),
    )
    assert code == 1 and "q.json:1: missing field(s) 'image', 'text', 'label'" in err


def test_parser_layout_leaves_room_for_more_commands():
    parser = build_parser()
    args = parser.parse_args(["score", "pope", "--questions", "q", "--answers", "a"])
    assert (args.command, args.benchmark, args.parser) == ("score", "pope", "official")
    with pytest.raises(SystemExit):
        parser.parse_args(["score", "pope", "--questions", "q", "--answers", "a", "--parser", "vcd"])
    with pytest.raises(SystemExit):
        parser.parse_args([])


# --------------------------------------------------------------------------- download registry


def _offline(monkeypatch, tmp_path) -> None:
    """Every pinned source at an address that does not exist."""
    for source in download._SOURCES:
        monkeypatch.setitem(download._SOURCES, source, (tmp_path / "nowhere" / source).as_uri())


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """The package as installed: no repository ``data/`` beside it."""
    monkeypatch.setattr(download, "REPOSITORY_DATA", tmp_path / "site-packages" / "data")


def test_fetch_uses_the_repository_copy_offline(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    bundled = [entry for entry in download.FILES if not entry.path.startswith("MME/")]  # not redistributable
    assert len(bundled) == 22
    for entry in bundled:
        assert download.fetch(entry.name, tmp_path / "cache") == DATA / entry.path
    assert not (tmp_path / "cache").exists()


def test_fetch_refuses_a_corrupted_repository_copy(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    checkout = tmp_path / "checkout" / "data"
    shutil.copytree(DATA / "AMBER", checkout / "AMBER")
    (checkout / "AMBER/data/safe_words.txt").write_text("orange\n")
    monkeypatch.setattr(download, "REPOSITORY_DATA", checkout)
    bad = r"amber/safe_words: .*/AMBER/data/safe_words\.txt has sha256 "
    with pytest.raises(download.ChecksumError, match=bad):
        download.fetch("amber/safe_words", tmp_path / "cache")
    assert download.fetch("amber/relation", tmp_path / "cache") == checkout / "AMBER/data/relation.json"


def test_build_task_and_avisc_eval_work_offline_from_a_checkout(tmp_path, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    questions = load_questions(DATA / "POPE/output/seem/gqa/gqa_pope_seem_adversarial.json")[:2]
    images = scene_images(tmp_path / "gqa", {q.image for q in questions})
    task_cache = tmp_path / "cache"  # stays empty: the files come from the repository's data/
    task = build_task("pope", "gqa", "adversarial", limit=2, image_dir=images, data_dir=task_cache)
    assert [(q.id, q.text) for q in task.questions] == [(q.question_id, q.text) for q in questions]
    queries = load_queries(DATA / "AMBER/data/query/query_all.json")
    images = scene_images(tmp_path / "amber", sorted({q.image for q in queries[:1]}))
    amber_task = build_task("amber", "official", "generative", limit=1, image_dir=images, data_dir=task_cache)
    assert [q.text for q in amber_task.questions] == [queries[0].query]
    out = tmp_path / "run"
    argv = ["run", "pope", "--model", "tiny", "--method", "greedy", "--out", str(out), "--dataset", "gqa",
            "--split", "adversarial", "--limit", "2", "--image-dir", str(tmp_path / "gqa"),
            "--data-dir", str(task_cache)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert len((out / "answers.jsonl").read_text().splitlines()) == 2
    assert not task_cache.exists()


def test_fetch_downloads_verifies_and_caches(tmp_path, monkeypatch, installed):
    monkeypatch.setitem(download._SOURCES, "AMBER", (DATA / "AMBER").as_uri())
    path = download.fetch("amber/safe_words", tmp_path / "cache")
    assert path == tmp_path / "cache" / "AMBER/data/safe_words.txt"
    assert path.read_bytes() == (DATA / "AMBER/data/safe_words.txt").read_bytes()
    monkeypatch.setitem(download._SOURCES, "AMBER", (tmp_path / "nowhere").as_uri())
    assert download.fetch("amber/safe_words", tmp_path / "cache") == path  # cached: no download


def test_fetch_rejects_a_checksum_mismatch(tmp_path, monkeypatch, installed):
    mirror = tmp_path / "mirror"
    shutil.copytree(DATA / "AMBER", mirror)
    (mirror / "data/safe_words.txt").write_text("orange\n")
    monkeypatch.setitem(download._SOURCES, "AMBER", mirror.as_uri())
    with pytest.raises(download.ChecksumError, match="amber/safe_words from file://.*: sha256 "):
        download.fetch("amber/safe_words", tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.txt*"))  # nothing half-written is left


def test_fetch_errors_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="unknown benchmark file 'pope/coco/all'"):
        download.fetch("pope/coco/all", tmp_path)
    monkeypatch.setitem(download._SOURCES, "MME", (tmp_path / "nowhere").as_uri())
    with pytest.raises(OSError, match="could not download mme/eval_tool from file://"):
        download.fetch("mme/eval_tool", tmp_path)


# --------------------------------------------------------------------------- run: dataset, images, dtype


AVISC_EVAL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "avisc-eval"


def _avisc_eval(tmp_path, *argv: str, **env: str):
    """``avisc-eval argv`` as a user runs it: the installed script, a fresh process, no image variables."""
    import os
    import subprocess

    clean = {k: v for k, v in os.environ.items() if k not in ("COCO_IMAGES", "GQA_IMAGES", "MME_DIR", "AMBER_IMAGES")}
    clean |= {"AVISC_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run([str(AVISC_EVAL), *argv], capture_output=True, text=True, env=clean, timeout=300)


@pytest.mark.slow
def test_a_real_model_never_runs_the_synthetic_benchmark_by_default(tmp_path):
    done = _avisc_eval(
        tmp_path,
        "run",
        "pope",
        "--model",
        "llava-hf/llava-1.5-7b-hf",
        "--method",
        "greedy",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "avisc-eval: dataset coco (the default for model llava-hf/llava-1.5-7b-hf" in done.stderr
    assert "error: pope coco needs image_dir (--image-dir) or COCO_IMAGES" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_run_reads_the_image_variable_and_records_the_dtype(tmp_path):
    questions = load_questions(DATA / "POPE/output/coco/coco_pope_random.json")[:2]
    images = scene_images(tmp_path / "val2014", sorted({q.image for q in questions}))
    done = _avisc_eval(
        tmp_path,
        "run",
        "pope",
        "--model",
        "tiny",
        "--method",
        "greedy",
        "--limit",
        "2",
        "--split",
        "random",
        "--out",
        str(tmp_path / "out"),
        "--dataset",
        "coco",
        "--dtype",
        "bfloat16",
        COCO_IMAGES=str(images),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "avisc-eval: tiny on cpu in bfloat16" in done.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["dataset"], config["load"]) == ("coco", {"dtype": "bfloat16", "quantization": None})
    assert [json.loads(line)["image"] for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()] == [
        q.image for q in questions
    ]


def test_dataset_defaults_by_model_and_a_wrong_variable_is_named(tmp_path, monkeypatch, capsys):
    from avisc_lib.benchmarks.cli import default_dataset

    assert [default_dataset(b, "tiny") for b in ("pope", "mme", "amber")] == ["synthetic"] * 3
    assert [default_dataset(b, "llava") for b in ("pope", "mme", "amber")] == ["coco", "official", "official"]
    monkeypatch.setenv("COCO_IMAGES", str(tmp_path / "elsewhere"))
    run = ["run", "pope", "--model", "tiny", "--method", "greedy", "--limit", "2", "--out", str(tmp_path / "out")]
    assert main([*run, "--dataset", "coco"]) == 1
    assert f"image folder {tmp_path / 'elsewhere'} does not exist" in capsys.readouterr().err
    assert main(run) == 0
    assert "avisc-eval: dataset synthetic (the default for model tiny" in capsys.readouterr().err


def test_7b_model_on_a_small_gpu_loads_in_4bit(tmp_path, monkeypatch, capsys):
    import torch

    from avisc_lib.benchmarks import cli
    from avisc_lib.models import placement

    calls = []

    def run_benchmark(*args, **kwargs):
        calls.append(kwargs)
        raise ValueError("stopped before loading")

    monkeypatch.setattr(cli, "run_benchmark", run_benchmark)
    monkeypatch.setattr(cli, "run_device", lambda: "cuda")
    monkeypatch.setattr(placement, "gpu_memory_gib", lambda: 15.0)  # a T4
    argv = ["run", "pope", "--model", "llava", "--method", "greedy", "--out", str(tmp_path), "--dataset", "synthetic"]
    assert main(argv) == 1
    assert calls[-1]["load_options"] == {"dtype": torch.float16, "quantization": "4bit"}
    assert "avisc-eval: llava on cuda in float16, 4bit" in capsys.readouterr().err
    assert main([*argv, "--quantization", "none", "--dtype", "bfloat16"]) == 1
    assert calls[-1]["load_options"] == {"dtype": torch.bfloat16, "quantization": None}
    monkeypatch.setattr(placement.importlib.util, "find_spec", lambda name: None)  # no bitsandbytes
    assert main(argv) == 1 and len(calls) == 2
    assert "error: 15 GiB of GPU memory is too little for llava in fp16" in capsys.readouterr().err
