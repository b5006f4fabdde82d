"""ClearSight / VAF (Yin et al., CVPR 2025; code ``ustc-hyin/ClearSight`` at 5466c94).

In layers [9, 15) the pre-softmax logits of queries after the image are multiplied by ``enhance``
on image tokens and by ``suppress`` on the system prompt (``visaug/inference/AttnAdapter.py``
lines 70-78). The code hard-codes the system prompt as the first 35 positions (``SYS_LEN``), which
is everything before the image in LLaVA-1.5's ``llava_v1`` prompt (BOS, system message, "USER:");
here it is the non-padding positions before each row's first image token. With the "hf" chat
template that is BOS and "USER:"; for InstructBLIP, whose query tokens come first, it is empty.
Its README covers LLaVA-1.5 and Qwen-VL; layer ranges scale to the model's depth when None.

Its official POPE evaluation (LLaVA-1.5): ``visaug/inference/infer_pope.py`` lines 37
(``vicuna_v1``), 70 (the question suffix), 92-96 (``generate`` without ``do_sample``, 1024
tokens); ``infer_pope.sh`` lines 7-8 (1.15, 0.95). Its scorer (``eval_pope.py`` lines 22-33)
agrees with POPE's ``official`` parser on one-word Yes/No answers.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from transformers import PreTrainedModel

from ..hooks.edit import AttentionEdit, edit_attention
from ..models.inputs import Prompt
from .base import POSITIVE, Method, Option, layer_range, layer_span
from .registry import register

# visaug/inference/infer_pope.sh lines 7-8 (also README.md lines 94-95): --enh-para 1.15 --sup-para
# 0.95; infer_pope.py line 54: layers with 8 < i < 15.
CLEARSIGHT_LAYERS = (9, 15)
ENHANCE = Option("clearsight_enhance", 1.15, "ClearSight: image-token attention logits x this (1: off)", POSITIVE)
SUPPRESS = Option("clearsight_suppress", 0.95, "ClearSight: system-prompt attention logits x this (1: off)", POSITIVE)
LAYERS_HELP = "ClearSight: layers start:end, half-open (None: the paper's 9:15 of 32, scaled to the model's depth)"
LAYER_SPAN = Option("clearsight_layers", None, LAYERS_HELP, kind=layer_span)
QUESTION_SUFFIX = " Please just answer yes or no."  # infer_pope.py line 70


def clearsight_edits(
    model: PreTrainedModel, prompt: Prompt, enhance: float, suppress: float, layers: tuple[int, int] | None
) -> list[AttentionEdit]:
    """ClearSight's edits: from queries after the image, image logits ``x enhance``, system ``x suppress``.

    ``enhance``, ``suppress`` finite and > 0 (1 = off); ``layers`` as ``layer_range``.
    """
    ENHANCE.validate(enhance)
    SUPPRESS.validate(suppress)
    text = model.config.get_text_config()
    chosen = layer_range(layers, CLEARSIGHT_LAYERS, text.num_hidden_layers, "clearsight_layers")
    image = prompt.image_mask
    positions = torch.arange(image.shape[1], device=image.device)[None]
    first = image.int().argmax(-1, keepdim=True)
    last = image.shape[1] - 1 - image.flip(-1).int().argmax(-1, keepdim=True)
    system = (positions < first) & prompt.attention_mask.bool()
    after = positions > last
    return [
        AttentionEdit(image, "scale_logits", float(enhance), layers=chosen, queries=after),
        AttentionEdit(system, "scale_logits", float(suppress), layers=chosen, queries=after),
    ]


def clearsight(model: PreTrainedModel, prompt: Prompt, settings) -> AbstractContextManager:
    """ClearSight's edits from ``settings.clearsight_enhance``, ``clearsight_suppress``, ``clearsight_layers``."""
    return edit_attention(
        model,
        clearsight_edits(
            model, prompt, settings.clearsight_enhance, settings.clearsight_suppress, settings.clearsight_layers
        ),
    )


def pope_question(question: str) -> str:
    """ClearSight's POPE question: the question, then :data:`QUESTION_SUFFIX`."""
    return question + QUESTION_SUFFIX


CLEARSIGHT = register(
    Method(
        "clearsight",
        "ClearSight (VAF): image attention scaled up, system-prompt attention down, in middle layers",
        (ENHANCE, SUPPRESS, LAYER_SPAN),
        intervention=clearsight,
        official={
            ("pope", "llava"): dict(
                prompt_style="vicuna_v1",
                parser="official",
                question="clearsight_pope",
                decode={
                    "do_sample": False,
                    "max_new_tokens": 1024,
                    "clearsight_enhance": 1.15,
                    "clearsight_suppress": 0.95,
                },
            )
        },
        no_official="ClearSight's repository releases a POPE script for LLaVA-1.5 only "
        "(visaug/inference/infer_pope.py)",
        question_forms={"clearsight_pope": pope_question},
    )
)
