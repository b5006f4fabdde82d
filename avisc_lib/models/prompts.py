"""Prompt text per model.

LLaVA-1.5 was trained and evaluated (AvisC included) with the ``llava_v1`` conversation: a system
prompt, then ``USER: <image>\\n{question} ASSISTANT:``. The llava-hf checkpoints ship a chat
template without the system prompt ("hf"). InstructBLIP takes the raw question.
"""

from __future__ import annotations

from transformers import PreTrainedModel, ProcessorMixin

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# LLaVA's conv_vicuna_v1 (llava/conversation.py): the same layout, "user" for "human"; ClearSight and VAR use it.
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SYSTEMS = {"llava_v1": LLAVA_V1_SYSTEM, "vicuna_v1": VICUNA_V1_SYSTEM}
# Prompt styles each model type accepts; the first is the default.
PROMPT_STYLES = {"llava": ("hf", "llava_v1", "vicuna_v1"), "instructblip": ("raw",)}


def build_prompt(model: PreTrainedModel, processor: ProcessorMixin, question: str, style: str | None = None) -> str:
    """The prompt text for one question (the processor expands the image placeholder later).

    LLaVA: "hf" (default; the processor's chat template), "llava_v1" (the paper's prompt) or
    "vicuna_v1" (the same with LLaVA's vicuna_v1 system prompt).
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
    if style in SYSTEMS:
        return f"{SYSTEMS[style]} USER: {processor.image_token}\n{question} ASSISTANT:"
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)
