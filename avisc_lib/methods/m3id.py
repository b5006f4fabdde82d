"""M3ID (Favero et al., CVPR 2024) as AvisC re-implemented it: contrast with a branch without the image.

``z = lc + (1 - g_t) / g_t * (lc - lu)`` on log-softmaxes, ``g_t = exp(-gamma_decay * t)``, then
the plausibility cut. The text-only branch is also PAI's refinement branch.
"""

from __future__ import annotations

import math

import torch

from ..scores import plausibility_cut
from .base import BETA, NON_NEGATIVE, Branch, BranchContext, BranchInputs, Check, Method, Option, Passes
from .registry import register

GAMMA_DECAY = Option(
    "gamma_decay", 0.02, "M3ID's decay of the image-conditioning weight", Check(NON_NEGATIVE.test, ">= 0")
)


def m3id_logits(conditioned: torch.Tensor, unconditioned: torch.Tensor, step: int, decay: float) -> torch.Tensor:
    """M3ID as in the AvisC code: ``lc + (1 - g) / g * (lc - lu)`` on log-softmaxes, ``g = exp(-decay * step)``.

    ``step`` counts generated tokens from 1. ``[B, V]`` in, ``[B, V]`` out.

    This is AvisC's re-implementation of M3ID (Favero et al., CVPR 2024), whose own code is not
    public, and the baseline of AvisC's tables. It differs from the original M3ID in its gating:
    the original applies the correction ``lc - lu`` only when the conditioned model is uncertain
    (its largest log-probability below a threshold) and keeps ``lc`` otherwise; AvisC applies it
    at every step and instead removes implausible tokens with VCD's ``beta`` cut
    (:func:`avisc_lib.scores.plausibility_cut`), to use one cut for every method. The decay ``0.02`` is AvisC's
    hard-coded value. With it the weight ``(1 - g) / g`` is 0.02 at the first token and 2.6 at
    the 64th, so on one-word answers this M3ID is close to the original branch plus the cut.
    """
    gamma = math.exp(-decay * step)
    lc, lu = conditioned.log_softmax(-1), unconditioned.log_softmax(-1)
    return lc + (1 - gamma) / gamma * (lc - lu)


def m3id_scores(original: torch.Tensor, other: torch.Tensor, step: int, settings) -> torch.Tensor:
    return plausibility_cut(m3id_logits(original, other, step, settings.gamma_decay), original, settings.beta)


def text_only(context: BranchContext) -> BranchInputs:
    """M3ID's unconditioned prompt: image tokens dropped, re-left-padded to the same length L.

    Keeping length L lets its cache join the original one.
    """
    prompt = context.prompt
    keep = prompt.attention_mask.bool() & ~prompt.image_mask
    order = keep.int().sort(dim=-1, stable=True).indices  # dropped positions first, kept ones in order
    embeds = prompt.token_embeds.gather(1, order[..., None].expand_as(prompt.token_embeds))
    return BranchInputs(embeds, keep.gather(1, order).long())


TEXT_ONLY = Branch(text_only, needs_attention=False)
M3ID = register(
    Method(
        "m3id",
        "M3ID as AvisC re-implemented it: contrast with a branch without the image",
        (BETA, GAMMA_DECAY),
        Passes(1, 2, 2),  # text-only 2nd prefill, re-left-padded to the same length
        branch=TEXT_ONLY,
        scores=m3id_scores,
        avisc_family=True,
    )
)
