"""Decode cost on the width-realistic proxy, beside this CPU's limit (``decode_speed.py --model proxy``).

The proxy (:func:`avisc_lib.models.replicas.proxy`) is LLaVA-1.5 at llava-1.5-7b-hf's widths (hidden
4096, MLP 11008, 32 heads, vocabulary 32064; CLIP-L/14-336, 576 image tokens) with 2 language-model
and 2 vision layers and random weights, so that a decode step's time is set by reading and
multiplying weights, as on the 7B model. Per method and batch size it measures the prefill (start
of ``decode`` to the first generated token) and every decode step (one token to the next, timed
by a hook on the input embeddings that each step calls once), in rounds where every method runs
right beside a greedy decode. The limit: this CPU's measured memory bandwidth and matmul
throughput put into the cost model's roofline (:func:`avisc_lib.course.budget.forward_work`),
i.e. the time a forward would take if it did nothing but read its bytes or do its FLOPs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from avisc_lib import methods
from avisc_lib.course import budget
from avisc_lib.decoding import decode, eos_disabled
from avisc_lib.models import replicas
from avisc_lib.models.inputs import encode
from avisc_lib.world.scenes import make_scene

PROMPT_TEXT = "Describe the image."
STEPS = 6  # decode steps timed per measurement (after the first token)
# Goals of issue 22 (B = 8, per decode step against greedy in the same run); prefill goal for AvisC.
STEP_GOALS = {
    "avisc": 1.35,
    "vcd": 1.35,
    "m3id": 1.35,
    "pai (pai_gamma 1, one pass)": 1.10,
    "clearsight": 1.10,
    "var": 1.10,
    "only": 1.15,
}
PREFILL_GOALS = {"avisc": 2.1}


@contextmanager
def step_clock(model) -> Iterator[list[float]]:
    """Timestamps (``perf_counter``) of every decode step's start: the decode loop embeds each
    step's new tokens (a 1-D tensor of token ids) once, and nothing else embeds a 1-D tensor."""
    stamps: list[float] = []

    def record(module, args):
        if args[0].dim() == 1:
            stamps.append(time.perf_counter())

    handle = model.get_input_embeddings().register_forward_pre_hook(record)
    try:
        yield stamps
    finally:
        handle.remove()


def timed_decode(model, inputs, method: str, options: dict, steps: int = STEPS) -> tuple[float, list[float]]:
    """``(prefill seconds, [seconds of each of the steps])`` of one ``decode`` of ``1 + steps`` tokens
    (EOS disabled by the caller, so that every row runs them all)."""
    with step_clock(model) as stamps:
        start = time.perf_counter()
        decode(model, inputs, method=method, max_new_tokens=1 + steps, **options)
        end = time.perf_counter()
    if len(stamps) != steps:
        raise RuntimeError(f"{method}: expected {steps} decode steps, the clock saw {len(stamps)}")
    marks = [*stamps, end]
    return stamps[0] - start, [b - a for a, b in zip(marks, marks[1:])]


@dataclass
class Costs:
    """Per measurement: prefill and median step seconds, and both over the greedy run beside them."""

    prefill: list[float]
    step: list[float]
    prefill_ratio: list[float]
    step_ratio: list[float]


def paired_costs(model, inputs, costed: dict, rounds: int) -> dict[str, Costs]:
    """Every label of ``costed`` (label -> (method, options)) measured ``rounds`` times, each time
    beside a greedy decode (greedy first in even rounds, second in odd ones; the order of the
    labels rotates), so that load on the machine falls on a method and its greedy alike."""
    labels = [label for label in costed if label != "greedy"]
    costs = {label: Costs([], [], [], []) for label in costed}
    for round_ in range(rounds):
        shift = round_ % len(labels)
        for label in labels[shift:] + labels[:shift]:
            pair = ("greedy", label) if round_ % 2 == 0 else (label, "greedy")
            measured = {}
            for name in pair:
                prefill, steps = timed_decode(model, inputs, *costed[name])
                measured[name] = (prefill, statistics.median(steps))
            for name, (prefill, step) in measured.items():
                entry = costs[name]
                entry.prefill.append(prefill)
                entry.step.append(step)
                entry.prefill_ratio.append(prefill / measured["greedy"][0])
                entry.step_ratio.append(step / measured["greedy"][1])
    return costs


def verdict(ratios: list[float], goal: float | None) -> str:
    """``met`` when every measured ratio is within the goal, ``missed`` when none is, else
    ``within noise of the goal`` (the spread straddles it)."""
    if goal is None:
        return ""
    if max(ratios) <= goal:
        return "met"
    if min(ratios) > goal:
        return "missed"
    return "within noise of the goal"


# --------------------------------------------------------------------------- the limit


