"""Prompt text per model, and batches of processor outputs padded the way each model needs.

LLaVA-1.5 was trained and evaluated (AvisC included) with the ``llava_v1`` conversation: a system
prompt, then ``USER: <image>\\n{question} ASSISTANT:``. The llava-hf checkpoints ship a chat
template without the system prompt ("hf"). InstructBLIP takes the raw question.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# Prompt styles each model type accepts; the first is the default.
PROMPT_STYLES = {"llava": ("hf", "llava_v1"), "instructblip": ("raw",)}


def build_prompt(model: PreTrainedModel, processor: ProcessorMixin, question: str, style: str | None = None) -> str:
    """The prompt text for one question (the processor expands the image placeholder later).

    LLaVA: "hf" (default; the processor's chat template) or "llava_v1" (the paper's prompt).
    InstructBLIP: "raw" (the question itself).
    """
    styles = PROMPT_STYLES.get(model.config.model_type)
    if styles is None:
        raise ValueError(f"no prompt styles for model type {model.config.model_type!r}")
    style = styles[0] if style is None else style
    if style not in styles:
        raise ValueError(f"unknown prompt_style {style!r} for {model.config.model_type}; expected one of {styles}")
    if style == "raw":
        return question
    if style == "llava_v1":
        return f"{LLAVA_V1_SYSTEM} USER: {processor.image_token}\n{question} ASSISTANT:"
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


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
    return {key: collate([s[key] for s in samples], key, processor) for key in samples[0].keys()}


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
