"""Measure the embedded tiny model on held-out test scenes and write its model card.

    python -m avisc_lib.tiny.card            # writes avisc_lib/tiny/weights/{README.md,card.json}

Everything is greedy decoding on the ``test`` split (scenes never seen in training), seeded.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..benchmarks.parsers import get_parser
from ..benchmarks.pope import pope_metrics
from ..course import ablation as analysis
from ..generation import generate
from ..models.loading import load_model, tiny_model_path
from ..world import questions as Q
from ..world.scenes import make_scene, object_tokens
from .organism import attention_rows, organism_table

CHECK_SCENES = 100  # the organism rows recomputed by tests/tiny/test_tiny_model.py
# (row, goal) of the organism table; row names are keys of organism_table's result.
ORGANISM_GOALS = [
    ("top5_share", "top-5 image tokens' share of the answer position's image attention", ">= 0.50"),
    ("blind_on_background", "blind tokens lying on background patches", ">= 0.80"),
    ("sink_images", "images with a visual sink token (VAR, tau scaled to the width)", ">= 0.90"),
    ("sink_blind_jaccard", "Jaccard(sinks, blind set); chance in brackets", ">= 3x chance"),
    ("keep_blind_minus_random", "accuracy, keep blind only - keep random only (same size)", "<= -0.05"),
    ("zero_blind_minus_random", "accuracy, zero blind - zero random (same size)", ">= -0.01"),
    ("avisc_minus_greedy", "POPE adversarial accuracy, AvisC - greedy (argmax, paired)", ">= +0.030, interval above 0"),
    (
        "avisc_minus_random_mask",
        "POPE adversarial accuracy, AvisC - random_mask (paired)",
        ">= +0.020, interval above 0",
    ),
    ("greedy_random", "greedy POPE accuracy, random split", ">= 0.85"),
    ("greedy_adversarial", "greedy POPE accuracy, adversarial split", "<= random - 0.05"),
]
# Disjoint ranges of test-split scene indices per measurement.
OFFSETS = {"random": 0, "popular": 10_000, "adversarial": 20_000, "families": 30_000, "blind": 40_000}


def pope_split(model, processor, kind: str, n_scenes: int) -> dict:
    """POPE-style balanced split: per scene one positive and one ``kind`` negative."""
    items = Q.existence_set("test", n_scenes, OFFSETS[kind], kinds=(kind,), seed=11)
    scenes, qs = [scene for scene, _ in items], [q for _, q in items]
    answers = generate(
        model,
        processor,
        [s.image for s in scenes],
        [q["question"] for q in qs],
        method="greedy",
        max_new_tokens=4,
        batch_size=64,
    )
    parse = get_parser("pope", "official")
    return pope_metrics([q["answer"] for q in qs], [parse(a) for a in answers])


def family_accuracy(model, processor, n_scenes: int) -> dict:
    """Exact-match accuracy of colour, shape, count and position questions, and caption stats."""
    rng = np.random.default_rng(12)
    asked = {f: [] for f in ("colour", "shape", "count", "position", "caption")}
    for i in range(OFFSETS["families"], OFFSETS["families"] + n_scenes):
        scene = make_scene("test", i)
        for family, items in asked.items():
            q = Q.sample_question(scene, family, rng)
            if q is not None:
                items.append((scene, q))
    result = {}
    for family, items in asked.items():
        answers = generate(
            model,
            processor,
            [s.image for s, _ in items],
            [q["question"] for _, q in items],
            method="greedy",
            max_new_tokens=32,
            batch_size=64,
        )
        result[family] = {
            "n": len(items),
            "exact": float(np.mean([a == q["answer"] for a, (_, q) in zip(answers, items)])),
        }
        if family == "caption":
            result[family].update(caption_stats([s for s, _ in items], answers))
    return result


def mentioned(caption: str) -> set[str]:
    """Categories named in a caption of the form 'a red circle, a blue square and ...'."""
    words = caption.replace(",", " ").replace(".", " ").split()
    return {f"{a} {b}" for a, b in zip(words, words[1:]) if f"{a} {b}" in Q.CATEGORIES}


def caption_stats(scenes, captions) -> dict:
    """Object recall, share of mentioned objects that are absent, captions with a co-occurring ghost."""
    recall, ghosts, cooc = [], [], []
    for scene, text in zip(scenes, captions):
        named, present = mentioned(text), set(scene.categories)
        recall.append(len(named & present) / len(present))
        ghosts += [c not in present for c in named]
        partners = {p for c in present for p in Q.cooccurring(c)} - present
        cooc.append(bool(named & partners))
    return {
        "object_recall": float(np.mean(recall)),
        "hallucinated_mentions": float(np.mean(ghosts)),
        "captions_with_cooccurring_ghost": float(np.mean(cooc)),
    }


def blind_token_study(model, processor, n_scenes: int, seed: int = 0) -> dict:
    """Attention statistics and the masking ablation on balanced existence questions."""
    items = Q.existence_set("test", n_scenes, start=OFFSETS["blind"])
    study = analysis.run_study(
        model, processor, [s.image for s, _ in items], [q["question"] for _, q in items], batch_size=100, seed=seed
    )
    on_object = torch.from_numpy(np.stack([object_tokens(s) for s, _ in items]))
    stats = analysis.attention_summary(study.attention, study.blind, on_object)
    summary = {key: float(value.mean()) for key, value in stats.items()}
    labels = np.array([q["answer"] == "yes" for _, q in items])
    summary["ablation"] = {}
    for name in study.logits:
        said_yes = study.margin(name).cpu().numpy() > 0
        summary["ablation"][name] = {
            "accuracy": float(np.mean(said_yes == labels)),
            "yes_ratio": float(np.mean(said_yes)),
        }
    summary["n_questions"] = len(items)
    return summary


NOTES = """## Reading the numbers

