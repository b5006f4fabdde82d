"""The staged trainer runs end to end, checkpoints, resumes, and is deterministic for a seed."""

import json

import pytest
import torch
from safetensors.torch import load_file

from avisc_lib.tiny import train

TINY_RUN = ["--steps0", "3", "--steps1", "2", "--steps2", "3", "--bs0", "4", "--bs", "4", "--threads", "1"]


@pytest.mark.slow  # trains three times: about 35-50 s
def test_training_is_deterministic_and_resumable(tmp_path):
    train.main(["--out", str(tmp_path / "a"), *TINY_RUN])
    train.main(["--out", str(tmp_path / "b"), *TINY_RUN])
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert sorted(log["stages"]) == ["0", "1", "2"]
    assert {"accuracy", "yes_ratio", "adversarial"} <= set(log["stages"]["2"]["history"][-1])

    (tmp_path / "a" / "stage2.pt").unlink()  # as if killed during stage 2
    train.main(["--out", str(tmp_path / "a"), *TINY_RUN])
    again = load_file(tmp_path / "a" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], again[k]) for k in a)


def test_lr_schedule_warms_up_then_decays():
    assert train.lr_schedule(0, 1000) == 0.01
    assert train.lr_schedule(99, 1000) == 1.0
    assert train.lr_schedule(999, 1000) < 0.01
