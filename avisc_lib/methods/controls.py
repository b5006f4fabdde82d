"""AvisC's controls: its second branch replaced, everything else (alpha, beta, the cut) kept.

* ``random_mask``: a random set of image tokens as large as each row's blind set kept, the rest
  zeroed (seeded by ``decode``'s ``seed``; one random order is drawn per batch, so a row's set does
  not depend on the other rows). If it does as well as AvisC, the blind tokens are not the reason.
* ``zero_image``: every image-token embedding zeroed (no attention read).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..tokens.blind import random_like
from .avisc import AVISC, blind_and_layers
from .base import CONTRAST, Branch, BranchContext, BranchInputs, keep_only
from .registry import register


def random_branch(context: BranchContext) -> BranchInputs:
    """As AvisC's branch, but each row keeps a random set of image tokens as large as its blind set."""
    blind, layers = blind_and_layers(context)
    return keep_only(context, random_like(blind, context.generator, shared=True), layers)


def zeroed_branch(context: BranchContext) -> BranchInputs:
    """Every image-token embedding zeroed after the projector."""
    prompt = context.prompt
    return keep_only(context, torch.zeros(prompt.features.shape[:2], dtype=torch.bool, device=prompt.features.device))


# AvisC's record with another branch (and, for zero_image, without the blind-token options it no longer reads)
RANDOM_MASK = register(
    replace(
        AVISC,
        name="random_mask",
        summary="control: AvisC with a random set of image tokens kept instead of the blind ones",
        branch=Branch(random_branch, needs_attention=True),
    )
)
ZERO_IMAGE = register(
    replace(
        AVISC,
        name="zero_image",
        summary="control: AvisC with every image token zeroed",
        options=CONTRAST,
        branch=Branch(zeroed_branch, needs_attention=False),
    )
)
