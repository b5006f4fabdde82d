"""Image-token embeddings: replace chosen image tokens (after the projector).

AvisC's biased input V* keeps the blind image tokens and replaces every other image token's
embedding, after the multimodal projector, by zeros (the paper's setting; "ones" and "noise" are
its ablations). Two equivalent ways are offered:

* ``replace_image_tokens(features, which)`` on features you already have (``decode`` uses it, so
  the vision tower runs once for both branches);
* ``mask_image_tokens(model, which)``, a context manager whose projector hook does the same inside
  any forward (``model(**inputs)``, ``generate``); the hook is always removed on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from ..models import compat

# Replacement for the embedding rows of the chosen image tokens, given those rows.
SCHEMES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "zeros": torch.zeros_like,
    "ones": torch.ones_like,
    "noise": torch.randn_like,
}


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown masking scheme {scheme!r}; known: {sorted(SCHEMES)}")


def replace_image_tokens(features: torch.Tensor, which: torch.Tensor, scheme: str = "zeros") -> torch.Tensor:
    """Copy of ``features [B, N, D]`` with rows where ``which [B, N]`` is True replaced per ``scheme``."""
    _check_scheme(scheme)
    if which.shape != features.shape[:2]:
        raise ValueError(f"mask shape {tuple(which.shape)} does not match image tokens {tuple(features.shape[:2])}")
    which = which.to(features.device, torch.bool)[..., None]
    return torch.where(which, SCHEMES[scheme](features), features)


@contextmanager
def mask_image_tokens(model: PreTrainedModel, which: torch.Tensor, scheme: str = "zeros") -> Iterator[None]:
    """Inside the block, the projector's output rows where ``which [B, N]`` is True are replaced.

    LLaVA: ``multi_modal_projector`` (one row per patch); InstructBLIP: ``language_projection``
    (one row per Q-Former query). The hook is removed on exit, exceptions included.
    """
    _check_scheme(scheme)
    handle = compat.projector(model).register_forward_hook(
        lambda module, args, output: replace_image_tokens(output, which, scheme)
    )
    try:
        yield
    finally:
        handle.remove()
