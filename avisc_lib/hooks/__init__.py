"""Hooks on the language model: attention capture, attention edits and side reads that stack
(one attention function, :mod:`.dispatch`), and the hidden states entering decoder layers."""

from . import dispatch  # noqa: F401  (registers the attention function every hook switches to)
from .capture import image_attention, record_last_query_attention
from .edit import AttentionEdit, edit_attention
from .layers import layer_inputs

__all__ = ["AttentionEdit", "edit_attention", "image_attention", "layer_inputs", "record_last_query_attention"]
