"""Visual sink tokens (VAR, "See What You Are Told", ICLR 2025): tokens whose hidden state carries a
massive activation in the same few dimensions as the BOS token.

What the official code does (``MICV-yonsei/VisAttnSink``, ``src/logic/logic.py``, ``DimProspector``):
before each decoder layer l >= 2 of the prefill, it takes phi(x) = |x / rms(x)| (RMSNorm without its
weight, float32, eps 1e-6) and calls a token a sink at layer l when phi(x)[d] > tau for one of the
*sink dimensions* d. The code hard-codes those dimensions per LLM (``src/logic/constants.py``:
LLaMA-2-7B 2533 and 1415); the paper finds them as the dimensions where BOS has massive activation.
Here they are read from each row's own BOS at each layer (d is a sink dimension of row b at layer l
when phi(BOS)[d] > tau), so no table of models is needed; pass ``dims`` to use fixed ones instead
(the code's ``DIM_SINK``, ``src/logic/constants.py`` line 9). The sinks are kept per layer, as the
official code keeps them (``indices[layer]``), and found anew for every batch: the released code
finds them for its first question only (see :func:`avisc_lib.methods.var.var`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..hooks.layers import layer_inputs
from ..models import compat
from ..models.inputs import Prompt, embed_prompt

TAU = 20.0  # massive-activation threshold: VisAttnSink A_exps/lv1.5_7b.yml line 12 (tau: 20)
FIRST_LAYER = 2  # sinks are looked for before layers 2.. L-1: src/logic/logic.py line 52 ([2:])
RMS_EPS = 1e-6  # src/logic/logic.py line 99


def activation(hidden: torch.Tensor) -> torch.Tensor:
    """phi(x) = |x / rms(x)| over the last dimension, float32; ``hidden [..., D]`` -> ``[..., D]``."""
    hidden = hidden.float()
    return (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + RMS_EPS)).abs()


def bos_positions(prompt: Prompt) -> torch.Tensor:
    """Index of each row's BOS, ``[B]``: its first position that is neither padding nor an image token.

    Taken from the layout rather than ``config.bos_token_id``, which can disagree with the tokenizer
    (InstructBLIP-Vicuna's config says 0, its tokenizer writes id 2 after the 32 query tokens).
    """
    text = prompt.attention_mask.bool() & ~prompt.image_mask
    if not bool(text.any(-1).all()):
        raise ValueError(f"rows {torch.nonzero(~text.any(-1)).flatten().tolist()} hold no text token")
    return text.int().argmax(-1)


def massive_dimensions(phi: torch.Tensor, bos: torch.Tensor, tau: float) -> torch.Tensor:
    """Sink dimensions ``[B, D]`` (True where BOS's phi exceeds ``tau``); ``phi [B, L, D]``, ``bos [B]``."""
    return phi[torch.arange(phi.shape[0], device=phi.device), bos.to(phi.device)] > tau


def massive_tokens(phi: torch.Tensor, dims: torch.Tensor, tau: float) -> torch.Tensor:
    """``[B, L]`` True where phi exceeds ``tau`` in a sink dimension; ``dims [B, D]`` boolean."""
    return ((phi > tau) & dims[:, None, :]).any(-1)


def check_tau(tau: float) -> None:
    if not tau > 0 or tau == float("inf"):
        raise ValueError(f"tau must be a finite number > 0, got {tau}")


def sink_layers(model: PreTrainedModel, layers: Sequence[int] | None = None) -> tuple[int, ...]:
    """The decoder layers whose inputs are searched: ``layers``, or 2 .. L-1 as the official code."""
    count = model.config.get_text_config().num_hidden_layers
    if layers is None:
        return tuple(range(FIRST_LAYER, count))
    bad = [layer for layer in layers if not 0 <= layer < count]
    if bad or not layers:
        raise ValueError(f"layers must be a non-empty list of indices in [0, {count - 1}], got {list(layers)}")
    return tuple(sorted(set(layers)))


def fixed_dimensions(dims: Sequence[int], batch: int, hidden_size: int, device: torch.device) -> torch.Tensor:
    """``[B, D]`` boolean from a list of dimension indices (the official per-model constants)."""
    bad = [d for d in dims if not 0 <= d < hidden_size]
    if bad or not dims:
        raise ValueError(f"dims must be a non-empty list of indices in [0, {hidden_size - 1}], got {list(dims)}")
    mask = torch.zeros(batch, hidden_size, dtype=torch.bool, device=device)
    mask[:, list(dims)] = True
    return mask


@dataclass(frozen=True)
class Sinks:
    """Sink tokens of a batch, per searched layer.

    ``layers``: decoder layers whose inputs were searched; ``dims [B, layers, D]``: sink dimensions
    per row and layer; ``tokens [B, layers, L]``: positions with a massive activation in them (text
    positions such as BOS included, padding excluded); ``image_mask [B, L]``: the N image tokens.
    """

    layers: tuple[int, ...]
    dims: torch.Tensor
    tokens: torch.Tensor
    image_mask: torch.Tensor

    @property
    def image(self) -> torch.Tensor:
        """Visual sink tokens per layer, ``[B, layers, N]``."""
        batch, layers, _ = self.tokens.shape
        count = int(self.image_mask[0].sum())
        return self.tokens.transpose(1, 2)[self.image_mask].reshape(batch, count, layers).transpose(1, 2)

    @property
    def mask(self) -> torch.Tensor:
        """``[B, N]`` True at image tokens that are sinks in at least one searched layer."""
        return self.image.any(1)

    def dimensions(self) -> list[int]:
        """Sorted sink dimensions found in any row and layer."""
        return torch.nonzero(self.dims.any(0).any(0)).flatten().tolist()


@torch.no_grad()
def layer_hidden_states(
    model: PreTrainedModel, inputs: Mapping[str, torch.Tensor], layers: Sequence[int]
) -> tuple[Prompt, dict[int, torch.Tensor]]:
    """The embedded prompt and the hidden states ``[B, L, D]`` entering each decoder layer in
    ``layers``, from one forward pass of the prompt (``inputs``: the processor's output)."""
    prompt = embed_prompt(model, inputs)
    with layer_inputs(model, layers) as hidden:
        compat.language_model_forward(model, prompt.embeds, prompt.attention_mask)
    return prompt, hidden


@torch.no_grad()
def find_sinks(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    *,
    tau: float = TAU,
    dims: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
) -> Sinks:
    """Sink dimensions and sink tokens of a batch, from one forward pass of the prompt.

    ``inputs``: the processor's output (left-padded when B > 1). ``dims``: fixed sink dimensions
    (e.g. ``[1415, 2533]`` for LLaMA-2-7B); by default each row's BOS gives them, layer by layer.
    """
    check_tau(tau)
    searched = sink_layers(model, layers)
    prompt, hidden = layer_hidden_states(model, inputs, searched)
    phis = [activation(hidden[layer]) for layer in searched]
    (batch, length), size = prompt.input_ids.shape, model.config.get_text_config().hidden_size
    valid = prompt.attention_mask.bool().to(prompt.embeds.device)
    if dims is None:
        bos = bos_positions(prompt)
        found = [massive_dimensions(phi, bos, tau) for phi in phis]
    else:
        found = [fixed_dimensions(dims, batch, size, valid.device)] * len(phis)
    tokens = [massive_tokens(phi, d, tau) & valid for phi, d in zip(phis, found)]
    image_mask = prompt.image_mask.to(valid.device)
    return Sinks(
        searched,
        _stacked(found, (batch, 0, size), valid.device),
        _stacked(tokens, (batch, 0, length), valid.device),
        image_mask,
    )


def _stacked(masks: list[torch.Tensor], empty: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """Per-layer masks stacked along dim 1; a model too shallow to search any layer gives ``empty``."""
    return torch.stack(masks, 1) if masks else torch.zeros(empty, dtype=torch.bool, device=device)


def sink_tokens(model: PreTrainedModel, inputs: Mapping[str, torch.Tensor], **options) -> torch.Tensor:
    """Visual sink-token mask ``[B, N]`` (True = sink in some searched layer), like ``select_blind_tokens``.

    ``options``: ``tau``, ``dims``, ``layers`` of ``find_sinks``, which also gives the per-layer
    masks and the dimensions found.
    """
    return find_sinks(model, inputs, **options).mask
