"""A method added from a file of its own (tests/methods/plugins/keep_top.py) runs through ``decode``,
``custom_generate``, the cost model and ``avisc-eval run``, in fresh interpreters (the registry
of this process stays the built-in one)."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent / "plugins" / "keep_top.py"
pytestmark = pytest.mark.slow  # fresh interpreters that load the tiny model

IN_PYTHON = """
import inspect, json, sys
import torch
import avisc_lib
from avisc_lib import methods
from avisc_lib.course import budget
from avisc_lib.settings import DecodeSettings
from avisc_lib.world.scenes import make_scene

methods.load(sys.argv[1])
model, processor = avisc_lib.load_model("tiny", device="cpu")
scenes = [make_scene("test", i) for i in range(2)]
inputs = avisc_lib.encode(model, processor, [s.image for s in scenes], ["Is there a red circle?"] * 2)
out = avisc_lib.decode(model, inputs, method="keep_top", top_tokens=3, max_new_tokens=4, return_dict=True)
greedy = avisc_lib.decode(model, inputs, method="greedy", max_new_tokens=4, return_dict=True)
loop = avisc_lib.custom_generate("keep_top", top_tokens=3)
generated = model.generate(**inputs, custom_generate=loop, max_new_tokens=4)
try:
    DecodeSettings("keep_top", top_tokens=0)
    refused = None
except ValueError as error:
    refused = str(error)
print(json.dumps({
    "methods": list(avisc_lib.METHODS),
    "kept": out.kept.sum(1).tolist(),
    "differs_from_greedy": not torch.equal(out.scores[0], greedy.scores[0]),
    "custom_generate_equal": torch.equal(generated[:, inputs["input_ids"].shape[1]:], out.sequences),
    "in_signature": "top_tokens" in inspect.signature(avisc_lib.decode).parameters,
    "used": sorted(DecodeSettings("keep_top").used_options()),
    "refused": refused,
    "cost_vs_avisc": budget.estimate([budget.Run("pope", "keep_top", 8)], "T4", "llava")
                     / budget.estimate([budget.Run("pope", "avisc", 8)], "T4", "llava"),
}))
"""


def test_a_method_from_a_file_decodes_and_generates():
    done = subprocess.run([sys.executable, "-c", IN_PYTHON, str(PLUGIN)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["methods"][-1] == "keep_top" and got["methods"][:-1][:2] == ["greedy", "sample"]
    assert got["kept"] == [3, 3]  # its branch kept the 3 most attended image tokens of each row
    assert got["differs_from_greedy"] and got["custom_generate_equal"] and got["in_signature"]
    assert {"top_tokens", "alpha", "beta"} <= set(got["used"]) and "lam" not in got["used"]
    assert got["refused"] == "top_tokens must be an int >= 1, got 0"
    assert got["cost_vs_avisc"] == pytest.approx(1.0)  # the same passes as AvisC


def test_a_method_from_a_file_runs_in_avisc_eval(tmp_path):
    script = Path(sysconfig.get_path("scripts")) / "avisc-eval"
    out = tmp_path / "run"
    argv = [
        str(script),
        "--methods-from",
        str(PLUGIN),
        "run",
        "pope",
        "--model",
        "tiny",
        "--method",
        "keep_top",
        "--top-tokens",
        "2",
        "--limit",
        "4",
        "--batch-size",
        "2",
        "--out",
        str(out),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "keep_top" and config["decode"]["top_tokens"] == 2
    assert len((out / "answers.jsonl").read_text().splitlines()) == 4
    help_text = subprocess.run([*argv[:3], "run", "pope", "--help"], capture_output=True, text=True, timeout=300).stdout
    assert "keep_top" in help_text and "--top-tokens" in help_text


def test_an_unloadable_method_file_is_named(tmp_path):
    script = Path(sysconfig.get_path("scripts")) / "avisc-eval"
    missing = tmp_path / "nowhere.py"
    done = subprocess.run(
        [str(script), "--methods-from", str(missing), "run", "pope", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and f"no method file at {missing}" in done.stderr
