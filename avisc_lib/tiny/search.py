"""Search for a vision-tower recipe in which high-norm "sink" tokens emerge on background patches.

    python -m avisc_lib.tiny.search                       # every variant not yet in the log
    python -m avisc_lib.tiny.search --only cls-w256-d6    # one variant
    python -m avisc_lib.tiny.search --list                # the grid and what is done
    python -m avisc_lib.tiny.search --language NAME       # LLaVA stages on a searched tower + the organism table
    python -m avisc_lib.tiny.search --measure NAME        # that table again, on --organism-scenes, no training
    python -m avisc_lib.tiny.search --summary             # both logs as markdown tables

This is the first half of the model-organism search: large ViTs trained long on global objectives
grow high-norm artefact tokens in redundant background patches (Darcet et al., arXiv 2309.16588),
and LLaVA's visual sink tokens descend from them (Kang et al., ICLR 2025). The tower is cheap to
train alone, so each variant trains only the tower and measures, per layer and at checkpoints
during training, whether outliers appear and where they sit. Towers that grow background outliers
go on to the language-model stages of :mod:`.train`: ``--language`` trains them on a searched
tower (optionally after a text-only stage, in words or bytes, from scratch or from a language model
pretrained on prose by :mod:`.prose`, and at another language-model size) and logs the
organism table and a per-layer language profile to ``--lm-log``.

Only pressures the literature names are varied: the objective (per-patch labels, which tie each
patch to its content, against global targets read from the CLS token alone), width, depth, the
number of patches, training length and weight decay. Nothing targets norms or attention.

Every variant writes one JSON line to ``--log`` when it finishes (recipe, minutes, the measures
at each checkpoint); a rerun skips the variants already logged, and an interrupted variant
resumes from its last checkpoint under ``--work``. ``--language`` checkpoints each of its stages
every 250 steps (beside the model folder it saves, ``<folder>.checkpoints``): rerunning the same
command resumes it, and the checkpoints go once its row is logged.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    LlavaForConditionalGeneration,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from ..world import questions as Q
from ..world.scenes import CATEGORIES, CATEGORY_ID, IMAGE_SIZE, WorldConfig, make_scene, object_tokens, patch_labels
from .build import EMBEDDED_LM, LM_FAMILIES, LMSize, build_model
from .data import pixel_values
from .organism import background_share, language_profile, organism_table
from .train import (
    NO_TEXT,
    Checkpoint,
    TextStage,
    TowerHeads,
    optimise,
    run_lm_stage,
    run_text_stage,
    text_processor,
)

LOG = Path("results/organism/tower_log.jsonl")  # relative to the repository root
LM_LOG = Path("results/organism/lm_log.jsonl")
MEASURE_SCENES = 128
QUADRANTS = 4


@dataclass(frozen=True)
class Recipe:
    """One tower variant. ``objective``: ``patch`` (today's stage 0), ``cls`` (global targets only,
    read from the pooled token) or ``both`` (the two together, DINOv2's local + global pressure).

    ``tower``: ``clip`` (LLaVA's kind, with a CLS token) or ``siglip`` (no CLS: the global targets
    are read by the tower's attention-pooling head, so no token is reserved for them).
    ``registers``: a number builds a DINOv2 tower with that many register tokens (Darcet et al.),
    so that 0 and 4 registers compare the same architecture. ``texture``: the world's background
    field amplitude (:class:`~avisc_lib.world.scenes.WorldConfig`); 0 is the embedded model's world.
    ``mlp_ratio``: the MLP's width over the model's (ViTs use 4; the embedded tower 2).
    """

    name: str
    objective: str = "cls"
    width: int = 128
    depth: int = 3
    patch: int = 8
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    registers: int | None = None
    seed: int = 0
    tower: str = "clip"
    texture: int = 0
    mlp_ratio: int = 2

    @property
    def grid(self) -> int:
        return IMAGE_SIZE // self.patch

    @property
    def first_patch(self) -> int:
        """Index of the first patch token in the tower's sequence (after CLS and any registers)."""
        return 0 if self.tower == "siglip" else 1 + (self.registers or 0)

    @property
    def world(self) -> WorldConfig:
        return WorldConfig(texture=self.texture)


def _r(name: str, objective: str = "cls", **kw) -> Recipe:
    return Recipe(name, objective, **kw)


GRID = [  # cheapest first; names say what differs from the default (cls, w128, d3, patch 8, 3000 steps)
    _r("cls-w128-d3"),
    _r("cls-w128-d6", depth=6),
    _r("cls-w256-d6", width=256, depth=6),
    _r("cls-w128-d6-wd0.1", depth=6, weight_decay=0.1),
    _r("cls-w128-d6-p4", depth=6, patch=4),
    _r("cls-w128-d6-lr3e-3", depth=6, lr=3e-3),  # Gu et al.: a larger learning rate grows sinks sooner
    _r("cls-w256-d6-long", width=256, depth=6, steps=12000),
    _r("cls-w256-d8-p4-long", width=256, depth=8, patch=4, steps=12000),
    _r("patch-w128-d3", objective="patch"),  # today's stage-0 objective, the baseline
    _r("cls-w128-d6-dinov2-r0", depth=6, registers=0),  # the registers' causal pair, same architecture
    _r("cls-w128-d6-dinov2-r4", depth=6, registers=4),
    # Textured backgrounds: averaging over background is no longer a stable no-op, so a head
    # with nothing to read needs a dedicated dump; without a CLS token none is free.
    _r("cls-w128-d6-tex40", depth=6, texture=40),
    _r("siglip-both-w128-d6-tex40", objective="both", depth=6, tower="siglip", texture=40),
    _r("siglip-cls-w128-d6-tex40", depth=6, tower="siglip", texture=40),
    _r("both-w128-d6-tex40", objective="both", depth=6, texture=40),
    # Gu et al.: a larger learning rate and weight decay strengthen sinks; deeper stacks need no-op
    # heads more (over-mixing), at half the cost per layer when narrower.
    _r(
        "siglip-both-w128-d6-tex40-lr3e-3-wd0.1", "both", depth=6, lr=3e-3, weight_decay=0.1, tower="siglip", texture=40
    ),
    _r("siglip-both-w64-d12-tex40", "both", width=64, depth=12, tower="siglip", texture=40),
    # The embedded model's stage 0 (1500 steps) in a textured world: the language side's control.
    _r("patch-w128-d3-tex40", "patch", steps=1500, texture=40),
    # Long runs (resumable across sessions): artefacts appear after much of a long training, in
    # supervised (DeiT-III) and contrastive (OpenCLIP) ViTs with CLS, even small ones; ViT MLPs are 4x.
    _r("cls-w64-d12-mlp4-tex40-24k", width=64, depth=12, mlp_ratio=4, steps=24000, weight_decay=0.05, texture=40),
    _r(
        "both-w64-d12-mlp4-tex40-24k",
        "both",
        width=64,
        depth=12,
        mlp_ratio=4,
        steps=24000,
        weight_decay=0.05,
        texture=40,
    ),
]


# ------------------------------------------------------------------------------ model and targets
def build_tower(recipe: Recipe) -> CLIPVisionModel | Dinov2WithRegistersModel:
    """A vision tower of the recipe's size (seeded), with eager attention so weights can be read."""
    sizes = dict(
        hidden_size=recipe.width,
        intermediate_size=recipe.mlp_ratio * recipe.width,
        num_hidden_layers=recipe.depth,
        num_attention_heads=max(4, recipe.width // 64),
        image_size=IMAGE_SIZE,
        patch_size=recipe.patch,
    )
    if recipe.tower == "siglip":
        config, model_class = SiglipVisionConfig(**sizes, vision_use_head=True), SiglipVisionModel
    elif recipe.registers is None:
        config, model_class = CLIPVisionConfig(**sizes, projection_dim=recipe.width), CLIPVisionModel
    else:
        config = Dinov2WithRegistersConfig(**sizes, num_register_tokens=recipe.registers)
        model_class = Dinov2WithRegistersModel
    config._attn_implementation = "eager"
    torch.manual_seed(recipe.seed)
    return model_class(config)


class Heads(TowerHeads):
    """Stage 0's throw-away heads plus object quadrants (12 x 4), for the ``cls`` objective."""

    def __init__(self, width: int):
        super().__init__(width)
        self.quadrant = nn.Linear(width, len(CATEGORIES) * QUADRANTS)


def targets(scenes, patch: int) -> dict[str, torch.Tensor]:
    """Training targets of a batch; ``quadrant[B, 12, 4]`` marks where each present class sits."""
    presence = torch.zeros(len(scenes), len(CATEGORIES))
    quadrant = torch.zeros(len(scenes), len(CATEGORIES), QUADRANTS)
    for i, s in enumerate(scenes):
        for o in s.objects:
            c = CATEGORY_ID[o.category] - 1
            presence[i, c] = 1
            quadrant[i, c, 2 * (o.cy >= IMAGE_SIZE // 2) + (o.cx >= IMAGE_SIZE // 2)] = 1
    return {
        "pixels": pixel_values([s.image for s in scenes]),
        "patch": torch.from_numpy(np.stack([patch_labels(s.label_map, patch) for s in scenes])),
        "presence": presence,
        "quadrant": quadrant,
        "count": torch.tensor([len(s.objects) - 1 for s in scenes]),
    }


def loss(recipe: Recipe, tower: nn.Module, heads: Heads, batch: dict) -> torch.Tensor:
    """``patch``: per-patch soft CE + presence + count from mean-pooled patches (as :mod:`.train`).
    ``cls``: presence + count + object quadrants from the pooled token alone; patches get no target.
    ``both``: the per-patch CE plus ``cls``'s global targets from the pooled token."""
    out = tower(pixel_values=batch["pixels"])
    bce = nn.functional.binary_cross_entropy_with_logits
    tokens = out.last_hidden_state[:, recipe.first_patch :]
    patch_ce = -(batch["patch"] * heads.patch(tokens).log_softmax(-1)).sum(-1).mean()
    if recipe.objective == "patch":
        pooled = tokens.mean(1)
        return (
            patch_ce
            + bce(heads.presence(pooled), batch["presence"])
            + 0.5 * nn.functional.cross_entropy(heads.count(pooled), batch["count"])
        )
    pooled = out.pooler_output  # CLS after the last layer norm, or the attention-pooling head
    quadrant = heads.quadrant(pooled).view(-1, len(CATEGORIES), QUADRANTS)
    global_terms = (
        bce(heads.presence(pooled), batch["presence"])
        + 0.5 * nn.functional.cross_entropy(heads.count(pooled), batch["count"])
        + bce(quadrant, batch["quadrant"])
    )
    return global_terms + patch_ce if recipe.objective == "both" else global_terms


# ------------------------------------------------------------------------------------- measures
def top5_share(weights: torch.Tensor) -> float:
    """Mean share of each row of ``weights[n, patches]`` held by its 5 largest entries."""
    return round(float(weights.topk(5, dim=1).values.sum(1).div(weights.sum(1)).mean()), 3)


@torch.no_grad()
def measure(tower: CLIPVisionModel, recipe: Recipe, n: int = MEASURE_SCENES) -> dict:
    """Per layer, where the highest-norm patch tokens sit and how far they stand out.

    On ``n`` validation scenes: ``max_over_median`` (largest patch-token norm over the image's
    median), ``top_on_background`` (share of images whose highest-norm patch shows no object),
    ``outliers`` (patches per image with norm > 2x the median) and ``outliers_on_background``,
    ``cls_top5`` (share of the CLS token's attention, head mean, on its 5 most attended patches;
    None without a CLS token), ``received_top5`` (share of the attention that all patches pay to
    patches, head mean, received by the 5 patches receiving most) and ``received_top_on_background``
    (share of images whose most-received patch shows no object).
    """
    scenes = [make_scene("validation", i, recipe.world) for i in range(n)]
    background = torch.from_numpy(np.stack([~object_tokens(s, recipe.grid) for s in scenes]))
    out = tower(pixel_values=pixel_values([s.image for s in scenes]), output_hidden_states=True, output_attentions=True)
    layers = []
    for layer, (hidden, attn) in enumerate(zip(out.hidden_states[1:], out.attentions)):
        norms = hidden[:, recipe.first_patch :].norm(dim=-1)  # [n, patches]
        median = norms.median(dim=1, keepdim=True).values
        top = norms.argmax(dim=1)
        outlier = norms > 2 * median
        heads_mean = attn.mean(1)
        cls_attention = heads_mean[:, 0, recipe.first_patch :]  # [n, patches]
        received = heads_mean[:, recipe.first_patch :, recipe.first_patch :].sum(1)  # [n, patches]
        layers.append(
            {
                "layer": layer,
                "max_over_median": round(float((norms.max(1).values / median.squeeze(1)).mean()), 3),
                "top_on_background": round(float(background[torch.arange(n), top].float().mean()), 3),
                "outliers": round(float(outlier.sum(1).float().mean()), 3),
                "outliers_on_background": round(background_share(outlier, ~background), 3),
                "cls_top5": None if recipe.tower == "siglip" else top5_share(cls_attention),
                "received_top5": top5_share(received),
                "received_top_on_background": round(
                    float(background[torch.arange(n), received.argmax(1)].float().mean()), 3
                ),
            }
        )
    return {"background_rate": round(float(background.float().mean()), 3), "layers": layers}


# ------------------------------------------------------------------------------------- training
def train(recipe: Recipe, work: Path, every: int, measure_n: int = MEASURE_SCENES) -> dict:
    """Train the recipe's tower (resuming from ``work``), measuring and checkpointing every ``every`` steps."""
    tower, heads = build_tower(recipe), Heads(recipe.width)

    def batch(step: int) -> dict:
        scenes = [make_scene("train", step * recipe.batch + i, recipe.world) for i in range(recipe.batch)]
        return targets(scenes, recipe.patch)

    def on_eval() -> dict:
        tower.eval()
        row = measure(tower, recipe, measure_n)
        tower.train()
        return row

    history = optimise(
        list(tower.parameters()) + list(heads.parameters()),
        recipe.steps,
        recipe.lr,
        batch,
        lambda b: loss(recipe, tower, heads, b),
        recipe.name,
        on_eval=on_eval,
        every=every,
        weight_decay=recipe.weight_decay,
        checkpoint=Checkpoint(work / "checkpoint.pt", nn.ModuleDict({"tower": tower, "heads": heads}), every),
    )
    tower.save_pretrained(work / "tower", safe_serialization=True)
    (work / "recipe.json").write_text(json.dumps(asdict(recipe)))
    return {"recipe": asdict(recipe), "minutes": round(history[-1]["seconds"] / 60, 2), "history": history}


def train_language_side(
    tower_dir: Path,
    work: Path,
    steps1: int,
    steps2: int,
    scenes: int,
    seed: int = 0,
    text: TextStage = NO_TEXT,
    lm: LMSize = EMBEDDED_LM,
) -> dict:
    """Stages 1–2 of :mod:`.train` on a searched CLIP or SigLIP tower (frozen), in the world its
    recipe trained in, then the organism table; ``text.steps`` > 0 first pretrains the language
    model on text alone (:func:`.train.run_text_stage`); ``lm`` sizes the language model."""
    recipe = Recipe(**json.loads((tower_dir.parent / "recipe.json").read_text()))
    tower_class = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel}
    if recipe.registers is not None or recipe.tower not in tower_class:
        raise SystemExit(
            f"the language side takes CLIP or SigLIP towers (LlavaProcessor has no register tokens to drop); "
            f"{tower_dir} holds a {recipe.tower} tower with {recipe.registers} registers"
        )
    tower = tower_class[recipe.tower].from_pretrained(tower_dir)
    processor = text_processor(text, cls_token=recipe.tower == "clip")
    model = build_model(processor.tokenizer, seed=seed, vision=tower.config, lm=lm)
    model.model.vision_tower.load_state_dict(tower.state_dict())
    settings = argparse.Namespace(steps1=steps1, steps2=steps2, bs=32, seed=seed, texture=recipe.texture)
    items = Q.existence_set("validation", 300, world=recipe.world)
    out = work / model_folder(text, lm, seed)
    checkpoints = checkpoint_folder(out)
    text_history = []
    if text.steps:
        text_history = run_text_stage(model, processor, text, settings.bs, seed, checkpoints / "text.pt")
    history = {
        stage: run_lm_stage(model, processor, stage, settings, items, checkpoints / f"stage{stage}.pt")
        for stage in (1, 2)
    }
    minutes = round(sum(h[-1]["seconds"] for h in (text_history, *history.values()) if h) / 60, 2)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {
        "tower": recipe.name,
        "lm": asdict(lm),
        "seed": seed,
        "steps_text": text.steps,
        "text_stage": asdict(text),
        "text": text_history,
        "steps1": steps1,
        "steps2": steps2,
        "minutes": minutes,
        "stage2": history[2],
        "organism": organism_table(model, processor, scenes, world=recipe.world),
        "profile": language_profile(model, processor, world=recipe.world),
    }


def model_folder(text: TextStage, lm: LMSize = EMBEDDED_LM, seed: int = 0) -> str:
    """Where a language side is saved, named for its text stage, any language-model size but the embedded
    one, and any seed but 0."""
    stage = "model" if not text.steps else f"model-{text.name}"
    return "-".join(filter(None, [stage, lm.name, f"seed{seed}" if seed else ""]))


def checkpoint_folder(model_dir: Path) -> Path:
    """Where the language side saved in ``model_dir`` keeps its stages' checkpoints while it trains."""
    return model_dir.with_name(model_dir.name + ".checkpoints")


def load_language_side(work: Path, tower: str, text: TextStage, lm: LMSize, seed: int):
    """The language side ``--language`` saved for this tower, text stage, language model and seed:
    ``(model, processor, recipe)``; exits naming the folder when there is none."""
    model_dir = work / tower / model_folder(text, lm, seed)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"no language side at {model_dir}; run --language {tower} first")
    recipe = Recipe(**json.loads((work / tower / "recipe.json").read_text()))
    model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    return model, AutoProcessor.from_pretrained(model_dir), recipe


def log_row(log: Path, row: dict) -> None:
    """Append one JSON line to a search log, creating its folder."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(json.dumps(row) + "\n")


def log_rows(log: Path) -> list[dict]:
    """The rows of a JSON-lines search log, blank lines skipped."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def summary(log: Path) -> str:
    """A markdown table of the logged variants at their last checkpoint.

    Per variant: the last layer's largest-norm ratio, outliers per image and their share on
    background, and the layer where the highest-norm patch sits on background most often; then
    the last layer's received-attention concentration (top-5 share) and where its top patch sits.
    """
    head = (
        "| variant | tower | objective | texture | width x depth | steps | minutes | max/median norm "
        "| outliers / image | on background | most background top-norm (layer: share) "
        "| received top-5 | its top on background |\n" + "|---" * 13 + "|"
    )
    rows = [head]
    for row in log_rows(log):
        recipe, layers = row["recipe"], row["history"][-1]["layers"]
        last = layers[-1]
        best = max(layers, key=lambda layer: layer["top_on_background"])
        tower = recipe.get("tower", "clip") if recipe.get("registers") is None else f"dinov2 r{recipe['registers']}"
        received = (last.get("received_top5"), last.get("received_top_on_background"))
        mlp = f", mlp {recipe['mlp_ratio']}x" if recipe.get("mlp_ratio", 2) != 2 else ""
        rows.append(
            f"| {recipe['name']} | {tower} | {recipe['objective']} | {recipe.get('texture', 0)} "
            f"| {recipe['width']} x {recipe['depth']}{mlp} | {recipe['steps']} | {row['minutes']:.0f} "
            f"| {last['max_over_median']:.2f} | {last['outliers']:.2f} | {last['outliers_on_background']:.2f} "
            f"| {best['layer']}: {best['top_on_background']:.2f} "
            + ("| – | – |" if received[0] is None else f"| {received[0]:.2f} | {received[1]:.2f} |")
        )
    return "\n".join(rows)


def lm_size(row: dict) -> str:
    """`` (LM 8 x 256)`` for a language side whose language model is not the embedded one, `` (seed 1)`` for
    one whose seed is not 0, both when both hold, else ``""``."""
    lm = LMSize(**row.get("lm", {}))
    heads = f", {lm.heads} head{'s' * (lm.heads != 1)}" if lm.heads != EMBEDDED_LM.heads else ""
    size = "" if lm == EMBEDDED_LM else f"LM {lm.layers} x {lm.width}{heads}{lm.architecture}"
    seed = f"seed {row['seed']}" if row.get("seed") else ""
    named = ", ".join(filter(None, [size, seed]))
    return f" ({named})" if named else ""


def text_steps(row: dict) -> str:
    """A language-side row's text stage: its steps, then its settings off their defaults."""
    text = TextStage(**row.get("text_stage", {"steps": row.get("steps_text", 0)}))
    return f"{text.steps}" + (f" ({', '.join(text.settings)})" if text.settings else "")


def minutes(row: dict) -> str:
    """A language-side row's training minutes; ``remeasured`` for a row that only measured a saved one."""
    return "remeasured" if row.get("remeasured") else f"{row['minutes']:.0f}"


def sink_cell(organism: dict) -> str:
    """Sink tokens per image and their share on background (the background's share of tokens), or
    ``–`` for rows logged before ``organism_table`` measured them."""
    if "sinks_per_image" not in organism:
        return "–"
    return (
        f"{organism['sinks_per_image']:.1f} ({organism['sinks_on_background']:.2f} of "
        f"{organism['background_tokens']:.2f})"
    )


def language_summary(log: Path) -> str:
    """A markdown table of the language sides in ``log``: the organism table's rows per run."""

    def interval(d: dict) -> str:
        return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    rows = [
        "| tower | text steps | minutes | questions | top-5 share | blind on background | sink images "
        "| sinks / image (on background) | keep blind - random | zero blind - random | AvisC - greedy "
        "| AvisC - random_mask | greedy random / adversarial |\n" + "|---" * 13 + "|"
    ]
    for row in log_rows(log):
        o = row["organism"]
        rows.append(
            f"| {row['tower']}{lm_size(row)} | {text_steps(row)} | {minutes(row)} | {o['n_questions']} "
            f"| {o['top5_share']:.3f} | {o['blind_on_background']:.3f} | {o['sink_images']:.2f} "
            f"| {sink_cell(o)} | {o['keep_blind_minus_random']:+.3f} | {o['zero_blind_minus_random']:+.3f} "
            f"| {interval(o['avisc_minus_greedy'])} | {interval(o['avisc_minus_random_mask'])} "
            f"| {o['greedy_random']:.3f} / {o['greedy_adversarial']:.3f} |"
        )
    return "\n".join(rows)


def done(log: Path) -> set[str]:
    """Names of the variants already in the log."""
    if not log.exists():
        return set()
    return {row["recipe"]["name"] for row in log_rows(log)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, default=LOG)
    ap.add_argument("--work", type=Path, default=Path("runs/organism/towers"))
    ap.add_argument("--only", nargs="*", help="variant names (default: every variant not yet logged)")
    ap.add_argument("--every", type=int, default=500, help="steps between measurements and checkpoints")
    ap.add_argument("--steps", type=int, help="override every variant's steps (smoke runs)")
    ap.add_argument("--measure-scenes", type=int, default=MEASURE_SCENES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--list", action="store_true", help="print the grid and what is done, then stop")
    ap.add_argument("--summary", action="store_true", help="print the logs as markdown tables, then stop")
    ap.add_argument(
        "--language",
        metavar="TOWER",
        help="train stages 1-2 on this searched tower and log the organism table to --lm-log",
    )
    ap.add_argument(
        "--profile",
        metavar="TOWER",
        help="print the per-layer language profile of the model trained on this tower (with --steps-text)",
    )
    ap.add_argument(
        "--measure",
        metavar="TOWER",
        help="measure the organism table of the language side saved for this tower on --organism-scenes "
        "(with the --language flags that trained it) and log it to --lm-log",
    )
    ap.add_argument("--lm-log", type=Path, default=LM_LOG)
    ap.add_argument("--steps1", type=int, default=200)
    ap.add_argument("--steps2", type=int, default=2000)
    TextStage.add_arguments(ap)
    ap.add_argument("--lm-layers", type=int, default=4, help="the language side's language-model depth")
    ap.add_argument("--lm-width", type=int, default=128, help="the language side's language-model width")
    ap.add_argument("--lm-heads", type=int, default=4, help="the language side's attention heads per layer")
    ap.add_argument(
        "--lm-family", choices=LM_FAMILIES, default="llama", help="the language side's language-model architecture"
    )
    ap.add_argument("--lm-rope-theta", type=float, default=LMSize.rope_theta, help="the rotary base (rotary families)")
    ap.add_argument("--lm-attention-bias", action="store_true", help="biases on Llama's attention projections")
    ap.add_argument(
        "--lm-dropout", type=float, help="every dropout the language model has (default: the family's; GPT-2's 0.1)"
    )
    ap.add_argument("--organism-scenes", type=int, default=100, help="held-out scenes: 2 questions each per split")
    ap.add_argument("--seed", type=int, default=0, help="the language side's seed (initialisation and data order)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = LMSize(
        args.lm_layers,
        args.lm_width,
        args.lm_heads,
        args.lm_family,
        args.lm_rope_theta,
        args.lm_attention_bias,
        args.lm_dropout,
    )
    text = TextStage.from_args(args)
    if args.profile:
        model, processor, recipe = load_language_side(args.work, args.profile, text, lm, args.seed)
        for row in language_profile(model, processor, world=recipe.world):
            print(json.dumps(row))
        return
    if args.measure:
        model, processor, recipe = load_language_side(args.work, args.measure, text, lm, args.seed)
        table = organism_table(model, processor, args.organism_scenes, world=recipe.world)
        row = {"tower": recipe.name, "lm": asdict(lm), "seed": args.seed, "text_stage": asdict(text)}
        log_row(args.lm_log, row | {"remeasured": True, "organism": table})
        print(json.dumps(table, indent=1))
        return
    if args.language:
        tower_dir = args.work / args.language / "tower"
        if not (tower_dir / "config.json").is_file():
            raise SystemExit(f"no trained tower at {tower_dir}; run the tower search for {args.language!r} first")
        row = train_language_side(
            tower_dir,
            args.work / args.language,
            args.steps1,
            args.steps2,
            args.organism_scenes,
            seed=args.seed,
            text=text,
            lm=lm,
        )
        log_row(args.lm_log, row)
        checkpoints = checkpoint_folder(args.work / args.language / model_folder(text, lm, args.seed))
        if checkpoints.exists():  # stages of 0 steps save none
            shutil.rmtree(checkpoints)
        print(json.dumps(row["organism"], indent=1))
        return
    names = {r.name: r for r in GRID}
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(names)}")
    finished = done(args.log)
    if args.summary:
        print(summary(args.log))
        if args.lm_log.exists():
            print("\n" + language_summary(args.lm_log))
        return
    if args.list:
        for r in GRID:
            print(("done  " if r.name in finished else "to do ") + json.dumps(asdict(r)))
        return
    for recipe in [names[n] for n in args.only] if args.only else GRID:
        if recipe.name in finished:
            continue
        if args.steps:
            recipe = replace(recipe, steps=args.steps)
        log_row(args.log, train(recipe, args.work / recipe.name, min(args.every, recipe.steps), args.measure_scenes))
        print(f"logged {recipe.name} to {args.log}", flush=True)


if __name__ == "__main__":
    main()
