"""AvisC (Attentional Vision Calibration) on Hugging Face vision-language models."""

from .hooks.capture import image_attention, record_last_query_attention
from .blind import select_blind_tokens
from .course.budget import Progress
from .decoding import METHODS, decode
from .generation import answer_logits, answer_token_ids, candidate_token_ids, generate
from .integrations.hf_generate import custom_generate
from .settings import DecodeSettings
from .masking import mask_image_tokens, replace_image_tokens
from .models.loading import known_models, load_model
from .course.profiles import Profile, environment_report, resolve_profile
from .models.inputs import encode
from .models.prompts import build_prompt
from .sinks import sink_tokens

__all__ = [
    "DecodeSettings",
    "METHODS",
    "Profile",
    "Progress",
    "answer_logits",
    "answer_token_ids",
    "build_prompt",
    "candidate_token_ids",
    "custom_generate",
    "decode",
    "encode",
    "environment_report",
    "generate",
    "image_attention",
    "known_models",
    "load_model",
    "mask_image_tokens",
    "record_last_query_attention",
    "replace_image_tokens",
    "resolve_profile",
    "select_blind_tokens",
    "sink_tokens",
]
__version__ = "0.2.0"
