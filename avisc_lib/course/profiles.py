"""Run profiles: one call that decides which model, device, dtype and data sizes a notebook uses.

    profile = resolve_profile()            # AVISC_PROFILE env var, else tiny on CPU, llava on a GPU
    model, processor = profile.load()
    profile.plan("04")                     # the runs notebook 04 makes, with estimated minutes

The same notebook cells then run on a laptop CPU (embedded tiny model, synthetic data, small
sizes) and on a Colab GPU (LLaVA-1.5-7B or InstructBLIP-7B, real benchmarks). On a GPU the
questions per split (``limit``) are the largest round number for which the cost model
(:mod:`.budget`) estimates each of notebooks 04, 05 and 06 within :data:`SESSION_MINUTES`.

Environment variables (all optional):

* ``AVISC_PROFILE``: ``tiny`` | ``llava`` | ``instructblip``.
* ``AVISC_MODEL``: any name ``load_model`` accepts, replacing the profile's model.
* ``AVISC_DEVICE``: ``cpu`` runs any profile on CPU (float32, no quantization; a 7B profile keeps
  its real benchmarks and its T4 sizes, and says that it will be slow); ``cuda`` requires a GPU.
* ``AVISC_LIMIT``: ``N`` (an int >= 1) sets the questions per split to N and caps ``n_samples``
  at N; ``full`` runs the benchmarks' full sizes (``limit`` None).
* ``AVISC_RUNS_DIR``: where :attr:`Profile.runs_dir` puts the notebooks' run folders.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

from . import budget, experiments
from ..models.loading import ALIASES, load_model

PROFILES = ("tiny", "llava", "instructblip")
PROFILE_OF = {hub_id: name for name, hub_id in ALIASES.items()}  # a 7B profile's hub id -> its name
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
QUANTIZATIONS = ("auto", "none", "4bit", "8bit")  # load_options' choices ("none": full precision)
# Smallest GPU memory (GiB) that holds the 7B model in fp16 with room for two KV caches.
FP16_MIN_GIB = {"llava": 20.0, "instructblip": 18.0}
DEVICES = ("cpu", "cuda")
# The time each evaluation notebook may take by the cost model: a Colab session on a T4 or L4,
# a shorter sitting on an A100.
SESSION_MINUTES = {"T4": 60, "L4": 60, "A100-40GB": 20, "A100-80GB": 20}
LIMITS = (10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 2000, 3000)  # round sizes to choose from
GPU_BATCH_SIZE = 8
GPU_SAMPLES = 200
CPU_STAND_IN = "T4"  # a 7B profile on CPU takes the sizes planned for the slowest GPU


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
    gpu: str | None = None  # budget.GPUS key of the GPU it runs on (None: CPU or a GPU the cost model lacks)

    def load(self):
        """``(model, processor)`` for this profile."""
        return load_model(self.model, device=self.device, dtype=self.dtype, quantization=self.quantization)

    @property
    def runs_dir(self) -> Path:
        """Where notebooks write run folders: ``$AVISC_RUNS_DIR/<name>``, else ``runs/notebooks/<name>``
        beside the figures folder."""
        if os.environ.get("AVISC_RUNS_DIR"):
            return Path(os.environ["AVISC_RUNS_DIR"]) / self.name
        from .plotting import figures_dir

        return figures_dir().parent / "runs" / "notebooks" / self.name

    def runs(self, notebook: str) -> list[budget.Run]:
        """The runs notebook ``"04"``, ``"05"`` or ``"06"`` makes under this profile."""
        return experiments.notebook_runs(notebook, self.limit, self.dataset)

    def plan(self, notebook: str):
        """:func:`budget.plan` of :meth:`runs` on :attr:`gpu` (counts only where it is None)."""
        return budget.plan(self.runs(notebook), self.gpu, self.name, quantized=self.quantization == "4bit",
                           batch_size=self.batch_size)


def gpu_memory_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def resolve_profile(name: str | None = None, *, gpu_gib: float | None = None) -> Profile:
    """Resolve ``name`` (or ``$AVISC_PROFILE``, or the hardware default) into a :class:`Profile`.

    ``gpu_gib`` overrides the detected GPU memory (for tests and planning; the sizes are then
    planned for the :data:`budget.GPUS` entry of nearest memory). A 7B profile on a GPU too small
    for fp16 falls back to 4-bit when bitsandbytes is installed, and otherwise raises an error
    that says what to do. The environment variables of the module docstring apply on top.
    """
    device = _env_choice("AVISC_DEVICE", DEVICES)
    limit = _env_limit()
    simulated = gpu_gib is not None
    gpu_gib = gpu_memory_gib() if gpu_gib is None else gpu_gib
    profile = _hardware_profile(name, gpu_gib, device, simulated)
    if limit is not None:
        size = None if limit == "full" else limit
        profile = replace(profile, limit=size, n_samples=min(profile.n_samples, size or profile.n_samples))
    override = os.environ.get("AVISC_MODEL")
    return replace(profile, model=override) if override else profile


def _hardware_profile(name: str | None, gpu_gib: float | None, device: str | None, simulated: bool) -> Profile:
    if device == "cuda" and not gpu_gib:
        raise RuntimeError("AVISC_DEVICE=cuda, but no CUDA GPU is visible; unset it or use AVISC_DEVICE=cpu")
    on_gpu = bool(gpu_gib) and device != "cpu"
    name = name or os.environ.get("AVISC_PROFILE") or ("llava" if on_gpu else "tiny")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {PROFILES}")
    if name == "tiny":
        return Profile("tiny", "tiny", "cuda" if on_gpu else "cpu", torch.float32, None, "synthetic", 120, 150, 32)
    if device == "cpu":
        print(f"note: AVISC_DEVICE=cpu runs the 7B {name} profile on CPU in float32: expect minutes per "
              "answer and ~30 GB of RAM; AVISC_LIMIT=N keeps it to N questions per split")
        limit = default_limit(name, CPU_STAND_IN, not budget.fits_fp16(CPU_STAND_IN, name, GPU_BATCH_SIZE))
        return Profile(name, ALIASES[name], "cpu", torch.float32, None, "coco", GPU_SAMPLES, limit, GPU_BATCH_SIZE)
    if not gpu_gib:
        raise RuntimeError(
            f"profile {name!r} needs a CUDA GPU (a 7B model on CPU takes minutes per answer); "
            "use AVISC_PROFILE=tiny here, a GPU runtime on Colab, or AVISC_DEVICE=cpu to run it on CPU anyway"
        )
    quantization = gpu_quantization(name, gpu_gib)
    # Sizes are planned for the detected GPU, or for the known GPU of nearest memory (a simulated
    # or unknown GPU); the plan shows estimates for a detected or simulated one only.
    gpu = budget.nearest_gpu(gpu_gib) if simulated else budget.detect_gpu()
    limit = default_limit(name, gpu or budget.nearest_gpu(gpu_gib), quantization == "4bit")
    return Profile(name, ALIASES[name], "cuda", torch.float16, quantization, "coco", GPU_SAMPLES, limit,
                   GPU_BATCH_SIZE, gpu)


def gpu_quantization(model: str, gpu_gib: float) -> str | None:
    """"4bit" where a 7B profile's model (``model``: "llava", "instructblip" or their hub ids) does not
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


