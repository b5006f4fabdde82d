"""Profile resolution: the same notebook cells pick the right model and placement."""

import importlib.util

import pytest
import torch

from avisc_lib.profiles import resolve_profile

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


def test_default_is_tiny_on_cpu(monkeypatch):
    monkeypatch.delenv("AVISC_PROFILE", raising=False)
    p = resolve_profile(gpu_gib=0)
    assert (p.name, p.model, p.device, p.dtype, p.dataset) == ("tiny", "tiny", "cpu", torch.float32, "synthetic")


def test_default_is_llava_on_a_large_gpu(monkeypatch):
    monkeypatch.delenv("AVISC_PROFILE", raising=False)
    p = resolve_profile(gpu_gib=40)
    assert (p.model, p.device, p.dtype, p.quantization) == ("llava-hf/llava-1.5-7b-hf", "cuda", torch.float16, None)
    assert p.dataset == "coco" and p.limit is None


def test_environment_variable_selects_the_profile(monkeypatch):
    monkeypatch.setenv("AVISC_PROFILE", "instructblip")
    assert resolve_profile(gpu_gib=40).model == "Salesforce/instructblip-vicuna-7b"


def test_explicit_name_beats_environment(monkeypatch):
    monkeypatch.setenv("AVISC_PROFILE", "llava")
    assert resolve_profile("tiny", gpu_gib=40).model == "tiny"


@pytest.mark.skipif(HAS_BNB, reason="checks the message shown when bitsandbytes is missing")
def test_t4_without_bitsandbytes_explains_what_to_do():
    with pytest.raises(RuntimeError, match="pip install bitsandbytes"):
        resolve_profile("llava", gpu_gib=14.7)


def test_7b_profile_on_cpu_is_refused():
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        resolve_profile("llava", gpu_gib=0)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'gpt'"):
        resolve_profile("gpt", gpu_gib=0)


def test_t4_with_bitsandbytes_falls_back_to_4bit(monkeypatch):
    import avisc_lib.profiles as profiles

    real = importlib.util.find_spec
    monkeypatch.setattr(profiles.importlib.util, "find_spec",
                        lambda name: object() if name == "bitsandbytes" else real(name))
    p = resolve_profile("llava", gpu_gib=14.7)
    assert (p.quantization, p.dtype, p.device) == ("4bit", torch.float16, "cuda")


def test_model_override_keeps_the_rest(monkeypatch):
    monkeypatch.setenv("AVISC_MODEL", "/models/my-llava")
    p = resolve_profile("tiny", gpu_gib=0)
    assert (p.model, p.device, p.dataset) == ("/models/my-llava", "cpu", "synthetic")
