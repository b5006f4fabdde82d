"""Run profiles: one call that decides which model, device, dtype and data sizes a notebook uses.

    profile = resolve_profile()            # AVISC_PROFILE env var, else tiny on CPU, llava on a GPU
    model, processor = profile.load()

The same notebook cells then run on a laptop CPU (embedded tiny model, synthetic data, small
sizes) and on a Colab GPU (LLaVA-1.5-7B or InstructBLIP-7B, real benchmarks, full sizes).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace

import torch

from .models import ALIASES, load_model

PROFILES = ("tiny", "llava", "instructblip")
# Smallest GPU memory (GiB) that holds the 7B model in fp16 with room for two KV caches.
FP16_MIN_GIB = {"llava": 18.0, "instructblip": 20.0}


@dataclass(frozen=True)
class Profile:
    """What a notebook runs: model, placement and how much data."""

    name: str
    model: str
    device: str
    dtype: torch.dtype
    quantization: str | None
    dataset: str  # benchmark source: "synthetic" or "coco"
    n_samples: int  # images for statistics (observation, ablation)
    limit: int | None  # questions per benchmark split (None = all)
    batch_size: int

    def load(self):
        """``(model, processor)`` for this profile."""
        return load_model(self.model, device=self.device, dtype=self.dtype, quantization=self.quantization)


def gpu_memory_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def resolve_profile(name: str | None = None, *, gpu_gib: float | None = None) -> Profile:
    """Resolve ``name`` (or ``$AVISC_PROFILE``, or the hardware default) into a :class:`Profile`.

    ``gpu_gib`` overrides the detected GPU memory (for tests and planning). A 7B profile on a
    GPU too small for fp16 falls back to 4-bit when bitsandbytes is installed, and otherwise
    raises an error that says what to do. ``$AVISC_MODEL``, when set, replaces the profile's
    model by any name ``load_model`` accepts (a hub id or a local folder), keeping the rest.
    """
    profile = _hardware_profile(name, gpu_gib)
    override = os.environ.get("AVISC_MODEL")
    return replace(profile, model=override) if override else profile


def _hardware_profile(name: str | None, gpu_gib: float | None) -> Profile:
    gpu_gib = gpu_memory_gib() if gpu_gib is None else gpu_gib
    name = name or os.environ.get("AVISC_PROFILE") or ("llava" if gpu_gib else "tiny")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {PROFILES}")
    if name == "tiny":
        device = "cuda" if gpu_gib else "cpu"
        return Profile("tiny", "tiny", device, torch.float32, None, "synthetic", 120, 150, 32)
    if not gpu_gib:
        raise RuntimeError(
            f"profile {name!r} needs a CUDA GPU (a 7B model on CPU takes minutes per answer); "
            "use AVISC_PROFILE=tiny here, or a GPU runtime on Colab"
        )
    quantization = None
    if gpu_gib < FP16_MIN_GIB[name]:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeError(
                f"{gpu_gib:.0f} GiB of GPU memory is too little for {name} in fp16 "
                f"(needs ~{FP16_MIN_GIB[name]:.0f} GiB); `pip install bitsandbytes` for 4-bit loading"
            )
        quantization = "4bit"
    return Profile(name, ALIASES[name], "cuda", torch.float16, quantization, "coco", 200, None, 8)


def environment_report(profile: Profile) -> dict[str, str]:
    """What the notebook will run on: device, GPU, bf16 support, dtype and library versions."""
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "profile": profile.name,
        "model": profile.model,
        "device": profile.device,
        "gpu": torch.cuda.get_device_name(0) if cuda else "none",
        "gpu memory (GiB)": f"{gpu_memory_gib():.1f}" if cuda else "-",
        "bf16 supported": str(cuda and torch.cuda.is_bf16_supported()),
        "dtype": str(profile.dtype).replace("torch.", ""),
        "quantization": profile.quantization or "none",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
