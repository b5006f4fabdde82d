"""Decode speed of AvisC against greedy and against the plain reference loop; attention memory.

    python scripts/decode_speed.py            # CPU, writes results/RESULTS.md
    python scripts/decode_speed.py --costs-only   # only section 3, the others kept
    python scripts/decode_speed.py --compile-only # only the compiled-decode section, the others kept
    python scripts/decode_speed.py --model proxy  # only the proxy section (scripts/speed_proxy.py), the others kept

1. AvisC / greedy wall time for 1-token answers and 64-token captions, B = 1 and B = 16, on the
   embedded tiny model (EOS disabled, so every row generates exactly T tokens).
2. Our AvisC against the test suite's plain reference (B = 1 at a time, eager attention, no KV
   cache, the whole sequence re-run each step; ``tests/core/test_decoding.py::reference_decode``).
3. Cost per decode step of every method relative to greedy at B = 16 over 64-token captions:
   the two-branch methods, the controls and the attention methods (PAI with and without its
   refinement, ClearSight, VAR, ONLY).
4. Peak memory of ``image_attention`` against eager ``output_attentions=True`` at a LLaVA-1.5-sized
   sequence (35 + 576 + 20 tokens, 32 layers x 32 heads, tiny widths), each in a fresh process.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "core")]

import speed_proxy  # noqa: E402 (scripts/, beside this file)
from conftest import row  # noqa: E402 (after sys.path gains tests/)
from test_decoding import reference_decode  # noqa: E402 (after sys.path gains tests/)

from avisc_lib.decoding import decode, eos_disabled  # noqa: E402 (after sys.path gains tests/)
from avisc_lib.hooks.capture import image_attention  # noqa: E402 (after sys.path gains tests/)
from avisc_lib.models.inputs import encode  # noqa: E402 (after sys.path gains tests/)
from avisc_lib.models.loading import tiny_model_path  # noqa: E402 (after sys.path gains tests/)
from avisc_lib.tiny.build import build_model, build_processor  # noqa: E402 (after sys.path gains tests/)
from avisc_lib.world.scenes import make_scene  # noqa: E402 (after sys.path gains tests/)

CAPTION = "Describe the image."


def tiny_model(path: Path):
    """The tiny LLaVA saved at ``path`` (random weights of the embedded architecture if absent)."""
    if (path / "model.safetensors").exists():
        model = LlavaForConditionalGeneration.from_pretrained(path).eval()
        return model, AutoProcessor.from_pretrained(path), f"trained weights from `{_shown(path)}`"
    processor = build_processor()
    return build_model(processor.tokenizer, seed=0).eval(), processor, f"RANDOM weights (`{_shown(path)}` absent)"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def best_times(runs: dict, repeats: int) -> dict[str, float]:
    """Minimum wall time of each callable over ``repeats`` interleaved rounds (least disturbed by other jobs)."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def batch(model, processor, size: int) -> dict[str, torch.Tensor]:
    return encode(model, processor, [make_scene("test", i).image for i in range(size)], [CAPTION] * size)


def ratio_table(model, processor, repeats: int) -> list[str]:
    """AvisC / greedy at 1 thread and at every core (per-step work is row-bound at B = 16)."""
    lines = [
        "| torch threads | B | new tokens | greedy | AvisC | AvisC / greedy | target |",
        "|---|---|---|---|---|---|---|",
    ]
    default_threads = torch.get_num_threads()
    for threads in sorted({1, os.cpu_count()}):
        torch.set_num_threads(threads)
        for size in (1, 16):
            inputs = batch(model, processor, size)
            for steps, target in ((1, "<= 2.1"), (64, "<= 1.5")):
                run = {
                    m: (lambda m=m, inputs=inputs, steps=steps: decode(model, inputs, method=m, max_new_tokens=steps))
                    for m in ("greedy", "avisc")
                }
                for fn in run.values():
                    fn()  # warm-up
                best = best_times(run, repeats)
                greedy, avisc = best["greedy"], best["avisc"]
                lines.append(
                    f"| {threads} | {size} | {steps} | {greedy * 1e3:.1f} ms | {avisc * 1e3:.1f} ms | "
                    f"{avisc / greedy:.2f}x | {target} |"
                )
    torch.set_num_threads(default_threads)
    return lines


