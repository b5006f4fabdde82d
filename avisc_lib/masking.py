"""Image-token embeddings: merge image features into the prompt, and replace chosen image tokens.

AvisC's biased input V* keeps the blind image tokens and replaces every other image token's
embedding, after the multimodal projector, by zeros (the paper's setting; "ones" and "noise" are
its ablations). Two equivalent ways are offered:

* ``replace_image_tokens(features, which)`` on features you already have (``decode`` uses it, so
  the vision tower runs once for both branches);
* ``mask_image_tokens(model, which)``, a context manager whose projector hook does the same inside
  any forward (``model(**inputs)``, ``generate``); the hook is always removed on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from . import compat

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


@dataclass(frozen=True)
class Prompt:
    """A tokenised multimodal prompt on the model's device, with its image features.

    ``input_ids``, ``attention_mask`` ``[B, L]`` (left padding: 0 before the text);
    ``image_mask [B, L]`` True at the N image tokens of each row; ``token_embeds [B, L, D]`` the
    embeddings of the ids; ``features [B, N, D]`` the projected image features.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_mask: torch.Tensor
    token_embeds: torch.Tensor
    features: torch.Tensor

    def with_images(self, features: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``[B, L, D]`` with ``features [B, N, D]`` at the image tokens."""
        return self.token_embeds.masked_scatter(self.image_mask[..., None], features.to(self.token_embeds.dtype))

    @property
    def embeds(self) -> torch.Tensor:
        """The model's own input embeddings, ``[B, L, D]``."""
        return self.with_images(self.features)


def embed_prompt(model: PreTrainedModel, inputs: Mapping[str, torch.Tensor]) -> Prompt:
    """Check the processor output, run the vision side once, and embed the prompt.

    Raises ``ValueError`` for missing ids or pixels, right padding, a prompt without image tokens,
    rows with different image-token counts, or a count that differs from the image's features.
    """
    missing = [key for key in ("input_ids", "pixel_values") if key not in inputs]
    if missing:
        raise ValueError(f"inputs lack {missing}: pass the processor's output for images and prompts")
    embedding = model.get_input_embeddings()
    input_ids = inputs["input_ids"].to(embedding.weight.device)
    attention_mask = inputs.get("attention_mask")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device)
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded (attention_mask[:, -1] == 1); use padding_side='left'")
    image_mask = image_token_mask(model, input_ids)
    features = compat.image_features(model, inputs).to(input_ids.device)
    if features.shape[0] != input_ids.shape[0]:
        raise ValueError(f"got {features.shape[0]} images for {input_ids.shape[0]} prompts")
    if int(image_mask[0].sum()) != features.shape[1]:
        raise ValueError(
            f"image/token count mismatch: the prompt has {int(image_mask[0].sum())} image tokens, "
            f"the image gives {features.shape[1]} features"
        )
    return Prompt(input_ids, attention_mask, image_mask, embedding(input_ids), features)


def image_token_mask(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` True at image-token positions; each row must hold the same, non-zero count."""
    mask = input_ids == compat.image_token_id(model.config)
    counts = mask.sum(-1)
    if bool((counts == 0).any()):
        raise ValueError(
            f"no image tokens in the prompt (rows {torch.nonzero(counts == 0).flatten().tolist()}); "
            "build it with the model's processor, which expands the image placeholder"
        )
    if bool((counts != counts[0]).any()):
        raise ValueError(f"rows have different numbers of image tokens: {counts.tolist()}")
    return mask
