"""How much the prompt's last position attends to each image token, per language-model layer.

AvisC reads one attention row per layer: the last prompt position (the one that predicts the
first answer token) over the image tokens. Asking transformers for ``output_attentions`` would
force eager attention and keep ``layers x heads x L x L`` maps. Instead a reader on the attention
hook stack (:mod:`.stack`) receives the softmax of the *last query row only* (``heads x L`` per
layer) while SDPA computes the layer's output as usual.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from ..models import compat
from ..models.inputs import embed_prompt
from . import stack


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


@contextmanager
def record_last_query_attention(model: PreTrainedModel) -> Iterator[dict[int, torch.Tensor]]:
    """Record, for every forward inside the block, each LM layer's last-row attention.

    Yields a dict ``layer index -> float32 [B, H, Lk]`` (a later forward overwrites an earlier one).
    Inside an attention edit, or around one, it records the edited attention: the one the model
    used. Only the language model's attention is hooked (vision tower and Q-Former untouched).
    """
    rows: dict[int, torch.Tensor] = {}

    def record(module, probs, value, attention_mask) -> None:
        rows[module.layer_idx] = probs

    with stack.push(model, readers=(record,)):
        yield rows


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