def compile_section(model, processor, repeats: int) -> list[str]:
    """Eager against ``decode(..., compile=True)`` for greedy and AvisC, 64-token captions, 1 thread."""
    lines = [
        "## Compiled decode steps (`decode(..., compile=True)`)",
        "",
        "The decode steps under `torch.compile` (inductor) with a static KV cache; the prefill stays eager. "
        f"64-token captions, 1 torch thread, best of {repeats} interleaved runs after one warm-up run each "
        "(the first compiled call per batch shape compiles, ~10-25 s here, not counted). Tokens: whether the "
        "compiled run generated exactly the eager run's tokens.",
        "",
        "| B | method | eager | compiled | speed-up | tokens | AvisC / greedy, compiled | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for size in (1, 16):
        inputs = batch(model, processor, size)
        run, tokens = {}, {}
        for method in ("greedy", "avisc"):
            for compiled in (False, True):

                def fn(method=method, compiled=compiled, inputs=inputs):
                    return decode(model, inputs, method=method, max_new_tokens=CAPTION_STEPS, compile=compiled)

                run[method, compiled], tokens[method, compiled] = fn, fn()  # warm-up (and compilation)
        best = best_times(run, repeats)
        for method in ("greedy", "avisc"):
            eager, compiled = best[method, False], best[method, True]
            same = "same" if torch.equal(tokens[method, False], tokens[method, True]) else "DIFFERENT"
            ratio = f"{best['avisc', True] / best['greedy', True]:.2f}x" if method == "avisc" else ""
            lines.append(
                f"| {size} | {method} | {eager * 1e3:.1f} ms | {compiled * 1e3:.1f} ms | {eager / compiled:.2f}x | "
                f"{same} | {ratio} | {'<= 1.5x' if method == 'avisc' else '>= 2x faster'} |"
            )
    torch.set_num_threads(default_threads)
    return [*lines, ""]


def reference_table(model, processor) -> list[str]:
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    lines = ["| B | new tokens | plain reference | our AvisC | speed-up |", "|---|---|---|---|---|"]
    for size in (1, 16):
        inputs = batch(model, processor, size)
        for steps in (1, 64):
            ours = best_times(
                {"": lambda inputs=inputs, steps=steps: decode(model, inputs, method="avisc", max_new_tokens=steps)}, 3
            )[""]
            rows = [row(inputs, b) for b in range(size)]
            plain = best_times(
                {
                    "": lambda rows=rows, steps=steps: [
                        reference_decode(eager, r, "avisc", max_new_tokens=steps) for r in rows
                    ]
                },
                1,
            )[""]
            lines.append(f"| {size} | {steps} | {plain * 1e3:.0f} ms | {ours * 1e3:.0f} ms | {plain / ours:.1f}x |")
    return lines


# ------------------------------------------------------------------------------ cost per decode step

# label -> (method, options, goal): every method at its defaults, PAI also without its refinement.
COSTED = {
    "greedy": ("greedy", {}, ""),
    "avisc": ("avisc", {}, ""),
    "vcd": ("vcd", {}, ""),
    "m3id": ("m3id", {}, ""),
    "random_mask": ("random_mask", {}, ""),
    "zero_image": ("zero_image", {}, ""),
    "pai (refined, pai_gamma 1.1)": ("pai", {}, "~ avisc"),
    "pai (pai_gamma 1, one pass)": ("pai", {"pai_gamma": 1.0}, "<= 1.15x"),
    "clearsight": ("clearsight", {}, "<= 1.15x"),
    "var": ("var", {}, "<= 1.15x"),
    "only": ("only", {}, "<= 1.15x"),
}
COSTED_OPTIONS = {label: (method, options) for label, (method, options, _) in COSTED.items()}
ONE_PASS_GOAL = 1.15
CAPTION_STEPS = 64
COST_NOTES = [
    (
        "Where the cost of the attention methods comes from. The embedded model is tiny (4 layers, width 128, "
        "4 heads, a 51-token vocabulary), so a decode step of 16 rows is a few hundred small tensor operations whose "
        "time is mostly per-operation overhead, not arithmetic: a method's extra cost here is roughly the number of "
        "tensor operations it adds per step, each weighing about as much as one of the model's own matrix products. "
        "None of the methods adds a product of the model's width, so on a 7B model their share of a step should be "
        "smaller (not measured here)."
    ),
    "",
    (
        "- **PAI without refinement** edits the answer row in every layer (the paper's layers 2-32 of 32 scale to "
        "all 4 here). In an edited layer the step's attention is computed eagerly (scores, the edit, masked "
        "softmax, values: about a dozen operations) in place of one SDPA call. `hooks.edit` no longer runs SDPA "
        "for rows it then overwrites (every row of a decode step is edited), which removed one SDPA call per layer "
        "and step; what remains is the eager computation itself."
    ),
    "- **ClearSight** edits layers 9-15 of 32, one layer of 4 here, so only one layer per step runs eagerly.",
    (
        "- **VAR** edits the layers searched for sinks (2 to the last: 2 of 4 here); its redistribution first picks "
        "image-centric heads per row, about twenty operations per layer. Its hooks return at once in decode steps "
        "(sinks come from the prefill)."
    ),
    (
        "- **ONLY** leaves the model's forward as it is, but every step adds the last row's attention at its layer, "
        "outlier removal and the entropy-ratio head choice (several dozen small operations), the last layer's MLP, "
        "the norms and the LM head once more, and a contrast with two softmaxes and an L1 distance: about as many "
        "operations as one of the 4 decoder layers. ONLY's reported 1.07x is for "
        "a 32-layer model, where one layer's worth of work is a thirty-second."
    ),
    (
        "- **PAI with refinement** decodes the text-only branch beside the image one, one forward of 2B rows per "
        "step as AvisC, plus the one-pass edits on the first B rows. That branch is M3ID's (the prompt without its "
        "image tokens), so its step compares with M3ID's plus PAI's edits rather than with AvisC's: the text-only "
        "rows keep the prompt's length with the image positions turned into left padding, so every step carries a "
        "padding mask, while AvisC's second branch keeps the original mask (no padding in this batch)."
    ),
    "",
    (
        "On a shared machine single measurements spread widely (the min-max column), so the verdict reads the "
        "spread: met when every round's ratio is within the goal, missed when none is, and within noise of "
        "the goal when the rounds fall on both sides of it."
    ),
]


def step_costs(model, inputs, repeats: int) -> dict[str, speed_proxy.Costs]:
    """Per method, in :func:`speed_proxy.paired_rounds` beside a greedy decode: prefill (a 1-token
    decode) and mean decode step in CPU seconds, and both over the greedy's.

    A step is ``(t(1 + CAPTION_STEPS tokens) - t(1 token)) / CAPTION_STEPS`` (EOS is disabled, so both
    lengths are exact). CPU time of this process, not wall time: other jobs on the machine then slow
    it only through shared caches and cores, not by taking turns on them.
    """

    def run(label: str, tokens: int) -> float:
        method, options, _ = COSTED[label]
        start = time.process_time()
        decode(model, inputs, method=method, max_new_tokens=tokens, **options)
        return time.process_time() - start

    def measure(label: str) -> tuple[float, float, None]:
        short, long = run(label, 1), run(label, 1 + CAPTION_STEPS)
        return short, (long - short) / CAPTION_STEPS, None

    for label in COSTED:
        run(label, 2)  # warm-up
    return speed_proxy.paired_rounds(list(COSTED), repeats, measure)


def cost_table(model, processor, repeats: int, size: int = 16) -> list[str]:
    """Median prefill and step time of each method, its step over its paired greedy's, and whether it
    meets its goal (one-pass methods: <= ``ONE_PASS_GOAL``; refined PAI: against AvisC)."""
    costs = step_costs(model, batch(model, processor, size), repeats)
    two_branch = {label: statistics.median(costs[label].step_ratio) for label in ("avisc", "m3id")}
    header = "| method (B = {}) | prefill | per step | step / paired greedy step: median (min-max) | goal | verdict |"
    lines = [header.format(size), "|---|---|---|---|---|---|"]
    for label, cost in costs.items():
        ratio, ratios = statistics.median(cost.step_ratio), cost.step_ratio
        lines.append(
            f"| {label} | {statistics.median(cost.prefill) * 1e3:.1f} ms | "
            f"{statistics.median(cost.step) * 1e3:.2f} ms | {ratio:.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {COSTED[label][2]} | "
            f"{_verdict(COSTED[label][2], ratios, two_branch)} |"
        )
    return lines


def _verdict(goal: str, ratios: list[float], two_branch: dict[str, float]) -> str:
    """Refined PAI: its median step against AvisC's and M3ID's; a one-pass method: met, missed or within
    noise of ``ONE_PASS_GOAL`` by the spread of its ratios (:func:`speed_proxy.verdict`)."""
    if goal == "~ avisc":
        ratio = statistics.median(ratios)
        return f"{ratio / two_branch['avisc']:.2f}x AvisC's step, {ratio / two_branch['m3id']:.2f}x M3ID's"
    return speed_proxy.verdict(ratios, ONE_PASS_GOAL) if goal else ""


COST_HEADING = "## Cost per decode step of every method"


def cost_section(model, processor, repeats: int) -> list[str]:
    """The cost-per-step section: how it was measured (command, date, load), the table, the notes."""
    return [
        COST_HEADING,
        "",
        (
            f"Generated by `{' '.join(['python', 'scripts/decode_speed.py', *sys.argv[1:]])}` on "
            f"{time.strftime('%Y-%m-%d')}, load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
            f"(the machine is shared with other jobs). B = 16, {CAPTION_STEPS}-token captions, every method at its "
            f"defaults, {torch.get_num_threads()} torch thread(s). Prefill: a 1-token decode; per step: "
            f"((1 + {CAPTION_STEPS})-token decode - 1-token decode) / {CAPTION_STEPS}. Times are CPU time of the "
            f"process, medians over {repeats} rounds; in each round every method is measured right beside a greedy "
            "decode (alternately before and after it), its ratio is to that greedy step, and the methods' order "
            "rotates from round to round, so what load remains falls on the method and its greedy alike. Goal "
            "(issue 13): "
            f"one-pass methods <= {ONE_PASS_GOAL}x greedy, PAI with its refinement about AvisC."
        ),
        "",
        *cost_table(model, processor, repeats),
        "",
        *COST_NOTES,
        "",
    ]


def with_section(text: str, section: list[str]) -> str:
    """``text`` (a RESULTS.md) with the section under ``section[0]`` replaced, else put before the next one."""
    lines = text.split("\n")
    if section[0] in lines:
        start = lines.index(section[0])
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:
        start = end = next(i for i, line in enumerate(lines) if line == "## Our AvisC vs the plain reference loop")
    return "\n".join(lines[:start] + section + lines[end:])


# ------------------------------------------------------------------------------------ memory probe


def long_sequence_model():
    """LLaVA-1.5 shapes where they set the attention size: 576 image tokens, 32 layers x 32 heads."""
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=336, patch_size=14
    )
    widths = dict(hidden_size=128, intermediate_size=256)  # the tiny model's
    heads = dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)  # LLaVA-1.5-7B's
    text = LlamaConfig(vocab_size=1000, max_position_embeddings=1024, **widths, **heads)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=999, vision_feature_layer=-2)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    ids = torch.randint(3, 999, (1, 35 + 576 + 20))
    ids[0, 35:611] = 999
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.randn(1, 3, 336, 336)}
    return model, inputs


