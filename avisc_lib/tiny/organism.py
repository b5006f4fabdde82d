"""The model-organism measures: does an embedded model show the phenomenon AvisC is about?

    table = organism_table(model, processor, n_scenes=300)   # the rows of the organism's card

Each row is measured on held-out ``test`` scenes, on ranges of scene indices that no other card
measurement uses:

* ``top5_share``: the 5 most attended image tokens' share of the answer position's image
  attention (all layers averaged, as :func:`analysis.attention_summary`); uniform is 5 / N.
* ``blind_on_background``: share of blind tokens (AvisC's rule, λ = 1, layer γ = 0.5) whose patch
  shows no object pixel.
* ``sink_images`` and ``sink_blind_jaccard`` (with ``..._chance``): VAR's visual sink tokens at a
  threshold scaled to the width (:func:`sink_tau`): the share of images with at least one, and
  their Jaccard overlap with the blind set against random sets of the blind set's size;
  ``sinks_per_image`` and ``sinks_on_background`` (against ``background_tokens``, the share of
  image tokens on background) say whether they are LLaVA's few background tokens or, say, the
  whole background carrying BOS's dimension.
* ``keep_blind_minus_random`` and ``zero_blind_minus_random``: yes/no accuracy of the first answer
  token (yes-logit > no-logit) when only the blind tokens are kept (or zeroed), minus the same
  with a random set of the same size.
* ``avisc_minus_greedy`` and ``avisc_minus_random_mask``: POPE-style adversarial accuracy, argmax,
  paired on the same questions, with a 95 % paired bootstrap interval.
* ``greedy_random`` and ``greedy_adversarial``: greedy POPE-style accuracy on those two splits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import PreTrainedModel, ProcessorMixin

from ..benchmarks.parsers import get_parser
from ..course import ablation as analysis
from ..generation import generate
from ..hooks.capture import record_last_query_attention
from ..hooks.layers import layer_inputs
from ..models import compat
from ..models.batching import batches
from ..models.inputs import embed_prompt, encode
from ..tokens.blind import random_like
from ..tokens.sinks import TAU, activation, bos_positions, sink_tokens
from ..world import questions as Q
from ..world.scenes import FLAT, WorldConfig, object_tokens

OFFSETS = {"attention": 50_000, "random": 60_000, "adversarial": 70_000}
VAR_WIDTH = 4096  # LLaMA-2-7B's hidden size, for which VAR's tau = 20 was set
METHODS = ("greedy", "avisc", "random_mask")
BOOTSTRAP = 2000


def sink_tau(hidden_size: int) -> float:
    """VAR's τ = 20 scaled to the width: φ = |x / rms(x)| is at most √D, so keep τ / √D fixed.

    20 · √(D / 4096): 20 at LLaMA-2-7B's D = 4096, 3.54 at the tiny model's D = 128.
    """
    return TAU * math.sqrt(hidden_size / VAR_WIDTH)


@torch.no_grad()
def language_profile(
    model: PreTrainedModel, processor: ProcessorMixin, n_scenes: int = 50, world: WorldConfig = FLAT
) -> list[dict]:
    """Per language-model layer, where the answer position's attention goes and how large activations get.

    On ``2 * n_scenes`` held-out existence questions (the attention rows' scenes), per layer:
    ``bos`` and ``image`` (head-mean shares of the last prompt position's attention),
    ``image_top5`` (the 5 most attended image tokens' share of the image's part),
    ``top1_on_background`` (share of questions whose most attended image token shows no object),
    and the largest |x / rms(x)| entering the layer (VAR's φ), averaged over BOS, background
    image tokens, object image tokens and the other text tokens (``phi_*``).
    """
    items = Q.existence_set("test", n_scenes, start=OFFSETS["attention"], world=world)
    grid = math.isqrt(model.config.image_seq_length)
    on_object = torch.from_numpy(np.stack([object_tokens(s, grid) for s, _ in items]))
    inputs = encode(model, processor, [s.image for s, _ in items], [q["question"] for _, q in items])
    prompt = embed_prompt(model, inputs)
    layers = range(model.config.get_text_config().num_hidden_layers)
    with record_last_query_attention(model) as rows, layer_inputs(model, layers) as hidden:
        compat.language_model_forward(model, prompt.embeds, prompt.attention_mask)
    batch = torch.arange(len(items))
    bos, image = bos_positions(prompt).cpu(), prompt.image_mask.cpu()
    text = prompt.attention_mask.cpu().bool() & ~image
    text[batch, bos] = False
    profile = []
    for layer in layers:
        attention = rows[layer].mean(1).cpu()  # [B, L]
        on_image = attention[image].view(len(items), -1)
        phi = activation(hidden[layer]).amax(-1).cpu()  # [B, L]
        image_phi = phi[image].view(len(items), -1)
        profile.append(
            {
                "layer": layer,
                "bos": round(float(attention[batch, bos].mean()), 4),
                "image": round(float(on_image.sum(1).mean()), 4),
                "image_top5": round(float((on_image.topk(5, 1).values.sum(1) / on_image.sum(1)).mean()), 4),
                "top1_on_background": round(float((~on_object)[batch, on_image.argmax(1)].float().mean()), 4),
                "phi_bos": round(float(phi[batch, bos].mean()), 3),
                "phi_background": round(float(image_phi[~on_object].mean()), 3),
                "phi_object": round(float(image_phi[on_object].mean()), 3),
                "phi_text": round(float(phi[text].mean()), 3),
            }
        )
    return profile


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict:
    """Mean of ``a - b`` (per-question 0/1 correctness) with a 95 % paired bootstrap interval."""
    diff = a.astype(float) - b.astype(float)
    draws = np.random.default_rng(seed).integers(0, len(diff), size=(BOOTSTRAP, len(diff)))
    low, high = np.percentile(diff[draws].mean(1), [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "n": len(diff)}


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-row Jaccard overlap of two masks ``[B, N]`` (rows where both are empty count 0)."""
    inter, union = (a & b).sum(1).float(), (a | b).sum(1).float()
    return float((inter / union.clamp(min=1)).mean())


def background_share(tokens: torch.Tensor, on_object: torch.Tensor) -> float:
    """Share of the tokens marked in ``tokens`` ``[B, N]`` whose patch shows no object (0 when none are)."""
    return float((tokens & ~on_object).sum() / tokens.sum().clamp(min=1))


def sink_placement(sinks: torch.Tensor, on_object: torch.Tensor) -> dict:
    """How many sink tokens an image has and where: masks ``[B, N]`` of sink and object tokens.

    ``sinks_per_image`` (mean over all images), ``sinks_on_background`` (share of sink tokens on
    background; 0 without sinks) and ``background_tokens`` (the share a random token would have).
    """
    return {
        "sinks_per_image": float(sinks.sum(1).float().mean()),
        "sinks_on_background": background_share(sinks, on_object),
        "background_tokens": float((~on_object).float().mean()),
    }


def attention_rows(
    model: PreTrainedModel, processor: ProcessorMixin, n_scenes: int, seed: int = 0, world: WorldConfig = FLAT
) -> dict:
    """Rows 1–5 of the table: concentration, background share, sinks and the masking ablation."""
    items = Q.existence_set("test", n_scenes, start=OFFSETS["attention"], world=world)
    images, questions = [s.image for s, _ in items], [q["question"] for _, q in items]
    study = analysis.run_study(model, processor, images, questions, batch_size=100, seed=seed)
    grid = math.isqrt(study.blind.shape[1])
    on_object = torch.from_numpy(np.stack([object_tokens(s, grid) for s, _ in items]))
    stats = analysis.attention_summary(study.attention, study.blind, on_object)
    tau = sink_tau(model.config.get_text_config().hidden_size)
    sinks = torch.cat(
        [
            sink_tokens(model, encode(model, processor, images[rows], questions[rows]), tau=tau).cpu()
            for _, rows in batches(len(items), 100, desc="sinks")
        ]
    )
    chance = random_like(study.blind, torch.Generator().manual_seed(seed))
    labels = np.array([q["answer"] == "yes" for _, q in items])

    def accuracy(condition: str) -> float:
        return float(np.mean((study.margin(condition).cpu().numpy() > 0) == labels))

    return {
        "n_questions": len(items),
        "tau": round(tau, 3),
        "top5_share": float(stats["top5_share"].mean()),
        "blind_on_background": background_share(study.blind, on_object),
        "sink_images": float(sinks.any(1).float().mean()),
        **sink_placement(sinks, on_object),
        "sink_blind_jaccard": jaccard(sinks, study.blind),
        "sink_blind_jaccard_chance": jaccard(sinks, chance),
        "keep_blind_minus_random": accuracy("keep blind only") - accuracy("keep random only (same size)"),
        "zero_blind_minus_random": accuracy("zero blind") - accuracy("zero random (same size)"),
    }


def pope_correct(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    kind: str,
    n_scenes: int,
    method: str,
    world: WorldConfig = FLAT,
) -> np.ndarray:
    """Per-question correctness ``bool[2 * n_scenes]`` of ``method`` (argmax) on a POPE-style ``kind`` split."""
    items = Q.existence_set("test", n_scenes, OFFSETS[kind], kinds=(kind,), seed=11, world=world)
    answers = generate(
        model,
        processor,
        [s.image for s, _ in items],
        [q["question"] for _, q in items],
        method=method,
        max_new_tokens=4,
        batch_size=64,
        seed=0,
    )
    parse = get_parser("pope", "official")
    return np.array([parse(a) == q["answer"] for a, (_, q) in zip(answers, items)])


def decoding_rows(model: PreTrainedModel, processor: ProcessorMixin, n_scenes: int, world: WorldConfig = FLAT) -> dict:
    """Rows 6–9: AvisC against greedy and ``random_mask`` (paired), greedy on random / adversarial."""
    adversarial = {m: pope_correct(model, processor, "adversarial", n_scenes, m, world) for m in METHODS}
    return {
        "avisc_minus_greedy": paired_difference(adversarial["avisc"], adversarial["greedy"]),
        "avisc_minus_random_mask": paired_difference(adversarial["avisc"], adversarial["random_mask"]),
        "greedy_random": float(pope_correct(model, processor, "random", n_scenes, "greedy", world).mean()),
        "greedy_adversarial": float(adversarial["greedy"].mean()),
    }


def organism_table(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    n_scenes: int = 300,
    seed: int = 0,
    world: WorldConfig = FLAT,
) -> dict:
    """Every row of the organism table on ``n_scenes`` held-out scenes per measurement, rendered in ``world``."""
    torch.manual_seed(seed)
    return {
        **attention_rows(model, processor, n_scenes, seed, world),
        **decoding_rows(model, processor, n_scenes, world),
    }
