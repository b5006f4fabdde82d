"""AvisC's controls: its second branch replaced, everything else (alpha, beta, the cut) kept.

* ``random_mask``: a random set of image tokens as large as each row's blind set kept, the rest
  zeroed (seeded by ``decode``'s ``seed``; one random order is drawn per batch, so a row's set does
  not depend on the other rows). If it does as well as AvisC, the blind tokens are not the reason.
* ``zero_image``: every image-token embedding zeroed (no attention read).
"""

from __future__ import annotations

import torch

from ..tokens.blind import random_like
from .avisc import AVISC, BLIND, blind_and_layers
from .base import CONTRAST, Branch, BranchContext, BranchInputs, Method, Passes, contrast_scores, keep_only
from .registry import register


def random_branch(context: BranchContext) -> BranchInputs:
    """As AvisC's branch, but each row keeps a random set of image tokens as large as its blind set."""
    blind, layers = blind_and_layers(context)
    return keep_only(context, random_like(blind, context.generator, shared=True), layers)


def zeroed_branch(context: BranchContext) -> BranchInputs:
    """Every image-token embedding zeroed after the projector."""
    prompt = context.prompt
    return keep_only(context, torch.zeros(prompt.features.shape[:2], dtype=torch.bool, device=prompt.features.device))


RANDOM_MASK = register(
    Method(
        "random_mask",
        "control: AvisC with a random set of image tokens kept instead of the blind ones",
        (*CONTRAST, *BLIND),
        Passes(1, 2, 2),
        branch=Branch(random_branch, needs_attention=True),
        scores=contrast_scores,
        avisc_family=True,
        paper_alpha=AVISC.paper_alpha,
    )
)
ZERO_IMAGE = register(
    Method(
        "zero_image",
        "control: AvisC with every image token zeroed",
        CONTRAST,
        Passes(1, 2, 2),
        branch=Branch(zeroed_branch, needs_attention=False),
        scores=contrast_scores,
        avisc_family=True,
        paper_alpha=AVISC.paper_alpha,
    )
)
