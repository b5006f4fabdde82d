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
* ``AVISC_PLAN``: ``breadth`` (default: every dataset, split and method at ``limit`` questions) or
  ``power``: notebook 04 runs the baseline, AvisC and ``random_mask`` on one POPE split with as many
  questions as the session allows (``power_limit``), enough to resolve a gain of the paper's size
  (:mod:`.power`). Notebooks 05 and 06 keep the breadth design.
* ``AVISC_RUNS_DIR``: where :attr:`Profile.runs_dir` puts the notebooks' run folders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch
import transformers

from ..models.loading import ALIASES, load_model
from ..models.placement import gpu_memory_gib, gpu_quantization
from . import budget, experiments
from .plotting import figures_dir

PROFILES = ("tiny", "llava", "instructblip")
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
    design: str = "breadth"  # AVISC_PLAN: experiments.DESIGNS
    power_limit: int | None = None  # questions of notebook 04's power design (None = the whole split)

    def load(self):
        """``(model, processor)`` for this profile."""
        return load_model(self.model, device=self.device, dtype=self.dtype, quantization=self.quantization)

    @property
    def runs_dir(self) -> Path:
        """Where notebooks write run folders: ``$AVISC_RUNS_DIR/<name>``, else ``runs/notebooks/<name>``
        beside the figures folder."""
        if os.environ.get("AVISC_RUNS_DIR"):
            return Path(os.environ["AVISC_RUNS_DIR"]) / self.name
        return figures_dir().parent / "runs" / "notebooks" / self.name

    def design_for(self, notebook: str) -> str:
        """The design notebook ``notebook`` runs: :attr:`design` for notebook 04, else breadth."""
        return self.design if notebook == "04" else "breadth"

    def limit_for(self, notebook: str) -> int | None:
        """Questions per split of notebook ``notebook`` under its design."""
        return self.power_limit if self.design_for(notebook) == "power" else self.limit

    def runs(self, notebook: str, model: str = "llava") -> list[budget.Run]:
        """The runs notebook ``"04"``, ``"05"`` or ``"06"`` makes under this profile (``model``: the
        paper's model kind, which picks the power design's split)."""
        design = self.design_for(notebook)
        return experiments.notebook_runs(notebook, self.limit_for(notebook), self.dataset, design, model)

    def plan(self, notebook: str):
        """:func:`budget.plan` of :meth:`runs` on :attr:`gpu` (counts only where it is None)."""
        return budget.plan(
            self.runs(notebook), self.gpu, self.name, quantized=self.quantization == "4bit", batch_size=self.batch_size
        )


def resolve_profile(name: str | None = None, *, gpu_gib: float | None = None) -> Profile:
    """Resolve ``name`` (or ``$AVISC_PROFILE``, or the hardware default) into a :class:`Profile`.

    ``gpu_gib`` overrides the detected GPU memory (for tests and planning; the sizes are then
    planned for the :data:`budget.GPUS` entry of nearest memory). A 7B profile on a GPU too small
    for fp16 falls back to 4-bit when bitsandbytes is installed, and otherwise raises an error
    that says what to do. The environment variables of the module docstring apply on top.
    """
    device = _env_choice("AVISC_DEVICE", DEVICES)
    design = _env_choice("AVISC_PLAN", experiments.DESIGNS) or "breadth"
    limit = _env_limit()
    simulated = gpu_gib is not None
    gpu_gib = gpu_memory_gib() if gpu_gib is None else gpu_gib
    profile = replace(_hardware_profile(name, gpu_gib, device, simulated), design=design)
    if limit is not None:
        size = None if limit == "full" else limit
        n_samples = min(profile.n_samples, size or profile.n_samples)
        profile = replace(profile, limit=size, power_limit=size, n_samples=n_samples)
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
        print(
            f"note: AVISC_DEVICE=cpu runs the 7B {name} profile on CPU in float32: expect minutes per "
            "answer and ~30 GB of RAM; AVISC_LIMIT=N keeps it to N questions per split"
        )
        quantized = not budget.fits_fp16(CPU_STAND_IN, name, GPU_BATCH_SIZE)
        limit, power = (default_limit(name, CPU_STAND_IN, quantized, d) for d in experiments.DESIGNS)
        return Profile(
            name,
            ALIASES[name],
            "cpu",
            torch.float32,
            None,
            "coco",
            GPU_SAMPLES,
            limit,
            GPU_BATCH_SIZE,
            power_limit=power,
        )
    if not gpu_gib:
        raise RuntimeError(
            f"profile {name!r} needs a CUDA GPU (a 7B model on CPU takes minutes per answer); "
            "use AVISC_PROFILE=tiny here, a GPU runtime on Colab, or AVISC_DEVICE=cpu to run it on CPU anyway"
        )
    quantization = gpu_quantization(name, gpu_gib)
    # Sizes are planned for the detected GPU, or for the known GPU of nearest memory (a simulated
    # or unknown GPU); the plan shows estimates for a detected or simulated one only.
    gpu = budget.nearest_gpu(gpu_gib) if simulated else budget.detect_gpu()
    planned = gpu or budget.nearest_gpu(gpu_gib)
    limit, power = (default_limit(name, planned, quantization == "4bit", d) for d in experiments.DESIGNS)
    return Profile(
        name,
        ALIASES[name],
        "cuda",
        torch.float16,
        quantization,
        "coco",
        GPU_SAMPLES,
        limit,
        GPU_BATCH_SIZE,
        gpu,
        power_limit=power,
    )