def memory_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes per second of reading a ``gib`` GiB float32 tensor (``sum``), best of ``repeats``."""
    data = torch.ones(int(gib * 2**30) // 4)
    best = min(_timed(data.sum) for _ in range(repeats))
    return data.nbytes / best


def matmul_throughput(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n × n`` float32 matrix product, best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_overhead(steps: int = 16) -> float:
    """Seconds of one greedy decode step of the 32-layer LLaVA-1.5 replica at its tiny widths, B = 1:
    the time an eager 32-layer forward takes when its arithmetic is negligible."""
    model, processor = replicas.build("llava-1.5")
    inputs = encode(model.eval(), processor, [make_scene("test", 0).image], [PROMPT_TEXT])
    with eos_disabled(model):
        timed_decode(model, inputs, "greedy", {}, 2)  # warm-up
        return statistics.median(timed_decode(model, inputs, "greedy", {}, steps)[1])


def proxy_spec(model) -> budget.Model:
    """The proxy in the cost model's terms. ``lm_params``: the weights a forward reads, i.e. the
    language model without its embedding table (a step gathers a few rows of it, not all)."""
    language = model.get_decoder()
    embedding = model.get_input_embeddings().weight.numel()
    lm = sum(p.numel() for p in language.parameters()) - embedding + model.get_output_embeddings().weight.numel()
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    config = model.config
    image_tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    return budget.Model(
        total_params=lm + embedding + vision + projector,
        lm_params=lm,
        vision_flops=2 * vision * (image_tokens + 1) + 2 * projector * image_tokens,
        image_tokens=image_tokens,
        layers=config.text_config.num_hidden_layers,
        hidden=config.text_config.hidden_size,
        source="the proxy (scripts/speed_proxy.py)",
    )


def limits(spec: budget.Model, method: str, batch: int, prompt: int, bandwidth: float, flops: float) -> tuple:
    """``(prefill seconds, step seconds)`` of ``method`` if bound only by bytes read and FLOPs
    (float32 weights; the cache at its fp16 size, as the cost model counts it)."""
    weights = budget.Weights(4.0, 1.0)
    passes = methods.get(method).passes

    def bound(work: tuple[float, float]) -> float:
        return max(work[0] / flops, work[1] / bandwidth)

    vision = (batch * spec.vision_flops, (spec.total_params - spec.lm_params) * 4.0)
    prefill = passes.vision * bound(vision) + passes.prefills * bound(
        budget.forward_work(spec, weights, batch, prompt, 0)
    )
    step = bound(budget.forward_work(spec, weights, max(passes.branches, 1) * batch, 1, prompt))
    return prefill, step


# --------------------------------------------------------------------------- the section


def proxy_sections(costed: dict, batches: tuple[int, ...], rounds: int) -> Iterator[list[str]]:
    """The RESULTS.md section: the machine's limit, then one table per batch size; yielded again
    after each batch size, so that a long run keeps what it measured."""
    model, processor = replicas.proxy()
    model.eval()
    spec = proxy_spec(model)
    bandwidth, flops, overhead = memory_bandwidth(), matmul_throughput(), forward_overhead()
    lines = [
        "## The width-realistic proxy (LLaVA-1.5 widths, 2 + 2 layers)",
        "",
        f"Proxy: {spec.total_params / 1e9:.2f} B parameters, float32; the language model reads "
        f"{spec.lm_params * 4 / 2**30:.2f} GiB of weights per forward. This CPU: memory bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s (reading a 1 GiB tensor), matmul {flops / 1e9:.0f} GFLOP/s (2048² float32), "
        f"best of 5 each, {torch.get_num_threads()} torch thread(s). Prefill: start of `decode` to its first "
        f"token; step: one generated token to the next (median of {STEPS}); {rounds} rounds, each method beside "
        "a greedy decode; medians with the min-max over rounds. Limit: the roofline of the same work "
        "(`budget.forward_work`) at the measured bandwidth and FLOP/s; fraction = limit / measured. "
        f"One eager forward of a 32-layer decoder whose arithmetic is negligible (a decode step of the "
        f"LLaVA-1.5 replica at tiny widths, B = 1) takes {overhead * 1e3:.1f} ms here.",
        "",
    ]
    with eos_disabled(model):
        for batch in batches:
            images = [make_scene("test", i).image for i in range(batch)]
            inputs = encode(model, processor, images, [PROMPT_TEXT] * batch)
            prompt = inputs["input_ids"].shape[1]
            costs = paired_costs(model, inputs, costed, rounds)
            lines += _table(costs, costed, spec, batch, prompt, bandwidth, flops)
            yield lines


def _table(costs, costed, spec, batch, prompt, bandwidth, flops) -> list[str]:
    lines = [
        f"B = {batch}, prompt {prompt} positions:",
        "",
        "| method | prefill | prefill / greedy | goal | per step | step / greedy | goal | verdict | "
        "step limit | fraction of limit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, cost in costs.items():
        method = costed[label][0]
        prefill_limit, step_limit = limits(spec, method, batch, prompt, bandwidth, flops)
        step = statistics.median(cost.step)
        step_goal, prefill_goal = STEP_GOALS.get(label), PREFILL_GOALS.get(label)
        verdicts = [verdict(cost.step_ratio, step_goal), verdict(cost.prefill_ratio, prefill_goal)]
        lines.append(
            f"| {label} | {statistics.median(cost.prefill):.2f} s | {_spread(cost.prefill_ratio)} | "
            f"{_goal(prefill_goal)} | {step * 1e3:.0f} ms | {_spread(cost.step_ratio)} | {_goal(step_goal)} | "
            f"{'; '.join(f'{kind} {v}' for kind, v in zip(('step', 'prefill'), verdicts) if v)} | "
            f"{step_limit * 1e3:.0f} ms | {step_limit / step:.2f} |"
        )
    return [*lines, ""]


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _goal(goal: float | None) -> str:
    return f"<= {goal}x" if goal is not None else ""
