"""A GPU time budget: what an evaluation costs, estimated before it starts and measured while it runs.

    runs = experiments.notebook_runs("04", limit=100, kind="coco")   # the runs notebook 04 makes
    plan(runs, "T4", "llava")                                        # minutes per run group, and a total
    progress = Progress(sum(r.questions for r in runs))
    with progress.track(run_folder):                                 # prints the measured rate and an ETA
        run_benchmark(...)

The estimate is a roofline model of :func:`avisc_lib.decode` (each method's ``passes``): a
forward of the language model takes ``max(FLOPs / usable compute, bytes read / usable bandwidth)``
plus a fixed per-forward overhead. A decode step of R rows reads the weights once whatever R is
(bandwidth-bound) until its ``2·params·R`` FLOPs take longer than that read (compute-bound);
a prefill of R rows × L tokens is compute-bound. The datasheet figures are in :data:`GPUS`, the
assumed shares of them that eager ``transformers`` code reaches in :data:`EFFICIENCY`, the
model sizes in :data:`MODELS`. These are estimates, good to a factor of about two:
:class:`Progress` prints the measured rate once the first run is done.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .. import methods
from ..benchmarks.store import ANSWERS


@dataclass(frozen=True)
class GPU:
    memory_gib: float  # total memory as torch reports it (GiB, approximate)
    bandwidth: float  # memory bandwidth, bytes/s
    fp16_flops: float  # peak dense fp16 tensor-core FLOP/s (no sparsity)
    source: str


GPUS = {
    "T4": GPU(14.7, 320e9, 65e12, "NVIDIA T4 datasheet: 16 GB GDDR6, 320 GB/s, 65 TFLOPS mixed-precision (FP16/FP32)"),
    "L4": GPU(
        22.0,
        300e9,
        121e12,
        "NVIDIA L4 datasheet: 24 GB GDDR6, 300 GB/s, 242 TFLOPS FP16 tensor with sparsity (121 dense)",
    ),
    "A100-40GB": GPU(
        39.4,
        1555e9,
        312e12,
        "NVIDIA A100 datasheet: 40 GB HBM2, 1,555 GB/s, 312 TFLOPS FP16 tensor (624 with sparsity)",
    ),
    "A100-80GB": GPU(
        79.2,
        2039e9,
        312e12,
        "NVIDIA A100 datasheet: 80 GB HBM2e, 2,039 GB/s (SXM; PCIe 1,935 GB/s), 312 TFLOPS FP16 tensor",
    ),
}

# Assumptions for GPUs. What a CPU could check, on the width-realistic proxy (results/RESULTS.md,
# `python scripts/decode_speed.py --model proxy`, 2026-12-04, 2 cores, float32):
# - bandwidth: a greedy decode step reached 0.49 of this CPU's measured bandwidth limit at B = 1
#   (0.14 at B = 8, where its small-batch float32 matmuls are not bandwidth-bound). It agrees with
#   0.5 for a single row, but it is a CPU's figure: on a GPU the factor stays an assumption.
# - forward_overhead_s: one eager forward of a 32-layer decoder with negligible arithmetic (the
#   LLaVA-1.5 replica at tiny widths) took 19.3 ms on this CPU, the order of the 15 ms assumed;
#   Python dispatch is most of it, so it carries over to a GPU best of the three.
# - compute: not calibrated on a CPU (float32 CPU matmuls say nothing about fp16 tensor cores).
# On a GPU (results/RESULTS.md, `bash scripts/gpu_check.sh`, one NVIDIA H200, llava-1.5-7b's full size
# with random fp16 weights, 2026-12-04):
# - compute: greedy's B = 8 prefill reached 0.56 of the roofline at the measured 751 TFLOP/s, about
#   0.43 of the datasheet's dense fp16 rate: the 0.4 assumed holds there.
# - forward_overhead_s: 22.1 ms for an eager 32-layer forward with negligible arithmetic (vs 15 ms
#   assumed); a greedy 7B step took 32.7 ms at B = 1, so the step is overhead-bound on that GPU.
# - bandwidth: not separable from the overhead there (the step's 32.7 ms minus 22.1 ms would be 0.31 of
#   the measured 4.0 TB/s); on a T4, whose 320 GB/s make the read the larger term, it stays an assumption.
# The values below are left as they were: one GPU of another class is not enough to move them.
EFFICIENCY = {
    "bandwidth": 0.5,  # share of the datasheet bandwidth an eager transformers decode step reaches
    "compute": 0.4,  # share of peak fp16 tensor FLOP/s the prefill's matmuls reach
    "forward_overhead_s": 0.015,  # Python and kernel-launch time of one eager forward of a 32-layer decoder
}


@dataclass(frozen=True)
class Weights:
    bytes_per_param: float
    read_factor: float  # time to read a weight, relative to reading bytes_per_param from memory


QUANTIZATION = {
    "fp16": Weights(2.0, 1.0),
    # bitsandbytes nf4: 4 bits per weight (the double-quantised block scales add < 0.02 byte). The
    # weights are dequantised to fp16 on the fly, which costs more than the read saves: the factor 4
    # (an assumption) makes a 4-bit weight as slow to use as an fp16 one; 4-bit saves memory, not time.
    "4bit": Weights(0.5, 4.0),
}


@dataclass(frozen=True)
class Model:
    total_params: float  # everything loaded: vision tower, projector / Q-Former, language model
    lm_params: float  # language model (embeddings and head included)
    vision_flops: float  # vision tower (+ projector or Q-Former) FLOPs per image
    image_tokens: int  # positions the image takes in the language model's prompt
    layers: int
    hidden: int
    source: str
    head_params: float = 0.0  # of lm_params, the output head: run on the last position only (0: on every one)

    @property
    def kv_bytes_per_token(self) -> int:
        """fp16 key and value of one position in every layer (the cache stays fp16 under 4-bit)."""
        return 2 * self.layers * self.hidden * 2


MODELS = {
    "llava": Model(
        7.06e9,
        6.74e9,
        2 * 0.32e9 * 577,
        576,
        32,
        4096,
        "llava-hf/llava-1.5-7b-hf config: Vicuna-7B v1.5 (32 layers, hidden 4096, vocab 32064); "
        "CLIP ViT-L/14 at 336 px (0.30 B params over 577 positions) + 2-layer projector (0.02 B)",
    ),
    "instructblip": Model(
        7.91e9,
        6.74e9,
        2 * 0.99e9 * 257 + 2 * 0.19e9 * 96,
        32,
        32,
        4096,
        "Salesforce/instructblip-vicuna-7b config: Vicuna-7B (32 layers, hidden 4096); EVA ViT-g/14 at "
        "224 px (0.99 B params over 257 positions); Q-Former (0.19 B, 32 queries + ~64 text tokens)",
    ),
}

# Prompt text around the image (positions, not words): the llava_v1 template has ~35 tokens before
# the image and ~10 after it; a POPE / MME / AMBER question adds ~10-20. 60 errs on the long side.
PROMPT_TEXT_TOKENS = 60
# Decode steps per batch. A batch stops when its LONGEST answer has ended, so this is the longest of
# 8 answers, not the mean. A yes/no answer is "Yes" / "No" + EOS (2 tokens) or one sentence ("No,
# there is no dog in the image." ~12 tokens); sampling at T = 1 rambles more (assumed 20). Captions
# ("Describe this image.") run past 64 tokens on both models, so they stop at max_new_tokens = 64.
SHORT_ANSWER_STEPS = {False: 12, True: 20}  # keyed by do_sample
CAPTION_STEPS = 64
# Memory besides weights and KV caches: CUDA context and prefill activations (an assumption).
RESERVE_GIB = 1.0


@dataclass(frozen=True)
class Run:
    """One ``run_benchmark`` call as the cost model sees it."""

    benchmark: str  # "pope" | "mme" | "amber"
    method: str  # a registered method (avisc_lib.methods), whose passes the estimate counts
    questions: int  # questions answered, captions included
    do_sample: bool = False
    captions: int = 0  # of which open-ended captions (AMBER's generative section)
    group: str = ""  # row of the plan this run is summed into
    steps: int | None = None  # tokens per answer when known (1: a prefill only); None: the defaults above

    def __post_init__(self):
        methods.get(self.method)  # raises for an unknown method
        if not 0 <= self.captions <= self.questions:
            raise ValueError(f"need 0 <= captions <= questions, got {self.captions} and {self.questions}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"need steps >= 1 (1: a prefill only), got {self.steps}")


# --------------------------------------------------------------------------- the roofline


def _seconds(gpu: GPU, flops: float, nbytes: float) -> float:
    """Roofline time of one forward: the slower of compute and memory, plus the fixed overhead."""
    compute = flops / (gpu.fp16_flops * EFFICIENCY["compute"])
    memory = nbytes / (gpu.bandwidth * EFFICIENCY["bandwidth"])
    return max(compute, memory) + EFFICIENCY["forward_overhead_s"]


def forward_work(model: Model, weights: Weights, rows: int, new: int, context: int) -> tuple[float, float]:
    """FLOPs and bytes read of one language-model forward of ``rows`` rows × ``new`` positions after
    ``context`` cached ones: every weight read once, the KV cache read, ``2·params`` FLOPs per position
    (the output head's ``head_params`` on each row's last position only) plus attention's
    ``4·layers·hidden`` per position and key."""
    positions = rows * new
    per_position = model.lm_params - model.head_params
    flops = 2 * per_position * positions + 2 * model.head_params * rows
    flops += 4 * model.layers * model.hidden * positions * (context + new)
    weight_bytes = model.lm_params * weights.bytes_per_param * weights.read_factor
    cache_bytes = rows * (context + new) * model.kv_bytes_per_token
    return flops, weight_bytes + cache_bytes


def forward_seconds(gpu: GPU, model: Model, weights: Weights, rows: int, new: int, context: int) -> float:
    """One language-model forward of ``rows`` rows × ``new`` positions after ``context`` cached ones."""
    return _seconds(gpu, *forward_work(model, weights, rows, new, context))


def batch_seconds(gpu: GPU, model: Model, weights: Weights, method: str, batch: int, steps: int) -> float:
    """One batch of ``batch`` questions answered in ``steps`` tokens (the first comes from the prefill)."""
    passes = methods.get(method).passes
    prompt = model.image_tokens + PROMPT_TEXT_TOKENS
    vision_bytes = (model.total_params - model.lm_params) * weights.bytes_per_param * weights.read_factor
    seconds = passes.vision * _seconds(gpu, batch * model.vision_flops, vision_bytes)
    seconds += passes.prefills * forward_seconds(gpu, model, weights, batch, prompt, 0)
    if passes.branches:
        step = forward_seconds(gpu, model, weights, passes.branches * batch, 1, prompt + steps // 2)
        seconds += (steps - 1) * step
    return seconds


def run_seconds(run: Run, gpu: GPU, model: Model, weights: Weights, batch_size: int) -> float:
    """Estimated seconds of ``run``: its caption batches and its short-answer batches (or, with
    ``run.steps``, all its batches at that many tokens)."""
    short = run.questions - run.captions
    caption_batches, short_batches = math.ceil(run.captions / batch_size), math.ceil(short / batch_size)
    caption_steps = run.steps or CAPTION_STEPS
    short_steps = run.steps or SHORT_ANSWER_STEPS[run.do_sample]
    return caption_batches * batch_seconds(
        gpu, model, weights, run.method, batch_size, caption_steps
    ) + short_batches * batch_seconds(gpu, model, weights, run.method, batch_size, short_steps)


# --------------------------------------------------------------------------- memory


def memory_gib(model: str, quantized: bool, batch_size: int = 8) -> float:
    """GPU memory (GiB) for ``model``'s weights, two KV caches of ``batch_size`` rows and a reserve.

    The caches hold the prompt and 64 new tokens (captions, the longest answers).
    """
    spec = MODELS[_model_key(model)]
    weights = QUANTIZATION["4bit" if quantized else "fp16"]
    cache = 2 * batch_size * (spec.image_tokens + PROMPT_TEXT_TOKENS + CAPTION_STEPS) * spec.kv_bytes_per_token
    return (spec.total_params * weights.bytes_per_param + cache) / 2**30 + RESERVE_GIB


def fits_fp16(gpu: str, model: str, batch_size: int = 8) -> bool:
    """Whether ``model`` runs in fp16 with two KV caches on ``gpu`` (not on a T4: 13 GiB of weights
    + 5 GiB of caches > 14.7 GiB); elsewhere it is loaded in 4-bit."""
    return memory_gib(model, False, batch_size) <= GPUS[_gpu_key(gpu)].memory_gib


# --------------------------------------------------------------------------- the API


def estimate(runs: Sequence[Run], gpu: str, model: str, *, quantized: bool | None = None, batch_size: int = 8) -> float:
    """Estimated seconds of ``runs`` on ``gpu`` (a key of :data:`GPUS`) with ``model`` ("llava" or
    "instructblip"). ``quantized`` None: 4-bit where fp16 does not fit (:func:`fits_fp16`)."""
    key = _gpu_key(gpu)
    quantized = not fits_fp16(key, model, batch_size) if quantized is None else quantized
    weights = QUANTIZATION["4bit" if quantized else "fp16"]
    spec = MODELS[_model_key(model)]
    return sum(run_seconds(r, GPUS[key], spec, weights, batch_size) for r in runs)


def plan(runs: Sequence[Run], gpu: str | None, model: str, *, quantized: bool | None = None, batch_size: int = 8):
    """A DataFrame, one row per run group (runs, questions, estimated minutes) and a ``total`` row.

    Without an estimate (``gpu`` None, or a model the cost model does not know, such as "tiny")
    it prints why and shows the counts only.
    """

    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group or f"{run.benchmark} {run.method}", []).append(run)
    table = pd.DataFrame(
        {
            "runs": [len(g) for g in groups.values()],
            "questions": [sum(r.questions for r in g) for g in groups.values()],
        },
        index=pd.Index(list(groups), name="group"),
    )
    costed = gpu in GPUS and model in MODELS
    if costed:
        table["minutes"] = [
            estimate(g, gpu, model, quantized=quantized, batch_size=batch_size) / 60 for g in groups.values()
        ]
    else:
        why = f"no GPU the cost model knows {tuple(GPUS)}" if gpu not in GPUS else f"no cost figures for {model!r}"
        print(f"no time estimate ({why}): the plan shows counts only")
    table.loc["total"] = table.sum()
    table[["runs", "questions"]] = table[["runs", "questions"]].astype(int)
    return table.round(1) if costed else table


def detect_gpu(name: str | None = None, memory: float | None = None) -> str | None:
    """The :data:`GPUS` key of a device name (default: CUDA device 0's), or None if unknown / no GPU.

    ``memory`` (GiB, default: the device's) tells a 40 GB A100 from an 80 GB one when the name does not.
    """
    if name is None:
        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    if re.search(r"\bT4\b", name):
        return "T4"
    if re.search(r"\bL4\b", name):  # not L40 / L40S
        return "L4"
    if "A100" in name:
        large = "80GB" in name.replace(" ", "") or (memory or 0) > 60
        return "A100-80GB" if large else "A100-40GB"
    return None


def nearest_gpu(memory: float) -> str:
    """The :data:`GPUS` key whose memory is closest to ``memory`` GiB (a stand-in for an unknown GPU)."""
    return min(GPUS, key=lambda k: abs(GPUS[k].memory_gib - memory))


def _gpu_key(gpu: str) -> str:
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; expected one of {tuple(GPUS)}")
    return gpu


def _model_key(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"no cost figures for model {model!r}; expected one of {tuple(MODELS)}")
    return model


# --------------------------------------------------------------------------- measured progress


class Progress:
    """Measured progress through a plan of ``total`` questions: rate and ETA after the first timed
    run, then at most once per ``every`` seconds of measured work."""

    def __init__(self, total: int, every: float = 60.0):
        if total < 0:
            raise ValueError(f"total must be >= 0 questions, got {total}")
        self.total, self.done, self.measured, self.seconds = total, 0, 0, 0.0
        self.every, self.reported_at = every, None

    def update(self, questions: int, seconds: float) -> None:
        """Count ``questions`` answered in ``seconds``; print the rate so far and the ETA (one line)
        when this is the first timed run or ``every`` seconds have passed since the last line."""
        self.done += questions
        self.measured += questions
        self.seconds += seconds
        due = self.reported_at is None or self.seconds - self.reported_at >= self.every
        if due and self.measured and self.seconds > 0:
            self.reported_at = self.seconds
            rate = self.measured / self.seconds
            left = max(self.total - self.done, 0)
            print(
                f"{self.done:,} of {self.total:,} questions done; measured {rate:.2f} questions/s; "
                f"ETA {_duration(left / rate)} for the rest of the plan"
            )

    def skip(self, questions: int) -> None:
        """Count ``questions`` answered earlier (a resumed run) as done, without timing them."""
        self.done += questions

    @contextmanager
    def track(self, folder: str | Path):
        """Time the run writing to ``folder``: answers already there are skipped, new ones timed."""
        before = _answers(folder)
        self.skip(before)
        start = time.perf_counter()
        yield
        answered = _answers(folder) - before
        if answered:
            self.update(answered, time.perf_counter() - start)


def _answers(folder: str | Path) -> int:
    """Answer lines in a run folder (:mod:`avisc_lib.benchmarks.store`)."""

    path = Path(folder) / ANSWERS
    return sum(1 for _ in path.open("rb")) if path.is_file() else 0


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
