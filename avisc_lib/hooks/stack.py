"""The stack of active attention hooks, and the switch to the one attention function that runs them.

Every hook block (:func:`avisc_lib.hooks.edit.edit_attention`,
:func:`avisc_lib.hooks.capture.record_last_query_attention`, ONLY's side read) pushes its edits or
readers here and switches the language model to :data:`DISPATCHER` for its duration. Blocks nest in
any order and add up; the attention function (:mod:`.dispatch`) applies every active edit first and
then hands the edited last-row probabilities to every active reader, so a reader inside or outside
an edit sees the attention the model actually used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from ..models import compat

DISPATCHER = "avisc_sdpa"
# A reader gets (module, probs [B', H, Lk] float32: the last query row after the edits, value, attention_mask).
Reader = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, Any], None]


@dataclass(frozen=True)
class Active:
    """What runs in every language-model attention call: ``edits`` (``AttentionEdit``), then ``readers``."""

    edits: tuple = ()
    readers: tuple[Reader, ...] = ()


NOTHING = Active()
_ACTIVE: ContextVar[Active] = ContextVar("avisc_attention_hooks")


def current() -> Active:
    """The hooks active in this context."""
    return _ACTIVE.get(NOTHING)


@contextmanager
def push(model: PreTrainedModel, edits: Sequence = (), readers: Sequence[Reader] = ()) -> Iterator[None]:
    """Add ``edits`` and ``readers`` to the active hooks inside the block; the language model runs
    :data:`DISPATCHER` meanwhile (its previous implementation is restored on exit, exceptions included)."""
    active = _ACTIVE.get(NOTHING)
    token = _ACTIVE.set(Active(active.edits + tuple(edits), active.readers + tuple(readers)))
    try:
        with compat.text_attention(model, DISPATCHER):
            yield
    finally:
        _ACTIVE.reset(token)
