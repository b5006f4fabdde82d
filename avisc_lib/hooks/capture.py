"""How much the prompt's last position attends to each image token, per language-model layer.

AvisC reads one attention row per layer: the last prompt position (the one that predicts the
first answer token) over the image tokens. Asking transformers for ``output_attentions`` would
force eager attention and keep ``layers x heads x L x L`` maps. Instead we register an attention
function that runs SDPA as usual and also computes the softmax of the *last query row only*
(``heads x L`` per layer), and switch it on for the language model while recording.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from transformers import PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..models import compat
from ..models.inputs import embed_prompt

RECORDER = "avisc_last_query_sdpa"
_ROWS: ContextVar[dict[int, torch.Tensor] | None] = ContextVar("avisc_attention_rows", default=None)


def last_query_probs(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """Softmax attention of the last query over all keys, float32 ``[B, H, Lk]``.

    ``query [B, H, Lq, d]``, ``key [B, Hkv, Lk, d]`` (grouped-query heads share a key head),
    ``attention_mask`` as built by ``sdpa_mask``: boolean ``[B, 1, Lq, Lk]`` (True = attend), an
    additive float mask, or None (causal: the last query sees every key).
    """
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query[:, :, -1].float().reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.einsum("bkgd,bkld->bkgl", q, key.float()).reshape(batch, heads, -1) * scaling
    if attention_mask is not None:
        row = attention_mask[:, :, -1]
        scores = scores.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else scores + row.float()
    return scores.softmax(-1)


def _recording_sdpa(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA, plus the last query row's probabilities stored under ``module.layer_idx`` when recording."""
    rows = _ROWS.get()
    if rows is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        rows[module.layer_idx] = last_query_probs(query, key, attention_mask, scale)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, scaling=scaling, **kwargs)


compat.register_attention(RECORDER, _recording_sdpa)


@contextmanager
def record_last_query_attention(model: PreTrainedModel) -> Iterator[dict[int, torch.Tensor]]:
    """Record, for every forward inside the block, each LM layer's last-row attention.

    Yields a dict ``layer index -> float32 [B, H, Lk]`` (a later forward overwrites an earlier one).
    Only the language model switches to the recording SDPA function (vision tower and Q-Former
    untouched); its previous implementation is restored on exit, exceptions included.
    """
    rows: dict[int, torch.Tensor] = {}
    token = _ROWS.set(rows)
    try:
        with compat.text_attention(model, RECORDER):
            yield rows
    finally:
        _ROWS.reset(token)


def image_rows(rows: Mapping[int, torch.Tensor], image_mask: torch.Tensor) -> torch.Tensor:
    """Head-mean attention on the image tokens, ``[B, num_layers, N]`` float32.

    ``rows``: what ``record_last_query_attention`` recorded; ``image_mask [B, Lk]``: True at image
    tokens, the same count N in every row.
    """
    per_layer = torch.stack([rows[i] for i in sorted(rows)], dim=1).mean(dim=2)  # [B, layers, Lk]
    batch, layers, _ = per_layer.shape
    on_images = per_layer.transpose(1, 2)[image_mask.to(per_layer.device)]  # [B*N, layers]
    return on_images.reshape(batch, -1, layers).transpose(1, 2)


@torch.no_grad()
def image_attention(model: PreTrainedModel, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Attention of each sample's last prompt position over its image tokens, ``[B, num_layers, N]``.

    float32, averaged over heads, one forward pass. ``inputs``: what the processor returns
    (``input_ids``, ``attention_mask``, ``pixel_values``, and for InstructBLIP ``qformer_*``),
    left-padded when B > 1. Image tokens are the positions of ``config.image_token_id``; for
    InstructBLIP those hold the Q-Former query outputs.
    """
    prompt = embed_prompt(model, inputs)
    with record_last_query_attention(model) as rows:
        compat.language_model_forward(model, prompt.embeds, prompt.attention_mask)
    return image_rows(rows, prompt.image_mask)
