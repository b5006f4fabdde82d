"""The write side of attention: change what chosen query rows pay to chosen key positions.

``attention.py`` reads attention; this module edits it, for every language-model forward inside
``with edit_attention(model, edits):`` (the prefill and each cached decode step). An
``AttentionEdit`` names

* ``keys [B, L]``: the *prompt* key positions it acts on (image tokens, system prompt, sinks).
  Keys beyond L (generated tokens) are never selected;
* ``queries [B, L]`` (None = every prompt row): the prompt query rows it edits. Generated tokens'
  query rows are always edited, so a decode step (one query, keys growing) is edited too;
* ``layers`` and ``heads`` (None = all), a ``mode`` from ``MODES`` and its ``factor``.

Modes act before the softmax (on the scaled logits ``q.k / sqrt(d)``, before the padding/causal
mask) or after it (on the probabilities):

* ``scale_logits``: ``s -> factor * s`` (ClearSight). Neutral 1.
* ``amplify_logits``: ``s -> s + factor * |s|`` (PAI). Neutral 0.
* ``scale_probs``: ``p -> factor * p``, then each row renormalised (same as adding ``log factor``
  to the logits). Neutral 1.
* ``redistribute``: ``p -> factor * p`` on ``keys``; the mass taken is given to ``targets [B, L]``
  in proportion to their own probabilities, so each row still sums to 1 (rows whose targets hold
  no mass are left as they are). Neutral 1.

``register_mode`` adds a mode (e.g. one that picks heads from the probabilities themselves).

How it runs: the layer's attention is computed by SDPA as usual, then only the query rows some
edit selects (the last prompt row for PAI; the rows after the image for ClearSight; the single row
of a decode step) are recomputed eagerly in float32 with the edits, and written over SDPA's rows.
In a decode step every row of the edits' B is recomputed, so SDPA skips them. Batch rows beyond
the edits' B (the second branch a contrastive decode joins as extra rows) keep SDPA's output
untouched. Edits whose factor is neutral are dropped, and a block with no edit left
does not switch the attention implementation, so it is exactly the unedited model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from transformers import PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from . import stack


@dataclass(frozen=True)
class Mode:
    """How a mode edits: ``stage`` "logits" (before the softmax) or "probs" (after), its neutral
    factor, the factors it accepts (``valid`` and its wording), and ``apply(values, selected, edit,
    targets) -> values`` on float32 ``[b, H, q, Lk]`` with ``selected``/``targets`` boolean and
    broadcastable to it (``targets`` None unless the edit has some)."""

    stage: str
    neutral: float
    valid: Callable[[float], bool]
    accepted: str
    apply: Callable[[torch.Tensor, torch.Tensor, AttentionEdit, torch.Tensor | None], torch.Tensor]
    needs_targets: bool = False


def _scale_logits(values, selected, edit, targets):
    return torch.where(selected, values * edit.factor, values)


def _amplify_logits(values, selected, edit, targets):
    return torch.where(selected, values + edit.factor * values.abs(), values)


def _scale_probs(values, selected, edit, targets):
    scaled = torch.where(selected, values * edit.factor, values)
    return scaled / scaled.sum(-1, keepdim=True)


def redistribute(values: torch.Tensor, selected: torch.Tensor, factor: float, targets: torch.Tensor) -> torch.Tensor:
    """Probabilities ``values`` with ``selected`` keys keeping ``factor`` of their mass and the rest
    given to ``targets`` (minus ``selected``) in proportion to their own; rows whose targets hold no
    mass are left as they are. Each row still sums to 1."""
    targets = targets & ~selected
    target_mass = values.masked_fill(~targets, 0).sum(-1, keepdim=True)
    taken = (1 - factor) * values.masked_fill(~selected, 0).sum(-1, keepdim=True)
    share = taken / target_mass.clamp(min=torch.finfo(values.dtype).tiny)
    edited = torch.where(selected, values * factor, torch.where(targets, values * (1 + share), values))
    return torch.where(target_mass > 0, edited, values)


def _redistribute(values, selected, edit, targets):
    return redistribute(values, selected, edit.factor, targets)


def _nonnegative(factor: float) -> bool:
    return math.isfinite(factor) and factor >= 0


MODES: dict[str, Mode] = {
    "scale_logits": Mode("logits", 1.0, _nonnegative, "a finite number >= 0", _scale_logits),
    "amplify_logits": Mode("logits", 0.0, _nonnegative, "a finite number >= 0", _amplify_logits),
    "scale_probs": Mode("probs", 1.0, lambda f: math.isfinite(f) and f > 0, "a finite number > 0", _scale_probs),
    "redistribute": Mode("probs", 1.0, lambda f: 0 <= f <= 1, "in [0, 1]", _redistribute, needs_targets=True),
}


def register_mode(name: str, mode: Mode) -> None:
    """Add ``mode`` under ``name`` (an existing name is refused)."""
    if name in MODES:
        raise ValueError(f"attention-edit mode {name!r} exists; known modes: {sorted(MODES)}")
    MODES[name] = mode


@dataclass(frozen=True)
class AttentionEdit:
    """One edit: ``mode`` with ``factor`` on ``keys [B, L]`` (bool, prompt positions) for the
    ``queries [B, L]`` prompt rows (None = all; generated rows always), in ``layers`` and ``heads``
    (None = all). ``targets [B, L]``: where ``redistribute`` puts the mass it takes."""

    keys: torch.Tensor
    mode: str
    factor: float
    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    queries: torch.Tensor | None = None
    targets: torch.Tensor | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown attention-edit mode {self.mode!r}; expected one of {sorted(MODES)}")
        mode = MODES[self.mode]
        if not mode.valid(float(self.factor)):
            raise ValueError(f"factor for mode {self.mode!r} must be {mode.accepted}, got {self.factor!r}")
        if self.keys.dtype != torch.bool or self.keys.dim() != 2:
            raise ValueError(f"keys must be a bool [B, L] mask, got {self.keys.dtype} {tuple(self.keys.shape)}")
        for name in ("queries", "targets"):
            mask = getattr(self, name)
            if mask is not None and (mask.dtype != torch.bool or mask.shape != self.keys.shape):
                raise ValueError(
                    f"{name} must be a bool mask shaped like keys {tuple(self.keys.shape)}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
        if mode.needs_targets != (self.targets is not None):
            raise ValueError(f"mode {self.mode!r} {'needs' if mode.needs_targets else 'takes no'} targets")
        for name in ("layers", "heads"):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, tuple(int(v) for v in values))

    @property
    def neutral(self) -> bool:
        """True when the factor leaves attention unchanged."""
        return float(self.factor) == MODES[self.mode].neutral

    def check(self, num_layers: int, num_heads: int) -> None:
        """Raise ``ValueError`` naming layer or head indices the model does not have."""
        for name, values, count in (("layers", self.layers, num_layers), ("heads", self.heads, num_heads)):
            bad = [v for v in values or () if not 0 <= v < count]
            if bad:
                raise ValueError(f"{name} {bad} out of range: the language model has {count} (0..{count - 1})")


@contextmanager
def edit_attention(model: PreTrainedModel, edits: Sequence[AttentionEdit]) -> Iterator[None]:
    """Apply ``edits`` to every language-model forward inside the block (nested blocks add up, and
    attention read inside or around the block is the edited one: :mod:`.stack`).

    With no non-neutral edit nothing is switched. Raises ``ValueError`` for layers or heads the model lacks.
    """
    text = model.config.get_text_config()
    for edit in edits:
        edit.check(text.num_hidden_layers, text.num_attention_heads)
    device = model.get_input_embeddings().weight.device
    active = tuple(_on(edit, device) for edit in edits if not edit.neutral)
    if not active:
        yield
        return
    with stack.push(model, edits=active):
        yield


def _padded(mask: torch.Tensor, length: int, value: bool) -> torch.Tensor:
    """``mask [B, L]`` extended to ``[B, length]`` with ``value`` for the positions after L."""
    if length < mask.shape[1]:
        raise ValueError(
            f"an attention edit covers {mask.shape[1]} prompt positions but the forward has "
            f"only {length} keys: edit masks must come from the prompt being decoded"
        )
    return torch.nn.functional.pad(mask, (0, length - mask.shape[1]), value=value)


def query_rows(edit: AttentionEdit, num_queries: int, num_keys: int) -> torch.Tensor:
    """Which of the forward's query rows ``edit`` touches, bool ``[B, num_queries]``.

    Query i sits at key position ``num_keys - num_queries + i`` (the cache holds the rest).
    """
    queries = edit.queries if edit.queries is not None else torch.ones_like(edit.keys)
    return _padded(queries, num_keys, True)[:, num_keys - num_queries :]


def edited_probs(
    scores: torch.Tensor, visible: torch.Tensor, edits: Sequence[AttentionEdit], rows: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Softmax attention with ``edits`` applied, float32 ``[b, H, q, Lk]``.

    ``scores [b, H, q, Lk]``: float32 scaled logits; ``visible [b, 1, q, Lk]`` bool (padding and
    causal mask); ``rows[i] [b, q]``: the query rows ``edits[i]`` touches. Masks of the edits are
    on the scores' device with b rows.
    """
    num_keys, num_heads = scores.shape[-1], scores.shape[1]
    selections = []
    for edit, row in zip(edits, rows, strict=True):
        heads = torch.ones(num_heads, dtype=torch.bool, device=scores.device)
        if edit.heads is not None:
            heads = torch.zeros_like(heads).index_fill_(0, torch.tensor(edit.heads, device=heads.device), True)
        selected = (
            _padded(edit.keys, num_keys, False)[:, None, None] & heads[None, :, None, None] & row[:, None, :, None]
        )
        targets = None if edit.targets is None else _padded(edit.targets, num_keys, False)[:, None, None] & visible
        selections.append((edit, selected & visible, targets))
    for edit, selected, targets in selections:
        if MODES[edit.mode].stage == "logits":
            scores = MODES[edit.mode].apply(scores, selected, edit, targets)
    probs = scores.masked_fill(~visible, torch.finfo(scores.dtype).min).softmax(-1)
    for edit, selected, targets in selections:
        if MODES[edit.mode].stage == "probs":
            probs = MODES[edit.mode].apply(probs, selected, edit, targets)
    return probs


