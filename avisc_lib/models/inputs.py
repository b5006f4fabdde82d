"""Model inputs: processor outputs for a batch (``encode``), and the embedded prompt (``Prompt``).

``encode`` turns images and questions into the processor's tensors, padded the way each model
needs. ``embed_prompt`` runs the vision side once and embeds the prompt, so that every branch of a
contrastive decode can reuse the image features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from . import compat
from .prompts import build_prompt


def encode(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    prompt_style: str | None = None,
) -> dict[str, torch.Tensor]:
    """Processor outputs for a batch: LLM ids left-padded, Q-Former ids right-padded.

    Each sample is processed alone and then padded here, because the two tokenizers of
    InstructBLIP need opposite sides: the LLM uses positions from the attention mask (left padding
    keeps the last prompt token last), the BERT-style Q-Former uses absolute positions (right
    padding keeps them unchanged).
    """
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images for {len(questions)} questions")
    samples = [
        processor(images=image, text=build_prompt(model, processor, question, prompt_style), return_tensors="pt")
        for image, question in zip(images, questions)
    ]
    return {key: collate([s[key] for s in samples], key, processor) for key in samples[0]}


def collate(tensors: list[torch.Tensor], key: str, processor: ProcessorMixin) -> torch.Tensor:
    """Concatenate one processor output key over samples; pad ``[1, L]`` token tensors to a common L."""
    if not key.endswith(("input_ids", "attention_mask")):
        return torch.cat(tensors)
    qformer = key.startswith("qformer_")
    tokenizer = processor.qformer_tokenizer if qformer else processor.tokenizer
    value = 0 if key.endswith("attention_mask") else tokenizer.pad_token_id
    length = max(t.shape[1] for t in tensors)
    padded = [
        torch.nn.functional.pad(t, (0, length - t.shape[1]) if qformer else (length - t.shape[1], 0), value=value)
        for t in tensors
    ]
    return torch.cat(padded)


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


@torch.no_grad()  # inference only; bitsandbytes' packed CPU 4-bit path also fails under autograd
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
