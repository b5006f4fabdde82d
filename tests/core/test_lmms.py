"""The lmms-eval model: registration, request handling, and POPE end to end against ``avisc-eval run``.

lmms-eval lives in its own environment, ``.venv-lmms`` (``make install-lmms``); ``make test`` runs
this file there. In ``.venv`` it skips.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is installed in .venv-lmms, where `make test` runs this file")

from lmms_eval.api.instance import Instance
from lmms_eval.models import get_model

from avisc_lib.benchmarks import synthetic
from avisc_lib.benchmarks.cli import main as avisc_eval
from avisc_lib.integrations.lmms import AviscModel, cut_at, task_options

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lmms"
QUESTIONS = 12


def test_lmms_eval_command_runs():
    done = subprocess.run([sys.executable, "-m", "lmms_eval", "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: lmms-eval")


def test_entry_point_registers_the_model():
    assert get_model("avisc") is AviscModel


def test_task_options():
    greedy = {"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False, "until": "\n"}
    assert task_options(greedy) == ({"max_new_tokens": 16, "do_sample": False}, ["\n"])
    sampled = {"max_new_tokens": 8, "do_sample": True, "temperature": 0.5, "top_p": 0.9}
    assert task_options(sampled) == ({"max_new_tokens": 8, "do_sample": True, "temperature": 0.5, "top_p": 0.9}, [])
    with pytest.raises(ValueError, match="num_beams"):
        task_options({"num_beams": 3})
    with pytest.raises(ValueError, match="repetition_penalty"):
        task_options({"repetition_penalty": 1.1})
    assert cut_at("Yes.\nUSER: more", ["\n", "USER:"]) == "Yes."


def test_model_args_are_validated_and_loglikelihood_names_the_alternative():
    with pytest.raises(ValueError, match="alpha"):
        AviscModel(pretrained="tiny", method="avisc", alpha=-2)
    with pytest.raises(ValueError, match="unknown method"):
        AviscModel(pretrained="tiny", method="beam")
    model = AviscModel(pretrained="tiny", method="vcd", batch_size=2)
    request = Instance(
        request_type="loglikelihood",
        arguments=("Is there a dog?", " yes"),
        idx=0,
        metadata={"task": "t", "doc_id": 0, "repeats": 1},
    )
    with pytest.raises(NotImplementedError, match="generate_until"):
        model.loglikelihood([request])


def local_pope_task(folder: Path, answers: list[dict]) -> Path:
    """``folder`` holding the pope_local task: the fixture's yaml and utils, the questions as jsonl, the images."""
    folder.mkdir()
    for name in ("pope_local.yaml", "utils.py"):
        shutil.copy(FIXTURES / name, folder / name)
    with open(folder / "pope_local.jsonl", "w") as f:
        for record in answers:
            image = folder / record["image"]
            if not image.exists():
                synthetic.load_image(record["image"]).save(image)
            doc = {
                "question_id": record["id"],
                "question": record["question"],
                "answer": record["label"],
                "image_path": str(image),
            }
            f.write(json.dumps(doc) + "\n")
    return folder


@pytest.mark.slow
def test_lmms_eval_pope_metrics_equal_avisc_eval(tmp_path):
    run = tmp_path / "avisc_eval"
    argv = [
        "run",
        "pope",
        "--model",
        "tiny",
        "--method",
        "avisc",
        "--alpha",
        "2.5",
        "--out",
        str(run),
        "--dataset",
        "synthetic",
        "--split",
        "adversarial",
        "--limit",
        str(QUESTIONS),
        "--batch-size",
        "4",
    ]
    assert avisc_eval(argv) == 0
    answers = [json.loads(line) for line in (run / "answers.jsonl").read_text().splitlines()]
    ours = json.loads((run / "metrics.json").read_text())
    assert {a["answer"] for a in answers} <= {"yes", "no"}, "lmms-eval's POPE rule needs bare yes/no answers"

    tasks = local_pope_task(tmp_path / "tasks", answers)
    out = tmp_path / "lmms"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "avisc",
        "--model_args",
        "pretrained=tiny,method=avisc,alpha=2.5",
        "--tasks",
        "pope_local",
        "--include_path",
        str(tasks),
        "--batch_size",
        "4",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    done = subprocess.run(command, cwd=tasks, env=env, capture_output=True, text=True, timeout=600)
    files = list(out.rglob("*_results.json"))  # lmms-eval logs a failed evaluation and still exits 0
    assert done.returncode == 0 and files, done.stderr[-3000:]
    results = json.loads(files[0].read_text())["results"]["pope_local"]
    theirs = {name: results[f"pope_{name},none"] for name in ("accuracy", "precision", "recall")}
    theirs["f1"] = results["pope_f1_score,none"]
    assert theirs == pytest.approx({name: ours[name] for name in theirs}, abs=1e-12)
    # lmms-eval's pope_yes_ratio is the share of "yes" labels, not of "yes" answers as ours.
    assert results["pope_yes_ratio,none"] == pytest.approx(sum(a["label"] == "yes" for a in answers) / len(answers))
    samples = [json.loads(line) for line in next(out.rglob("*pope_local*.jsonl")).read_text().splitlines()]
    predictions = {s["pope_accuracy"]["question_id"]: s["pope_accuracy"]["prediction"] for s in samples}
    assert predictions == {a["id"]: a["answer"] for a in answers}
