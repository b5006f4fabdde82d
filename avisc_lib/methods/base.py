"""The second branch of a contrastive decode: what the model sees instead of the image.

A contrastive method runs the prompt twice, once as given (the original branch) and once with
the image changed (the second branch), and contrasts their next-token logits. The methods differ
only in that second branch, so each is a named part here:

* ``avisc``: the blind image tokens kept, every other image token's embedding zeroed (AvisC);
* ``vcd``: the image diffusion-noised before the vision tower (VCD);
* ``m3id``: no image at all, the image tokens dropped from the prompt (M3ID);
* ``random_mask``: a control for AvisC, a random set of image tokens of the same size as each
  row's blind set kept, the rest zeroed (seeded by ``decode``'s ``seed``; one random order is
  drawn per batch, so a row's set does not depend on the other rows);
* ``zero_image``: a control for AvisC, every image-token embedding zeroed.

A branch is a function of a :class:`BranchContext` returning :class:`BranchInputs`. Your own
branch is a function ``features [B, N, D], attention [B, layers, N] -> features [B, N, D]``
(the image features after the projector and the original prefill's image attention, as
``image_attention`` returns it); pass it as ``decode(..., method=my_branch)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from ..models import compat
from ..blind import random_like, select_blind_tokens, select_layers
from ..models.inputs import Prompt
from ..masking import replace_image_tokens

DIFFUSION_STEPS = 1000


@dataclass(frozen=True)
class BranchContext:
    """What a branch may build from: the original branch's prompt and prefill.

    ``attention [B, layers, N]``: the original prefill's image attention (float32), or None when
    the branch does not ask for it. ``settings``: the decode's ``DecodeSettings``.
    """

    model: PreTrainedModel
    inputs: Mapping[str, torch.Tensor]
    prompt: Prompt
    attention: torch.Tensor | None
    settings: Any
    generator: torch.Generator | None


@dataclass(frozen=True)
class BranchInputs:
    """The second branch's prompt: ``embeds [B, L, D]`` and ``attention_mask [B, L]``.

    ``kept [B, N]``: image tokens left as they were (AvisC and its controls), and ``layers
    [B, layers]``: the layers whose attention chose them, when the branch used attention.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    kept: torch.Tensor | None = None
    layers: torch.Tensor | None = None


@dataclass(frozen=True)
class Branch:
    """A named second branch: ``build(context)``, and whether it reads the original attention."""

    build: Callable[[BranchContext], BranchInputs]
    needs_attention: bool


def keep_only(context: BranchContext, kept: torch.Tensor, layers: torch.Tensor | None = None) -> BranchInputs:
    """The original prompt with every image token outside ``kept [B, N]`` zeroed."""
    prompt = context.prompt
    features = replace_image_tokens(prompt.features, ~kept, "zeros")
    return BranchInputs(prompt.with_images(features), prompt.attention_mask, kept, layers)


def blind_and_layers(context: BranchContext) -> tuple[torch.Tensor, torch.Tensor]:
    """AvisC's blind tokens ``[B, N]`` and the layers ``[B, layers]`` they were read from."""
    settings = context.settings
    blind = select_blind_tokens(context.attention, settings.layer_gamma, settings.lam)
    return blind, select_layers(context.attention.float(), settings.layer_gamma)


def avisc(context: BranchContext) -> BranchInputs:
    """Blind tokens kept, the other image tokens zeroed (the paper's biased input V*)."""
    blind, layers = blind_and_layers(context)
    return keep_only(context, blind, layers)


def random_mask(context: BranchContext) -> BranchInputs:
    """As AvisC, but each row keeps a random set of image tokens as large as its blind set."""
    blind, layers = blind_and_layers(context)
    return keep_only(context, random_like(blind, context.generator, shared=True), layers)


def zero_image(context: BranchContext) -> BranchInputs:
    """Every image-token embedding zeroed after the projector."""
    prompt = context.prompt
    return keep_only(context, torch.zeros(prompt.features.shape[:2], dtype=torch.bool, device=prompt.features.device))


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


def vcd(context: BranchContext) -> BranchInputs:
    """The same prompt with the image diffusion-noised (one more pass of the vision side)."""
    prompt = context.prompt
    pixel_values = context.inputs["pixel_values"].to(prompt.input_ids.device)
    noised = diffusion_noise(pixel_values, context.settings.noise_step, context.generator)
    features = compat.image_features(context.model, {**context.inputs, "pixel_values": noised})
    return BranchInputs(prompt.with_images(features), prompt.attention_mask)


def text_only(context: BranchContext) -> BranchInputs:
    """M3ID's unconditioned prompt: image tokens dropped, re-left-padded to the same length L.

    Keeping length L lets its cache join the original one.
    """
    prompt = context.prompt
    keep = prompt.attention_mask.bool() & ~prompt.image_mask
    order = keep.int().sort(dim=-1, stable=True).indices  # dropped positions first, kept ones in order
    embeds = prompt.token_embeds.gather(1, order[..., None].expand_as(prompt.token_embeds))
    return BranchInputs(embeds, keep.gather(1, order).long())


BRANCHES: dict[str, Branch] = {
    "avisc": Branch(avisc, needs_attention=True),
    "vcd": Branch(vcd, needs_attention=False),
    "m3id": Branch(text_only, needs_attention=False),
    "random_mask": Branch(random_mask, needs_attention=True),
    "zero_image": Branch(zero_image, needs_attention=False),
}


def image_branch(edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Branch:
    """A branch from your function ``edit(features [B, N, D], attention [B, layers, N]) -> [B, N, D]``."""

    def build(context: BranchContext) -> BranchInputs:
        features = edit(context.prompt.features, context.attention)
        expected = tuple(context.prompt.features.shape)
        if not isinstance(features, torch.Tensor) or tuple(features.shape) != expected:
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"branch {getattr(edit, '__name__', edit)!r} returned {got}; expected features {expected}")
        return BranchInputs(context.prompt.with_images(features), context.prompt.attention_mask)

    return Branch(build, needs_attention=True)