- The targets for an embedded model that teaches something hold: POPE-style random-split accuracy
  is high but not saturated, adversarial (co-occurring, same-colour) negatives are much harder and
  are answered "yes" far more often (the prior-driven hallucination POPE measures), and the
  yes-ratio on the random split stays near 0.5.
- Position questions ("is A to the left of B?") stay near chance: the family had 8 % of the
  stage-2 mix and was not learned. Shape is weaker than colour: the stage-0 tower reached
  only about 0.57 patch-class accuracy (12 classes) in 1500 steps on this world.
- **AvisC's premise does not hold for this model.** High-attention ("blind") tokens lie almost all
  on object patches, not on background, and the masking ablation cannot tell blind tokens from a
  random set of the same size. A search for a training recipe that grows visual sinks at this
  scale (towers, language models, text stages; the log is `results/organism/` in the repository)
  has not found one. Nothing here plants attention or weights by hand; notebooks 01-03 show the
  controls next to the method.
- The training minutes above were measured with other jobs sharing the two cores; a short run with
  the machine to itself went at about 3.4 steps/s in stages 0 and 2, i.e. about 18 minutes in all.
"""


def render_card(card: dict) -> str:
    """The model card as Markdown."""
    log, fam, blind = card["training"], card["families"], card["blind_tokens"]
    lines = [
        '# Embedded tiny LLaVA (`load_model("tiny")`)',
        "",
        "A `LlavaForConditionalGeneration` (CLIP vision tower, MLP projector, Llama language model) "
        "trained from scratch by `python -m avisc_lib.tiny.train` on the synthetic scene world "
        "(`avisc_lib.world`). Measured by `python -m avisc_lib.tiny.card` on held-out test scenes, greedy decoding.",
        "",
        "## Model",
        "",
        f"- parameters: {card['parameters']:,}; safetensors file: {card['file_bytes']:,} bytes (fp32)",
        "- vision: CLIP ViT, hidden 128, 3 layers, 4 heads, 64x64 px, patch 8 -> 64 image tokens; "
        "`vision_feature_layer=-1`, CLS dropped",
        "- language model: Llama, hidden 128, 4 layers, 4 heads; word-level tokenizer "
        f"({card['vocab_size']} tokens); prompt `USER: <image>\\n{{question}} ASSISTANT:`",
        "",
        "## Training (seed 0, 2 CPU threads)",
        "",
        "| stage | what trains | steps | minutes |",
        "|---|---|---|---|",
    ]
    names = {
        "0": "vision tower + throw-away heads (patch class, presence, count)",
        "1": "projector, on captions",
        "2": "projector + language model, all question families",
    }
    for stage, info in log["stages"].items():
        steps = info["history"][-1]["step"] if info["history"] else "-"
        lines.append(f"| {stage} | {names[stage]} | {steps} | {info['minutes']} |")
    lines += [
        "",
        f"Stage-0 tower on 512 validation scenes: {json.dumps(log['stages']['0']['history'][-1])}",
        "",
        "Stage-2 existence accuracy on 600 validation questions (yes-logit > no-logit) during training:",
        "",
        "| step | accuracy | positives | random neg. | popular neg. | adversarial neg. | yes-ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in log["stages"]["2"]["history"]:
        lines.append(
            f"| {h['step']} | {h['accuracy']:.3f} | {h['positive']:.3f} | {h['random']:.3f} | "
            f"{h['popular']:.3f} | {h['adversarial']:.3f} | {h['yes_ratio']:.3f} |"
        )
    lines += [
        "",
        "## Held-out accuracy (test split, greedy)",
        "",
        "POPE-style existence, each split half yes / half no (official POPE parser):",
        "",
        "| split | n | accuracy | precision | recall | F1 | yes-ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in Q.NEGATIVE_KINDS:
        m = card["pope"][kind]
        n = m["TP"] + m["FP"] + m["TN"] + m["FN"]
        lines.append(
            f"| {kind} | {n} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
            f"{m['f1']:.3f} | {m['yes_ratio']:.3f} |"
        )
    lines += ["", "Other question families (exact match):", "", "| family | n | accuracy |", "|---|---|---|"]
    lines += [f"| {f} | {v['n']} | {v['exact']:.3f} |" for f, v in fam.items()]
    cap = fam["caption"]
    lines += [
        "",
        f"Captions: object recall {cap['object_recall']:.3f}; {cap['hallucinated_mentions']:.3f} of "
        f"mentioned objects are absent; {cap['captions_with_cooccurring_ghost']:.3f} of captions name an absent "
        "object of a present object's colour theme.",
        "",
        f"## Blind tokens ({blind['n_questions']} existence questions, layer_gamma 0.5, lambda 1)",
        "",
        f"- share of the last prompt position's attention on the 64 image tokens: {blind['image_share']:.3f}",
        f"- top-1 token's share of image attention: {blind['top1_share']:.3f} (uniform: 0.016); "
        f"top-5: {blind['top5_share']:.3f}",
        f"- blind tokens per image: {blind['n_blind']:.2f}",
        f"- blind tokens on object patches: {blind['blind_on_object']:.3f}, while object patches are "
        f"{blind['object_token_rate']:.3f} of tokens and receive {blind['attention_on_object']:.3f} of image attention",
        "",
        "Yes/no accuracy (yes-logit > no-logit) when image tokens are zeroed after the projector:",
        "",
        "| condition | accuracy | yes-ratio |",
        "|---|---|---|",
    ]
    lines += [f"| {c} | {v['accuracy']:.3f} | {v['yes_ratio']:.3f} |" for c, v in blind["ablation"].items()]
    lines += ["", NOTES, ""] + organism_lines(card["organism"])
    return "\n".join(lines)


def _value(row: str, table: dict) -> str:
    value = table[row]
    if isinstance(value, dict):  # a paired difference
        return f"{value['mean']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]"
    if row == "sink_blind_jaccard":
        return f"{value:.3f} ({table['sink_blind_jaccard_chance']:.3f})"
    return f"{value:.3f}"


def organism_lines(table: dict) -> list[str]:
    """The model-organism table: does this model show visual sinks and AvisC's premise?"""
    lines = [
        "## Visual sinks and AvisC's premise (the model-organism table)",
        "",
        f"{table['n_questions']} existence questions for the attention rows (sink threshold tau = "
        f"{table['tau']}, VAR's 20 scaled by sqrt(D / 4096)); POPE-style splits of the same size for the "
        "decoding rows; 95 % paired bootstrap intervals.",
        "",
        "| measure | value | goal for an organism |",
        "|---|---|---|",
    ]
    lines += [f"| {text} | {_value(row, table)} | {goal} |" for row, text, goal in ORGANISM_GOALS]
    return lines + [""]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=tiny_model_path())
    ap.add_argument("--scenes", type=int, default=300, help="scenes per measurement")
    ap.add_argument("--render-only", action="store_true", help="rewrite README.md from card.json")
    args = ap.parse_args(argv)
    if args.render_only:
        (args.out / "README.md").write_text(render_card(json.loads((args.out / "card.json").read_text())))
        return
    torch.manual_seed(0)
    start = time.time()
    model, processor = load_model("tiny", device="cpu")
    card = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "file_bytes": (tiny_model_path() / "model.safetensors").stat().st_size,
        "vocab_size": len(processor.tokenizer),
        "training": json.loads((tiny_model_path() / "train_log.json").read_text()),
        "pope": {kind: pope_split(model, processor, kind, args.scenes // 2 * 2) for kind in Q.NEGATIVE_KINDS},
        "families": family_accuracy(model, processor, args.scenes),
        "blind_tokens": blind_token_study(model, processor, args.scenes),
        "organism": organism_table(model, processor, args.scenes),
        "organism_check": attention_rows(model, processor, CHECK_SCENES),
    }
    card["measure_seconds"] = round(time.time() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "card.json").write_text(json.dumps(card, indent=1))
    (args.out / "README.md").write_text(render_card(card))
    print(render_card(card))


if __name__ == "__main__":
    main()
