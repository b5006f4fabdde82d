"""The lmms-eval model's ``dtype`` and ``quantization`` model args: the run profiles' rules when "auto"."""

import pytest
import torch

pytest.importorskip("lmms_eval", reason="lmms-eval is installed in .venv-lmms, where `make test` runs this file")

from avisc_lib.integrations import lmms
from avisc_lib.models import placement


@pytest.fixture
def loads(monkeypatch):
    """The ``load_model`` calls the model makes (nothing is loaded); a 15 GiB GPU (a T4)."""
    calls = []
    monkeypatch.setattr(lmms, "load_model", lambda name, **kwargs: calls.append((name, kwargs)) or (None, None))
    monkeypatch.setattr(placement, "gpu_memory_gib", lambda: 15.0)
    return calls


@pytest.mark.parametrize(
    "args, device, dtype, quantization",
    [
        ({}, "cuda", torch.float16, "4bit"),  # the T4 rule of the llava profile
        ({"dtype": "bfloat16", "quantization": "none"}, "cuda", torch.bfloat16, None),
        ({"quantization": "8bit"}, "cuda", torch.float16, "8bit"),
        ({}, "cpu", torch.float32, None),
    ],
)
def test_model_args_choose_dtype_and_quantization(loads, args, device, dtype, quantization):
    lmms.AviscModel(pretrained="llava-hf/llava-1.5-7b-hf", method="greedy", device=device, **args)
    assert loads == [("llava-hf/llava-1.5-7b-hf", {"device": device, "dtype": dtype, "quantization": quantization})]


def test_bad_values_are_refused(loads):
    with pytest.raises(ValueError, match="dtype must be 'auto' or one of"):
        lmms.AviscModel(pretrained="tiny", method="greedy", device="cpu", dtype="fp8")
    with pytest.raises(ValueError, match="quantization must be one of"):
        lmms.AviscModel(pretrained="tiny", method="greedy", device="cpu", quantization="2bit")
    assert loads == []
