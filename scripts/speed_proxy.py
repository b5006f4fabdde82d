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

import platform
import statistics
import time
from collections.abc import Callable, Iterator
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


def now(device: torch.device | str) -> float:
    """``perf_counter`` once the work queued on ``device`` has finished (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@contextmanager
def forward_clock(model) -> Iterator[list[tuple[float, int, int]]]:
    """``(time, rows, positions)`` at the start of every prefill forward of the language model (many
    positions), then of every decode step (one position per row). A step is seen where the decode
    loop embeds its new tokens (a 1-D tensor of token ids, one per row), outside the step's forward,
    and the prefill hook goes then: with ``compile=True`` no hook runs inside the compiled steps."""
    marks: list[tuple[float, int, int]] = []

    def prefill(module, args, kwargs):
        embeds = kwargs["inputs_embeds"]
        marks.append((now(embeds.device), embeds.shape[0], embeds.shape[1]))

    def step(module, args):
        if args[0].dim() == 1:
            prefills.remove()
            marks.append((now(args[0].device), args[0].numel(), 1))

    prefills = model.get_decoder().register_forward_pre_hook(prefill, with_kwargs=True)
    steps = model.get_input_embeddings().register_forward_pre_hook(step)
    try:
        yield marks
    finally:
        prefills.remove()
        steps.remove()


@dataclass
class Timing:
    """One ``decode``: prefill seconds (start to the first step's forward), seconds of each decode
    step, ``(rows, positions)`` of each prefill forward, and the rows of each step's forward."""

    prefill: float
    steps: list[float]
    prefills: list[tuple[int, int]]
    rows: int


def timed_decode(model, inputs, method: str, options: dict, steps: int = STEPS) -> Timing:
    """One ``decode`` of ``1 + steps`` tokens timed (EOS disabled by the caller, so that every row
    runs them all)."""
    with forward_clock(model) as marks:
        start = now(model.device)
        decode(model, inputs, method=method, max_new_tokens=1 + steps, **options)
        end = now(model.device)
    prefills = [(rows, positions) for _, rows, positions in marks if positions > 1]
    stepped = marks[len(prefills) :]
    if len(stepped) != steps or any(p != 1 for *_, p in stepped) or len({r for _, r, _ in stepped}) != 1:
        raise RuntimeError(f"{method}: expected prefills, then {steps} decode steps of equal rows; saw {marks}")
    stamps = [t for t, *_ in stepped] + [end]
    return Timing(stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])], prefills, stepped[0][1])


@dataclass
class Costs:
    """Per measurement: prefill and median step seconds, and both over the greedy run beside them;
    ``timing``: the last measurement's :class:`Timing` (the forwards it ran), where one was taken."""

    prefill: list[float]
    step: list[float]
    prefill_ratio: list[float]
    step_ratio: list[float]
    timing: Timing | None = None  # the last measurement's forwards


def paired_rounds(labels: list[str], rounds: int, measure: Callable[[str], tuple]) -> dict[str, Costs]:
    """Every label measured ``rounds`` times, each time right beside a greedy measurement (greedy first
    in even rounds, second in odd ones; the order of the labels rotates), so that load on the machine
    falls on a method and its greedy alike. ``measure(label)`` -> ``(prefill, step, detail)`` in seconds;
    ``detail`` (a :class:`Timing`, or None) is kept as the label's last ``timing``."""
    others = [label for label in labels if label != "greedy"]
    costs = {label: Costs([], [], [], []) for label in labels}
    for round_ in range(rounds):
        shift = round_ % len(others)
        for label in others[shift:] + others[:shift]:
            pair = ("greedy", label) if round_ % 2 == 0 else (label, "greedy")
            measured = {name: measure(name) for name in pair}
            greedy_prefill, greedy_step, _ = measured["greedy"]
            for name, (prefill, step, detail) in measured.items():
                entry = costs[name]
                entry.prefill.append(prefill)
                entry.step.append(step)
                entry.prefill_ratio.append(prefill / greedy_prefill)
                entry.step_ratio.append(step / greedy_step)
                entry.timing = detail
    return costs


def paired_costs(model, inputs, costed: dict, rounds: int) -> dict[str, Costs]:
    """:func:`paired_rounds` of every label of ``costed`` (label -> (method, options)) timed by
    :func:`timed_decode`, after one untimed decode of each (kernels tuned on a GPU, compiled with
    ``compile=True``)."""

    def measure(label: str) -> tuple[float, float, Timing]:
        timing = timed_decode(model, inputs, *costed[label])
        return timing.prefill, statistics.median(timing.steps), timing

    for label in costed:
        measure(label)
    return paired_rounds(list(costed), rounds, measure)


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


