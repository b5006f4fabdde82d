"""AvisC (Attentional Vision Calibration) on Hugging Face vision-language models.

The library alone: the notebooks' helpers live in :mod:`avisc_lib.course`."""

from .decoding import METHODS, decode
from .generation import answer_logits, answer_token_ids, candidate_token_ids, generate
from .hooks.capture import image_attention, record_last_query_attention
from .integrations.hf_generate import custom_generate
from .models.inputs import encode
from .models.loading import known_models, load_model
from .models.prompts import build_prompt
from .settings import DecodeSettings
from .tokens.blind import select_blind_tokens
from .tokens.masking import mask_image_tokens, replace_image_tokens
from .tokens.sinks import sink_tokens
from .version import __version__

__all__ = [
    "__version__",
    "DecodeSettings",
    "METHODS",
    "answer_logits",
    "answer_token_ids",
    "build_prompt",
    "candidate_token_ids",
    "custom_generate",
    "decode",
    "encode",
    "generate",
    "image_attention",
    "known_models",
    "load_model",
    "mask_image_tokens",
    "record_last_query_attention",
    "replace_image_tokens",
    "select_blind_tokens",
    "sink_tokens",
]
