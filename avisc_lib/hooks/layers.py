"""The hidden states entering decoder layers, as forward pre-hooks (they stack with any other hook)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from ..models.compat import decoder_layers


@contextmanager
def layer_inputs(
    model: PreTrainedModel, layers: Sequence[int], handle: Callable[[int, torch.Tensor], None] | None = None
) -> Iterator[dict[int, torch.Tensor]]:
    """The hidden states ``[B, L, D]`` entering each decoder layer in ``layers``, on every forward.

    Each goes to ``handle(layer, hidden)`` when given (before the layer runs), else into the yielded
    dict ``layer -> hidden``. Forward pre-hooks, removed on exit (exceptions included).
    """
    records: dict[int, torch.Tensor] = {}
    blocks = decoder_layers(model)

    def hook(index: int):
        def record(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if handle is None:
                records[index] = hidden
            else:
                handle(index, hidden)

        return record

    hooks = [blocks[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in layers]
    try:
        yield records
    finally:
        for registered in hooks:
            registered.remove()