def visible_keys(
    attention_mask: torch.Tensor | None, batch: int, num_queries: int, num_keys: int, device: torch.device
) -> torch.Tensor:
    """Boolean ``[batch, 1, q, Lk]``: which keys each query may see.

    ``attention_mask`` as ``sdpa_mask`` builds it: boolean ``[B, 1, q, Lk]`` (True = attend), an
    additive float mask (0 = attend), or None (causal, no padding).
    """
    if attention_mask is None:
        positions = torch.arange(num_keys - num_queries, num_keys, device=device)
        causal = torch.arange(num_keys, device=device)[None, :] <= positions[:, None]
        return causal[None, None].expand(batch, 1, num_queries, num_keys)
    mask = attention_mask[:batch, :, :, :num_keys]
    return mask if mask.dtype == torch.bool else mask == 0


def edited_attention(module, query, key, value, attention_mask, scaling, edits, **kwargs):
    """SDPA, then the query rows that ``edits`` (this layer's, non-empty) select recomputed with them.

    ``query [B', H, q, d]``, ``key``/``value [B', Hkv, Lk, d]``; returns ``([B', q, H, d], None)``.
    In a decode step every query row is a generated one, so the edits' B rows are all recomputed:
    SDPA then runs on the other rows only (none unless a second branch was joined).
    """
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    batch = _edited_batch(edits, query.shape[0])
    num_queries, num_keys = query.shape[2], key.shape[2]
    if num_keys - num_queries >= edits[0].keys.shape[1]:
        return _generated_rows(module, query, key, value, attention_mask, scaling, edits, batch, **kwargs)
    output, _ = sdpa(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    rows = [query_rows(edit, num_queries, num_keys) for edit in edits]
    touched = torch.stack(rows).any(0)  # [B, q]
    columns = touched.any(0).nonzero().flatten()
    if columns.numel() == 0:
        return output, None
    edited = _eager(
        query[:batch, :, columns],
        key[:batch],
        value[:batch],
        attention_mask,
        scaling,
        edits,
        [row[:, columns] for row in rows],
        num_queries,
        columns,
    )
    keep = touched[:, columns, None, None]
    output[:batch, columns] = torch.where(keep, edited.to(output.dtype), output[:batch, columns])
    return output, None


def _generated_rows(module, query, key, value, attention_mask, scaling, edits, batch, **kwargs):
    """A forward of generated tokens only: the first ``batch`` rows eager with ``edits``, the rest SDPA."""
    num_queries = query.shape[2]
    every = torch.ones(batch, num_queries, dtype=torch.bool, device=query.device)
    edited = _eager(
        query[:batch],
        key[:batch],
        value[:batch],
        attention_mask,
        scaling,
        edits,
        [every] * len(edits),
        num_queries,
        slice(None),
    ).to(query.dtype)
    if batch == query.shape[0]:
        return edited, None
    mask = None if attention_mask is None else attention_mask[batch:]
    rest, _ = ALL_ATTENTION_FUNCTIONS["sdpa"](
        module, query[batch:], key[batch:], value[batch:], mask, scaling=scaling, **kwargs
    )
    return torch.cat([edited, rest]), None


def _eager(query, key, value, attention_mask, scaling, edits, rows, num_queries, columns):
    """Edited attention output float32 ``[b, q', H, d]`` of the query rows ``columns`` (``query [b, H, q', d]``)."""
    batch, groups = query.shape[0], query.shape[1] // key.shape[1]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = query.float() @ repeat_kv(key, groups).float().transpose(-1, -2) * scale
    visible = visible_keys(attention_mask, batch, num_queries, key.shape[2], query.device)[:, :, columns]
    probs = edited_probs(scores, visible, edits, rows)
    return (probs @ repeat_kv(value, groups).float()).transpose(1, 2)


def _edited_batch(edits: Sequence[AttentionEdit], rows: int) -> int:
    """The B shared by the edits' masks; the forward may hold more rows (left untouched)."""
    sizes = {edit.keys.shape[0] for edit in edits}
    if len(sizes) != 1 or min(sizes) > rows:
        raise ValueError(
            f"attention edits cover batch sizes {sorted(sizes)}; the forward has {rows} rows "
            "(edits must share one B, at most the forward's)"
        )
    return sizes.pop()


def _on(edit: AttentionEdit, device: torch.device) -> AttentionEdit:
    """``edit`` with its masks moved to ``device``."""
    masks = {name: getattr(edit, name) for name in ("keys", "queries", "targets")}
    return replace(edit, **{name: None if mask is None else mask.to(device) for name, mask in masks.items()})


def edited_last_row(query, key, attention_mask, scaling: float, edits, probs: torch.Tensor) -> torch.Tensor:
    """``probs [B', H, Lk]`` (the last query row, unedited) with its first B rows edited by ``edits``."""
    batch = _edited_batch(edits, query.shape[0])
    num_queries, num_keys = query.shape[2], key.shape[2]
    scores = query[:batch, :, -1:].float() @ repeat_kv(key[:batch], query.shape[1] // key.shape[1]).float().transpose(
        -1, -2
    )
    visible = visible_keys(attention_mask, batch, num_queries, num_keys, query.device)[:, :, -1:]
    rows = [query_rows(edit, num_queries, num_keys)[:, -1:] for edit in edits]
    edited = edited_probs(scores * scaling, visible, edits, rows)[:, :, 0]
    return torch.cat([edited, probs[batch:]])
