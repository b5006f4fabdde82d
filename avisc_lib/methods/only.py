"""ONLY (Wan et al., ICCV 2025, "One-Layer Intervention Sufficiently Mitigates Hallucinations"):
a side branch built from one layer's edited attention, contrasted with the model's logits.

What the official code computes (``zifuwan/ONLY``), for the position being predicted:

1. at layer ``ONLY_LAYER`` (0), the attention of that position, with outliers (> mean + std) zeroed
   among the text keys and among the image keys, and every head whose text-to-image attention
   entropy ratio is below the mean over heads zeroed; times V and the output projection: ``a``;
2. the branch skips the middle layers: ``h = 0.2 x (input of the last layer) + input_layernorm(a)``,
   then the last layer's MLP with its residual, the final norm, plus 0.5 x the model's own final
   normed state, and the LM head: ``l_only``;
3. the next-token scores contrast ``l`` (the model's logits) with ``l_only`` (``only_scores``).

The model's own forward is untouched, so the branch costs about one MLP and one LM head per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..models import compat
from .. import sinks
from ..hooks.capture import last_query_probs
from ..hooks.edit import visible_keys
from ..models.inputs import Prompt

# Official code: zifuwan/ONLY. LLaVA: transformers/src/transformers/models/llama/modeling_llama.py
# (LlamaAttention lines 482-522, LlamaDecoderLayer lines 656-662, LlamaModel lines 949-993) and
# experiments/llava/model/language_model/llava_llama.py line 119; InstructBLIP:
# experiments/lavis/models/blip2_models/modeling_llama.py (lines 292-325, 418-423, 885).
ONLY_LAYER = 0  # enhance_layer_index: eval_bench/scripts/pope_eval.sh line 35
ONLY_RESIDUAL = 0.2  # weight of the last layer's input in the branch (modeling_llama.py line 658)
ONLY_FINAL = 0.5  # weight of the model's final normed state added to the branch's (llava_llama.py line 119)
# LLaVA normalises the branch with the last layer's input_layernorm and leaves BOS out of the text
# keys (keys 1:35 and 611:); InstructBLIP does neither (its line 419 is commented out; keys 32:).
ONLY_VARIANTS = {"llava": {"input_norm": True, "bos_is_text": False},
                 "instructblip": {"input_norm": False, "bos_is_text": True}}
ONLY_ALPHA_POS = 3.0  # ritual_alpha_pos (pope_eval.sh line 31)
ONLY_ALPHA_NEG = 1.0  # ritual_alpha_neg (pope_eval.sh line 32)
ONLY_GAMMA = 0.2  # js_gamma, the L1 distance threshold: POPE 0.2 (pope_eval.sh line 34); CHAIR and MME 0.25
ONLY_BETA = 0.1  # ritual_beta, the plausibility cut: POPE/CHAIR 0.1 (pope_eval.sh line 33); MME 0.4


def without_outliers(probs: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``probs [B, H, Lk]`` zeroed on ``keys [B, Lk]`` where they exceed mean + std over those keys
    (unbiased std, per row and head); other keys untouched."""
    keys = keys[:, None]
    count = keys.sum(-1, keepdim=True)
    mean = probs.masked_fill(~keys, 0).sum(-1, keepdim=True) / count
    var = ((probs - mean) ** 2).masked_fill(~keys, 0).sum(-1, keepdim=True) / (count - 1)
    return probs.masked_fill(keys & (probs > mean + var.sqrt()), 0)


def attention_entropy(probs: torch.Tensor, keys: torch.Tensor, empty: float) -> torch.Tensor:
    """Entropy ``[B, H]`` of ``probs`` renormalised over ``keys``, -sum p log(p + 1e-6) as the
    official code; ``empty`` where the keys hold no mass (its nan_to_num)."""
    mass = probs.masked_fill(~keys[:, None], 0)
    share = mass / mass.sum(-1, keepdim=True)
    entropy = -(share * torch.log(share + 1e-6)).masked_fill(~keys[:, None], 0).sum(-1)
    return torch.nan_to_num(entropy, nan=empty)