@lru_cache
def default_limit(model: str, gpu: str, quantized: bool, design: str = "breadth") -> int | None:
    """The largest of :data:`LIMITS` (None: the full benchmarks) for which the cost model estimates
    each of notebooks 04, 05 and 06 on the real benchmarks within ``SESSION_MINUTES[gpu]`` (``design``
    "power": notebook 04's power design alone); the smallest of :data:`LIMITS` if none fits."""
    notebooks = ["04"] if design == "power" else list(experiments.GRIDS)

    def fits(limit: int | None) -> bool:
        return all(
            budget.estimate(
                experiments.notebook_runs(nb, limit, "coco", design, model),
                gpu,
                model,
                quantized=quantized,
                batch_size=GPU_BATCH_SIZE,
            )
            <= 60 * SESSION_MINUTES[gpu]
            for nb in notebooks
        )

    return next((limit for limit in (None, *reversed(LIMITS)) if fits(limit)), LIMITS[0])


def session_plans(notebook: str, models: Sequence[str] = ("llava", "instructblip"), design: str = "breadth"):
    """Notebook ``notebook`` on each GPU the cost model knows (:data:`.budget.GPUS`), with every
    benchmark's images: the questions per split a GPU profile picks there under ``design``, its
    precision, the runs and the estimated minutes; then the minutes of the full benchmarks
    (``AVISC_LIMIT=full``) and how many sessions of :data:`SESSION_MINUTES` that takes (runs resume
    across sessions when their folders are kept, e.g. on Drive). One row per model and GPU."""
    design = design if notebook == "04" else "breadth"
    rows = []
    for model in models:
        for gpu in budget.GPUS:
            quantized = not budget.fits_fp16(gpu, model, GPU_BATCH_SIZE)
            limit = default_limit(model, gpu, quantized, design)
            cost = {size: _minutes(notebook, size, design, model, gpu, quantized) for size in (limit, None)}
            full = cost[None]
            rows.append(
                {
                    "model": model,
                    "GPU": gpu,
                    "weights": "4-bit" if quantized else "fp16",
                    "questions per split": limit or "all",
                    "runs": len(experiments.grid(notebook, "coco", limit, design=design, model=model)),
                    "minutes": round(cost[limit]),
                    "full run, minutes": round(full),
                    "full run, sessions": math.ceil(full / SESSION_MINUTES[gpu]),
                }
            )
    return pd.DataFrame(rows).set_index(["model", "GPU"])


def _minutes(notebook: str, limit: int | None, design: str, model: str, gpu: str, quantized: bool) -> float:
    runs = experiments.notebook_runs(notebook, limit, "coco", design, model)
    return budget.estimate(runs, gpu, model, quantized=quantized, batch_size=GPU_BATCH_SIZE) / 60


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