@lru_cache
def default_limit(model: str, gpu: str, quantized: bool) -> int | None:
    """The largest of :data:`LIMITS` (None: the full benchmarks) for which the cost model estimates
    each of notebooks 04, 05 and 06 on the real benchmarks within ``SESSION_MINUTES[gpu]``; the
    smallest of :data:`LIMITS` if none fits."""

    def fits(limit: int | None) -> bool:
        return all(budget.estimate(experiments.notebook_runs(nb, limit, "coco"), gpu, model, quantized=quantized,
                                   batch_size=GPU_BATCH_SIZE) <= 60 * SESSION_MINUTES[gpu] for nb in experiments.GRIDS)

    return next((limit for limit in (None, *reversed(LIMITS)) if fits(limit)), LIMITS[0])


def _env_choice(variable: str, accepted: tuple[str, ...]) -> str | None:
    value = os.environ.get(variable, "").strip().lower()
    if value and value not in accepted:
        raise ValueError(f"{variable}={os.environ[variable]!r}; expected one of {accepted} (or unset)")
    return value or None


def _env_limit() -> int | str | None:
    """``$AVISC_LIMIT``: None (unset), ``"full"``, or an int >= 1."""
    value = os.environ.get("AVISC_LIMIT", "").strip().lower()
    if not value or value == "full":
        return value or None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"AVISC_LIMIT={os.environ['AVISC_LIMIT']!r}; expected an integer >= 1 or 'full' (or unset)")
    return int(value)


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