def only_probs(probs: torch.Tensor, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """ONLY's edited attention of the last query, ``[B, H, Lk]`` from ``probs [B, H, Lk]``.

    Outliers (> mean + std) are zeroed among the text keys and among the image keys, without
    renormalising; heads whose text-to-image entropy ratio is below the mean over heads are zeroed.
    """
    probs = without_outliers(without_outliers(probs, text), image)
    ratio = attention_entropy(probs, text, 0.0) / attention_entropy(probs, image, float("inf"))
    return probs.masked_fill((ratio < ratio.mean(-1, keepdim=True))[..., None], 0)


@dataclass
class OnlyBranch:
    """The side branch's logits ``[B, V]`` of the latest forward (None before the first)."""

    logits: torch.Tensor | None = None
    attention: torch.Tensor | None = field(default=None, repr=False)
    last_input: torch.Tensor | None = field(default=None, repr=False)


ONLY_ATTENTION = "avisc_only_sdpa"
_ONLY: ContextVar[tuple[OnlyBranch, int, torch.Tensor, torch.Tensor] | None] = ContextVar("avisc_only", default=None)


def _only_sdpa(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA; at ONLY's layer also the branch's attention output of the last query, ``[B, D]``."""
    active = _ONLY.get()
    if active is not None and module.layer_idx == active[1]:
        branch, _, image, bos = active
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        batch, num_keys = image.shape[0], key.shape[2]
        probs = last_query_probs(query[:batch], key[:batch], None if attention_mask is None else attention_mask[:batch], scale)
        visible = visible_keys(attention_mask, batch, query.shape[2], num_keys, query.device)[:, 0, -1]
        image_keys = torch.nn.functional.pad(image, (0, num_keys - image.shape[1])) & visible
        text_keys = visible & ~image_keys & ~torch.nn.functional.pad(bos, (0, num_keys - bos.shape[1]))
        edited = only_probs(probs, text_keys, image_keys)
        values = repeat_kv(value[:batch], query.shape[1] // key.shape[1]).float()
        output = torch.einsum("bhk,bhkd->bhd", edited, values).reshape(batch, -1).to(query.dtype)
        branch.attention = module.o_proj(output)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, scaling=scaling, **kwargs)


compat.register_attention(ONLY_ATTENTION, _only_sdpa)


def _only_logits(model: PreTrainedModel, branch: OnlyBranch, final: torch.Tensor, input_norm: bool) -> torch.Tensor:
    """Branch logits ``[B, V]``: the last layer's MLP on 0.2 x (its input) + (layer-``ONLY_LAYER``
    attention), normed, plus 0.5 x the model's final normed state ``final [B, D]``."""
    decoder = model.get_decoder()
    last = decoder.layers[-1]
    attention = last.input_layernorm(branch.attention) if input_norm else branch.attention
    hidden = ONLY_RESIDUAL * branch.last_input + attention
    hidden = hidden + last.mlp(last.post_attention_layernorm(hidden))
    return model.get_output_embeddings()(decoder.norm(hidden) + ONLY_FINAL * final)


@contextmanager
def only(model: PreTrainedModel, prompt: Prompt, *, layer: int = ONLY_LAYER) -> Iterator[OnlyBranch]:
    """Compute ONLY's side-branch logits on every forward inside the block (the model's own
    forward is unchanged); yields the ``OnlyBranch`` whose ``logits`` each forward updates.

    The branch reads only the last position of each forward: the edited attention at ``layer``,
    the hidden state entering the last layer and the final normed state, then the last layer's
    MLP, norm and LM head once more (about one layer's MLP per step, against a full second pass
    for VCD).
    """
    count = model.config.get_text_config().num_hidden_layers
    if not 0 <= layer < count - 1:
        raise ValueError(f"only_layer must be in [0, {count - 2}], got {layer}")
    variant = ONLY_VARIANTS.get(model.config.model_type)
    if variant is None:
        raise ValueError(f"ONLY is defined for model types {sorted(ONLY_VARIANTS)}, got {model.config.model_type!r}")
    device = model.get_input_embeddings().weight.device
    branch = OnlyBranch()
    bos = torch.zeros_like(prompt.image_mask)
    if not variant["bos_is_text"]:
        rows = torch.arange(bos.shape[0])
        bos[rows, sinks.bos_positions(prompt)] = True
    token = _ONLY.set((branch, layer, prompt.image_mask.to(device), bos.to(device)))

    def keep_input(index: int, hidden: torch.Tensor) -> None:
        branch.last_input = hidden[: bos.shape[0], -1]

    def finish(module, args, kwargs, output) -> None:
        final = output.last_hidden_state[: bos.shape[0], -1]
        branch.logits = _only_logits(model, branch, final, variant["input_norm"])

    handle = model.get_decoder().register_forward_hook(finish, with_kwargs=True)
    try:
        with sinks.layer_inputs(model, [count - 1], keep_input), compat.text_attention(model, ONLY_ATTENTION):
            yield branch
    finally:
        handle.remove()
        _ONLY.reset(token)


def only_scores(logits: torch.Tensor, branch_logits: torch.Tensor, *, alpha_pos: float = ONLY_ALPHA_POS,
                alpha_neg: float = ONLY_ALPHA_NEG, gamma: float = ONLY_GAMMA, beta: float = ONLY_BETA) -> torch.Tensor:
    """ONLY's next-token scores ``[B, V]`` from the model's and the branch's logits ``[B, V]``.

    only_utils/only_sample.py lines 183-232, per row: d = sum |softmax(l) - softmax(l_only)| (the
    L1 distance, twice the total variation; the code sums over the batch too, which ran B = 1);
    scores = l + alpha_pos * l_only where d < gamma, else (1 + alpha_neg) * l - alpha_neg * l_only;
    tokens with l < log(beta) + max l are removed. alpha_pos = alpha_neg = 0 gives l (greedy's argmax).
    """
    for name, value in (("only_alpha_pos", alpha_pos), ("only_alpha_neg", alpha_neg), ("only_gamma", gamma)):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")
    logits, branch_logits = logits.float(), branch_logits.float()
    distance = (logits.softmax(-1) - branch_logits.softmax(-1)).abs().sum(-1, keepdim=True)
    scores = torch.where(distance < gamma, logits + alpha_pos * branch_logits,
                         (1 + alpha_neg) * logits - alpha_neg * branch_logits)
    cutoff = math.log(beta) + logits.max(-1, keepdim=True).values
    return scores.masked_fill(logits < cutoff, float("-inf"))
