"""VCD (Leng et al., CVPR 2024): contrast with a branch whose image is diffusion-noised.

The noised image goes through the vision tower once more; the scores are AvisC's contrast with
``alpha`` (AvisC's code hard-codes 1.0 in its VCD branch) and the plausibility cut.
"""

from __future__ import annotations

import math

import torch

from ..models import compat
from .base import CONTRAST, Branch, BranchContext, BranchInputs, Check, Method, Option, Passes, contrast_scores, is_int
from .registry import register

DIFFUSION_STEPS = 1000
STEP = Check(lambda v: is_int(v) and 0 <= v < DIFFUSION_STEPS, f"an int in [0, {DIFFUSION_STEPS - 1}]")
NOISE_STEP = Option("noise_step", 500, "VCD's diffusion step, 0 to 999", STEP, int)


def vcd_alpha_bar(noise_step: int) -> float:
    """``abar_t = prod_{s <= t} (1 - beta_s)`` of VCD's sigmoid schedule (betas from 1e-5 to 5e-3)."""
    betas = torch.sigmoid(torch.linspace(-6, 6, DIFFUSION_STEPS)) * (5e-3 - 1e-5) + 1e-5
    return torch.cumprod(1 - betas, dim=0)[noise_step].item()


def diffusion_noise(pixel_values: torch.Tensor, noise_step: int = 500, generator: torch.Generator | None = None):
    """VCD's forward-diffusion noise at ``noise_step`` on normalised pixels ``[B, C, H, W]``.

    ``x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps``. One ``eps [C, H, W]`` is drawn and
    shared by the batch, so a row's result does not depend on its neighbours (VCD ran B = 1).
    """
    alpha_bar = vcd_alpha_bar(noise_step)
    eps = torch.randn(pixel_values.shape[1:], generator=generator, device=pixel_values.device)
    noised = math.sqrt(alpha_bar) * pixel_values.float() + math.sqrt(1 - alpha_bar) * eps
    return noised.to(pixel_values.dtype)


def noised_branch(context: BranchContext) -> BranchInputs:
    """The same prompt with the image diffusion-noised (one more pass of the vision side)."""
    prompt = context.prompt
    pixel_values = context.inputs["pixel_values"].to(prompt.input_ids.device)
    noised = diffusion_noise(pixel_values, context.settings.noise_step, context.generator)
    features = compat.image_features(context.model, {**context.inputs, "pixel_values": noised})
    return BranchInputs(prompt.with_images(features), prompt.attention_mask)


VCD = register(
    Method(
        "vcd",
        "VCD: contrast with a branch whose image is diffusion-noised",
        (*CONTRAST, NOISE_STEP),
        Passes(2, 2, 2),
        branch=Branch(noised_branch, needs_attention=False),
        scores=contrast_scores,
        avisc_family=True,
        paper_alpha={"llava": 1.0, "instructblip": 1.0},
    )
)
