"""The one attention function every hook runs through (registered as :data:`.stack.DISPATCHER`).

Per language-model layer: SDPA as usual, or, where active edits select this layer, the rows they
touch recomputed with them (:func:`.edit.edited_attention`); then, if any reader is active, the
last query row's probabilities, edited the same way, are handed to each reader in the order the
blocks were entered. With nothing active it is SDPA.
"""

from __future__ import annotations

from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..models import compat
from . import stack
from .capture import last_query_probs
from .edit import edited_attention, edited_last_row


def dispatched_sdpa(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """``query [B', H, q, d]``, ``key``/``value [B', Hkv, Lk, d]`` -> ``([B', q, H, d], None)``."""
    active = stack.current()
    edits = [e for e in active.edits if e.layers is None or module.layer_idx in e.layers]
    if edits:
        output = edited_attention(module, query, key, value, attention_mask, scaling, edits, **kwargs)
    else:
        output = ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    if active.readers:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        probs = last_query_probs(query, key, attention_mask, scale)
        if edits:
            probs = edited_last_row(query, key, attention_mask, scale, edits, probs)
        for read in active.readers:
            read(module, probs, value, attention_mask)
    return output


compat.register_attention(stack.DISPATCHER, dispatched_sdpa)
