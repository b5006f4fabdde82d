"""Where and how a model is loaded: dtype and quantization by device and GPU memory.

The rules ``avisc-eval run``, the lmms-eval model and the notebooks' profiles share: on CPU float32
without quantization; on a GPU float16, and 4-bit for a 7B model where float16 does not fit.
"""

from __future__ import annotations

import importlib.util

import torch

from .loading import ALIASES

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
QUANTIZATIONS = ("auto", "none", "4bit", "8bit")  # load_options' choices ("none": full precision)
# Smallest GPU memory (GiB) that holds the 7B model in fp16 with room for two KV caches.
FP16_MIN_GIB = {"llava": 20.0, "instructblip": 18.0}
PROFILE_OF = {hub_id: name for name, hub_id in ALIASES.items()}  # a 7B model's hub id -> its short name


def gpu_memory_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def gpu_quantization(model: str, gpu_gib: float) -> str | None:
    """ "4bit" where a 7B profile's model (``model``: "llava", "instructblip" or their hub ids) does not
    fit ``gpu_gib`` in fp16 (:data:`FP16_MIN_GIB`), else None; ``RuntimeError`` when 4-bit is needed
    but bitsandbytes is missing. Other models have no known size: None."""
    profile = PROFILE_OF.get(model, model)
    if profile not in FP16_MIN_GIB or gpu_gib >= FP16_MIN_GIB[profile]:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            f"{gpu_gib:.0f} GiB of GPU memory is too little for {profile} in fp16 "
            f"(needs ~{FP16_MIN_GIB[profile]:.0f} GiB); `pip install bitsandbytes` for 4-bit loading"
        )
    return "4bit"


def load_options(model: str, device: str, dtype: str = "auto", quantization: str = "auto") -> dict:
    """``load_model``'s ``dtype`` and ``quantization`` for ``model`` on ``device`` ("cpu"/"cuda"), by the
    profiles' rules wherever a value is "auto": on CPU float32 without quantization; on a GPU float16,
    and 4-bit where :func:`gpu_quantization` says so for the detected GPU memory. Explicit values: a
    name in :data:`DTYPES`; "none", "4bit" or "8bit". Used by ``avisc-eval run`` and the lmms-eval model."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {tuple(DTYPES)}, got {dtype!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    on_gpu = torch.device(device).type == "cuda"
    if quantization == "auto":
        gpu_gib = gpu_memory_gib() if on_gpu else None
        quantization = gpu_quantization(model, gpu_gib) if gpu_gib else None
    dtype = ("float16" if on_gpu else "float32") if dtype == "auto" else dtype
    return {"dtype": DTYPES[dtype], "quantization": None if quantization == "none" else quantization}