def memory_probe(mode: str) -> None:
    """Print ``peak RSS growth (MiB), bytes of attention kept`` for one forward in this process."""
    model, inputs = long_sequence_model()
    with torch.no_grad():
        model(**inputs, logits_to_keep=1)  # warm-up: allocator pools, lazy init
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if mode == "image_attention":
            kept = image_attention(model, inputs).nbytes
        else:
            model.set_attn_implementation("eager")
            kept = sum(a.nbytes for a in model(**inputs, output_attentions=True, logits_to_keep=1).attentions)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024, kept)


def memory_table() -> list[str]:
    lines = ["| capture | peak RSS growth | attention tensors kept |", "|---|---|---|"]
    for mode in ("image_attention", "output_attentions"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", mode], capture_output=True, text=True, check=True
        ).stdout.split()
        label = (
            "`image_attention` (SDPA + last-row recorder)"
            if mode == "image_attention"
            else "eager `output_attentions=True`"
        )
        lines.append(f"| {label} | {float(out[-2]):.0f} MiB | {int(out[-1]) / 2**20:.3f} MiB |")
    return lines


def machine() -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores, torch threads: {torch.get_num_threads()}",
        f"- load average at start: {os.getloadavg()[0]:.2f} (other jobs share the CPU when > 0)",
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=str(tiny_model_path()),
        help="a saved tiny LLaVA folder, or 'proxy': LLaVA-1.5's widths with 2 + 2 layers (scripts/speed_proxy.py)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes of the proxy section")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the proxy section")
    parser.add_argument("--layers", type=int, default=2, help="the proxy's language-model layers (7B: 32)")
    parser.add_argument("--vision-layers", type=int, default=2, help="the proxy's vision layers (CLIP-L: 24)")
    parser.add_argument("--device", default="cpu", help="the proxy's device (cpu, cuda)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "RESULTS.md", help="the report to update")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-probe", choices=["image_attention", "output_attentions"])
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="regenerate only the compiled-decode section of RESULTS.md, keeping the others",
    )
    parser.add_argument(
        "--costs-only",
        action="store_true",
        help="regenerate only the cost-per-step section of RESULTS.md, keeping the others",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe(args.memory_probe)
    if args.model == "proxy":
        compiled = {f"{m}, compiled": (m, {"compile": True}) for m in ("greedy", "avisc")}
        sections = speed_proxy.proxy_sections(
            {**COSTED_OPTIONS, **compiled},
            tuple(args.batches),
            args.rounds,
            args.layers,
            args.vision_layers,
            args.device,
            getattr(torch, args.dtype),
        )
        for section in sections:
            args.out.write_text(with_section(args.out.read_text(), section))  # after each batch size
        return print("\n".join(section))
    model, processor, weights = tiny_model(Path(args.model).resolve())
    with eos_disabled(model):  # every method generates exactly max_new_tokens
        write_report(args, model, processor, weights)


def write_report(args, model, processor, weights) -> None:
    """Measure and write RESULTS.md (or only its cost section)."""
    out = args.out
    if args.costs_only or args.compile_only:
        section = (cost_section if args.costs_only else compile_section)(model, processor, args.repeats)
        out.write_text(with_section(out.read_text(), section))
        return print("\n".join(section))
    report = [
        "# Decode speed and attention memory",
        "",
        f"Generated by `{' '.join(['python', 'scripts/decode_speed.py', *sys.argv[1:]])}` "
        f"on {time.strftime('%Y-%m-%d')}. "
        f'Model: the embedded tiny LLaVA architecture, {weights}. Prompt: "{CAPTION}" (64 image tokens + 10 text '
        "tokens); EOS disabled so every row generates exactly the stated number of tokens. "
        f"Times: best of {args.repeats} interleaved runs (reference table: ours best of 3, the reference 1 run).",
        "",
        *machine(),
        "",
        "## AvisC / greedy",
        "",
        *ratio_table(model, processor, args.repeats),
        "",
        "AvisC runs two prefills (the second needs the first one's attention) and then one forward of 2B rows "
        "per token, greedy one of B rows. A 1-token answer therefore costs about two prefills minus the shared "
        "vision pass. For captions the ratio is near 1 while a step costs the same for B and 2B rows "
        "(B = 1 here), and moves toward 2 when the step's work grows with the rows (B = 16 on one CPU thread).",
        "",
        *cost_section(model, processor, args.repeats),
        *compile_section(model, processor, args.repeats),
        "## Our AvisC vs the plain reference loop",
        "",
        "The reference is `tests/core/test_decoding.py::reference_decode`: one sample at a time, eager attention, "
        "no KV cache (each step re-runs the whole sequence for both branches).",
        "",
        *reference_table(model, processor),
        "",
        "## Attention capture memory at a LLaVA-1.5-sized prefill",
        "",
        "631 tokens (35 + 576 image + 20), text model with 32 layers x 32 heads (head dim 4), fp32, one "
        "forward in a fresh process each; growth of peak RSS over a warmed-up SDPA forward.",
        "",
        *memory_table(),
        "",
    ]
    out.write_text("\n".join(report))
    print(out.read_text())


if __name__ == "__main__":
    main()