def memory_bandwidth(device: str = "cpu", gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes per second of reading a ``gib`` GiB float32 tensor on ``device`` (``sum``), best of ``repeats``."""
    data = torch.ones(int(gib * 2**30) // 4, device=device)
    best = min(_timed(data.sum, device) for _ in range(repeats))
    return data.nbytes / best


def matmul_throughput(device: str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """FLOP/s of a square matrix product in ``dtype`` on ``device`` (2048² on a CPU, 8192² on a GPU),
    best of ``repeats`` after one warm-up."""
    n = 2048 if torch.device(device).type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = min(_timed(lambda: a @ b, device) for _ in range(1 + repeats))
    return 2 * n**3 / best


def _timed(fn, device: str) -> float:
    start = now(device)
    fn()
    return now(device) - start


def forward_overhead(device: str = "cpu", steps: int = 16) -> float:
    """Seconds of one greedy decode step of the 32-layer LLaVA-1.5 replica at its tiny widths, B = 1,
    on ``device``: the time an eager 32-layer forward takes when its arithmetic is negligible."""
    model, processor = replicas.build("llava-1.5")
    model = model.to(device).eval()
    inputs = encode(model, processor, [make_scene("test", 0).image], [PROMPT_TEXT])
    with eos_disabled(model):
        timed_decode(model, inputs, "greedy", {}, 2)  # warm-up
        return statistics.median(timed_decode(model, inputs, "greedy", {}, steps).steps)


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
        head_params=model.get_output_embeddings().weight.numel(),
    )


def limits(spec: budget.Model, method: str, timing: Timing, bandwidth: float, flops: float, itemsize: int) -> tuple:
    """``(prefill seconds, step seconds)`` of ``method`` if bound only by bytes read and FLOPs, with
    weights of ``itemsize`` bytes (the cache at its fp16 size, as the cost model counts it). The
    forwards are the ones ``timing`` saw (a method whose options drop its second branch, like one-pass
    PAI, is charged one branch); the vision passes are the method's registered ones."""
    weights = budget.Weights(float(itemsize), 1.0)

    def bound(work: tuple[float, float]) -> float:
        return max(work[0] / flops, work[1] / bandwidth)

    batch, prompt = timing.prefills[0]
    vision = (batch * spec.vision_flops, (spec.total_params - spec.lm_params) * itemsize)
    prefill = methods.get(method).passes.vision * bound(vision)
    prefill += sum(bound(budget.forward_work(spec, weights, rows, positions, 0)) for rows, positions in timing.prefills)
    step = bound(budget.forward_work(spec, weights, timing.rows, 1, prompt))
    return prefill, step


# --------------------------------------------------------------------------- the section


def proxy_sections(
    costed: dict,
    batches: tuple[int, ...],
    rounds: int,
    layers: int = 2,
    vision_layers: int = 2,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Iterator[list[str]]:
    """The RESULTS.md section: the machine's limit, then one table per batch size; yielded again
    after each batch size, so that a long run keeps what it measured."""
    model, processor = replicas.proxy(layers, vision_layers, device, dtype)
    model.eval()
    spec = proxy_spec(model)
    bandwidth, flops = memory_bandwidth(device), matmul_throughput(device, dtype)
    overhead = forward_overhead(device)
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else platform.processor() or "CPU"
    precision = str(dtype).removeprefix("torch.")
    lines = [
        f"## The width-realistic proxy ({layers} + {vision_layers} layers, {precision}, {name})",
        "",
        f"Proxy: LLaVA-1.5 at llava-1.5-7b-hf's widths, {spec.total_params / 1e9:.2f} B parameters, {precision}; "
        f"the language model reads {spec.lm_params * dtype.itemsize / 2**30:.2f} GiB of weights per forward. "
        f"This machine ({name}): memory bandwidth {bandwidth / 1e9:.1f} GB/s (reading a 1 GiB tensor), matmul "
        f"{flops / 1e12:.2f} TFLOP/s ({precision}), best of 5 each, {torch.get_num_threads()} torch thread(s). "
        f"Prefill: start of `decode` to its first decode step; step: one generated token to the next (median of "
        f"{STEPS}); {rounds} rounds, each method beside a greedy decode; medians with the min-max over rounds. "
        "Limit: the roofline of the forwards each method was seen to run (`budget.forward_work`) at the measured "
        "bandwidth and FLOP/s; fraction = limit / measured. One eager forward of a 32-layer decoder whose "
        "arithmetic is negligible (a decode step of the LLaVA-1.5 replica at tiny widths, B = 1) takes "
        f"{overhead * 1e3:.1f} ms here.",
        "",
    ]
    with eos_disabled(model):
        for batch in batches:
            images = [make_scene("test", i).image for i in range(batch)]
            inputs = encode(model, processor, images, [PROMPT_TEXT] * batch)
            costs = paired_costs(model, inputs, costed, rounds)
            lines += _table(costs, costed, spec, batch, bandwidth, flops, dtype.itemsize)
            yield lines


def _table(costs, costed, spec, batch, bandwidth, flops, itemsize) -> list[str]:
    prompt = next(iter(costs.values())).timing.prefills[0][1]
    lines = [
        f"B = {batch}, prompt {prompt} positions:",
        "",
        "| method | prefill | prefill / greedy | goal | prefill limit (fraction) | per step | step / greedy | goal | "
        "verdict | step limit (fraction) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, cost in costs.items():
        prefill_limit, step_limit = limits(spec, costed[label][0], cost.timing, bandwidth, flops, itemsize)
        prefill, step = statistics.median(cost.prefill), statistics.median(cost.step)
        step_goal, prefill_goal = STEP_GOALS.get(label), PREFILL_GOALS.get(label)
        verdicts = [verdict(cost.step_ratio, step_goal), verdict(cost.prefill_ratio, prefill_goal)]
        lines.append(
            f"| {label} | {_seconds(prefill)} | {_spread(cost.prefill_ratio)} | {_goal(prefill_goal)} | "
            f"{_seconds(prefill_limit)} ({prefill_limit / prefill:.2f}) | {_seconds(step)} | "
            f"{_spread(cost.step_ratio)} | {_goal(step_goal)} | "
            f"{'; '.join(f'{kind} {v}' for kind, v in zip(('step', 'prefill'), verdicts) if v)} | "
            f"{_seconds(step_limit)} ({step_limit / step:.2f}) |"
        )
    return [*lines, ""]


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _goal(goal: float | None) -> str:
    return f"<= {goal}x" if goal is not None else ""
