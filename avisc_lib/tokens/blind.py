"""Blind tokens: image tokens that draw far more attention than the rest (AvisC §1.3).

Per sample: each layer's share of the image attention is its attention mass on the image tokens,
normalised over layers. Keep the smallest set of layers, ranked by share, whose shares add up to
``layer_gamma`` (P in the paper), average their attention per image token, and call a token blind
when its attention is at least ``mean + lam * std`` (unbiased std over the sample's N tokens).
The official code takes mean and std over the whole batch (it only ever ran B = 1).
"""

from __future__ import annotations

import math

import torch


def select_layers(attention: torch.Tensor, layer_gamma: float = 0.5) -> torch.Tensor:
    """``[B, layers]`` True for the top-share layers whose shares first reach ``layer_gamma``.

    ``attention [B, layers, N]``. With ``layer_gamma = 1`` every layer is kept (guarding against the
    float rounding that makes the official code ask for one layer too many).
    """
    if not 0 < layer_gamma <= 1:
        raise ValueError(f"layer_gamma must be in (0, 1], got {layer_gamma}")
    share = attention.sum(-1)
    share = share / share.sum(-1, keepdim=True)
    ranked, order = share.sort(-1, descending=True)
    count = (ranked.cumsum(-1) < layer_gamma).sum(-1, keepdim=True) + 1  # [B, 1]
    keep_ranked = torch.arange(share.shape[-1], device=share.device) < count
    return torch.zeros_like(keep_ranked).scatter(-1, order, keep_ranked)


def select_blind_tokens(attention: torch.Tensor, layer_gamma: float = 0.5, lam: float = 1.0) -> torch.Tensor:
    """Blind-token mask ``[B, N]`` (True = blind) from image attention ``[B, layers, N]``.

    ``attention`` is what ``image_attention`` returns. Each sample is treated on its own.
    """
    if attention.dim() != 3 or attention.shape[-1] < 2:
        raise ValueError(f"attention must be [B, layers, N] with N >= 2, got {tuple(attention.shape)}")
    if not math.isfinite(lam):
        raise ValueError(f"lam must be finite, got {lam}")
    attention = attention.float()
    layers = select_layers(attention, layer_gamma)
    score = (attention * layers[..., None]).sum(1) / layers.sum(-1, keepdim=True)  # [B, N]
    std = score.std(-1, keepdim=True)
    # Equal scores (std = 0) are all blind: nothing gets masked, whatever the mean's rounding.
    return (score >= score.mean(-1, keepdim=True) + lam * std) | (std == 0)


def random_like(mask: torch.Tensor, generator: torch.Generator | None = None, shared: bool = False) -> torch.Tensor:
    """A random ``BoolTensor[B, N]`` with as many True per row as ``mask [B, N]`` (a same-size control).

    ``shared=True`` draws one random order for the whole batch, so a row's set depends only on the
    generator and its size, not on the other rows (``decode`` uses it, as VCD shares its noise).
    """
    rows = 1 if shared else mask.shape[0]
    scores = torch.rand((rows, mask.shape[1]), generator=generator, device=mask.device)
    ranks = scores.argsort(-1).argsort(-1)
    return ranks < mask.sum(-1, keepdim=True)
