"""AvisC (Woo et al., arXiv 2405.17820): contrast with a branch that keeps only the blind image tokens.

The second branch is the paper's biased input V*: the blind image tokens
(:func:`avisc_lib.select_blind_tokens`, from the original prefill's attention) kept, every other
image token's embedding zeroed after the projector. The next-token scores are
``(1 + alpha) * l - alpha * l_blind``, then the plausibility cut (``beta``).
"""

from __future__ import annotations

import torch

from ..tokens.blind import select_blind_tokens, select_layers
from .base import (
    CONTRAST,
    FINITE,
    OPEN_UNIT,
    Branch,
    BranchContext,
    BranchInputs,
    Method,
    Option,
    Passes,
    contrast_scores,
    keep_only,
)
from .registry import register

LAM = Option("lam", 1.0, "blind-token threshold: attention >= mean + lam * std", FINITE)
LAYER_GAMMA = Option("layer_gamma", 0.5, "share of image attention of the layers that choose blind tokens", OPEN_UNIT)
BLIND = (LAM, LAYER_GAMMA)


def blind_and_layers(context: BranchContext) -> tuple[torch.Tensor, torch.Tensor]:
    """AvisC's blind tokens ``[B, N]`` and the layers ``[B, layers]`` they were read from."""
    settings = context.settings
    blind = select_blind_tokens(context.attention, settings.layer_gamma, settings.lam)
    return blind, select_layers(context.attention.float(), settings.layer_gamma)


def blind_branch(context: BranchContext) -> BranchInputs:
    """Blind tokens kept, the other image tokens zeroed (the paper's biased input V*)."""
    blind, layers = blind_and_layers(context)
    return keep_only(context, blind, layers)


AVISC = register(
    Method(
        "avisc",
        "AvisC: contrast with a branch that keeps only the blind image tokens",
        (*CONTRAST, *BLIND),
        # a 2nd prefill (non-blind tokens zeroed) after reading the 1st's attention
        Passes(1, 2, 2),
        branch=Branch(blind_branch, needs_attention=True),
        scores=contrast_scores,
        avisc_family=True,
        paper_alpha={"llava": 2.5, "instructblip": 3.0},
    )
)
