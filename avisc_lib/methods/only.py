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

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv

from ..hooks import stack
from ..hooks.edit import visible_keys
from ..hooks.layers import layer_inputs
from ..models.compat import decoder_layers
from ..models.inputs import Prompt
from ..scores import plausibility_cut
from ..tokens import sinks
from .base import BETA, NON_NEGATIVE, Method, Option, int_at_least
from .registry import register

# Official code: zifuwan/ONLY. LLaVA: transformers/src/transformers/models/llama/modeling_llama.py
# (LlamaAttention lines 482-522, LlamaDecoderLayer lines 656-662, LlamaModel lines 949-993) and
# experiments/llava/model/language_model/llava_llama.py line 119; InstructBLIP:
# experiments/lavis/models/blip2_models/modeling_llama.py (lines 292-325, 418-423, 885).
ONLY_LAYER = 0  # enhance_layer_index: eval_bench/scripts/pope_eval.sh line 35
ONLY_RESIDUAL = 0.2  # weight of the last layer's input in the branch (modeling_llama.py line 658)
ONLY_FINAL = 0.5  # weight of the model's final normed state added to the branch's (llava_llama.py line 119)
# LLaVA normalises the branch with the last layer's input_layernorm and leaves BOS out of the text
# keys (keys 1:35 and 611:); InstructBLIP does neither (its line 419 is commented out; keys 32:).
ONLY_VARIANTS = {
    "llava": {"input_norm": True, "bos_is_text": False},
    "instructblip": {"input_norm": False, "bos_is_text": True},
}
# The side branch's weights: ritual_alpha_pos, ritual_alpha_neg, js_gamma (the L1 distance threshold:
# POPE 0.2, CHAIR and MME 0.25), pope_eval.sh lines 31, 32, 34; its cut ritual_beta is ``beta`` (POPE and
# CHAIR 0.1, pope_eval.sh line 33; MME 0.4).
LAYER = Option(
    "only_layer", ONLY_LAYER, "ONLY: the layer whose edited attention forms its side branch", int_at_least(0), int
)
ALPHA_POS = Option("only_alpha_pos", 3.0, "ONLY: weight added for the side branch when the two agree", NON_NEGATIVE)
ALPHA_NEG = Option("only_alpha_neg", 1.0, "ONLY: contrast strength when they disagree", NON_NEGATIVE)
GAMMA = Option("only_gamma", 0.2, "ONLY: L1 distance of the two distributions below which they agree", NON_NEGATIVE)


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


def side_read(branch: OnlyBranch, layer: int, image: torch.Tensor, bos: torch.Tensor):
    """A reader (:mod:`avisc_lib.hooks.stack`) that, at ``layer``, stores the branch's attention output
    of the last query, ``[B, D]``, from the layer's (possibly edited) last-row probabilities."""

    def read(module, probs, value, attention_mask) -> None:
        if module.layer_idx != layer:
            return
        batch, num_keys = image.shape[0], probs.shape[-1]
        visible = visible_keys(attention_mask, batch, 1, num_keys, probs.device)[:, 0, -1]
        image_keys = torch.nn.functional.pad(image, (0, num_keys - image.shape[1])) & visible
        text_keys = visible & ~image_keys & ~torch.nn.functional.pad(bos, (0, num_keys - bos.shape[1]))
        edited = only_probs(probs[:batch], text_keys, image_keys)
        values = repeat_kv(value[:batch], probs.shape[1] // value.shape[1]).float()
        output = torch.einsum("bhk,bhkd->bhd", edited, values).reshape(batch, -1).to(value.dtype)
        branch.attention = module.o_proj(output)

    return read


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
    block = decoder_layers(model)[-1]
    if not hasattr(getattr(block, "self_attn", None), "o_proj"):
        raise ValueError(
            f"ONLY reads Llama-style decoder layers (self_attn.o_proj, input_layernorm, mlp, norm); "
            f"this language model's are {type(block).__name__}"
        )
    device = model.get_input_embeddings().weight.device
    branch = OnlyBranch()
    bos = torch.zeros_like(prompt.image_mask)
    if not variant["bos_is_text"]:
        rows = torch.arange(bos.shape[0])
        bos[rows, sinks.bos_positions(prompt)] = True
    read = side_read(branch, layer, prompt.image_mask.to(device), bos.to(device))

    def keep_input(index: int, hidden: torch.Tensor) -> None:
        branch.last_input = hidden[: bos.shape[0], -1]

    def finish(module, args, kwargs, output) -> None:
        final = output.last_hidden_state[: bos.shape[0], -1]
        branch.logits = _only_logits(model, branch, final, variant["input_norm"])

    handle = model.get_decoder().register_forward_hook(finish, with_kwargs=True)
    try:
        with layer_inputs(model, [count - 1], keep_input), stack.push(model, readers=(read,)):
            yield branch
    finally:
        handle.remove()


def only_scores(
    logits: torch.Tensor,
    branch_logits: torch.Tensor,
    *,
    alpha_pos: float = ALPHA_POS.default,
    alpha_neg: float = ALPHA_NEG.default,
    gamma: float = GAMMA.default,
    beta: float = BETA.default,
) -> torch.Tensor:
    """ONLY's next-token scores ``[B, V]`` from the model's and the branch's logits ``[B, V]``.

    only_utils/only_sample.py lines 183-232, per row: d = sum |softmax(l) - softmax(l_only)| (the
    L1 distance, twice the total variation; the code sums over the batch too, which ran B = 1);
    scores = l + alpha_pos * l_only where d < gamma, else (1 + alpha_neg) * l - alpha_neg * l_only;
    then the plausibility cut on l. alpha_pos = alpha_neg = 0 gives l (greedy's argmax).
    """
    for option, value in ((ALPHA_POS, alpha_pos), (ALPHA_NEG, alpha_neg), (GAMMA, gamma), (BETA, beta)):
        option.validate(value)
    logits, branch_logits = logits.float(), branch_logits.float()
    distance = (logits.softmax(-1) - branch_logits.softmax(-1)).abs().sum(-1, keepdim=True)
    scores = torch.where(
        distance < gamma, logits + alpha_pos * branch_logits, (1 + alpha_neg) * logits - alpha_neg * branch_logits
    )
    return plausibility_cut(scores, logits, beta)


def only_method(model: PreTrainedModel, prompt: Prompt, settings) -> AbstractContextManager:
    """ONLY's side branch at ``settings.only_layer``; yields an ``OnlyBranch`` (contrast with ``only_scores``)."""
    return only(model, prompt, layer=settings.only_layer)


# Official evaluations (LLaVA-1.5), zifuwan/ONLY at 109bffe: ``eval_bench/pope_eval_llava.py`` lines 257-269
# (the ``llava_v1`` conversation, the question as it is), 59-61 and 288-292 (sampling, T = 1, top-p 1, no
# top-k), 86 (8 tokens), 130-144 (AvisC's recorder); ``eval_bench/scripts/pope_eval.sh`` lines 31-35;
# ``experiments/eval/mme_llava.py`` lines 70 and 113-117 (the question file's whole text under
# ``llava_v1``, line 176), 131 and 179-181 (sampling); ``experiments/cd_scripts/mme_eval.sh`` lines 3 and
# 25-28; its scorer ``experiments/eval/eval_mme.py`` lines 30-44 is MME's. The MME script passes no token
# limit (line 135 is commented out); the library's 64 applies.
SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": None}
WEIGHTS = {"only_alpha_pos": 3.0, "only_alpha_neg": 1.0, "only_layer": 0}
ONLY = register(
    Method(
        "only",
        "ONLY: contrast with a side branch from one layer's text-enhanced attention",
        (BETA, LAYER, ALPHA_POS, ALPHA_NEG, GAMMA),
        intervention=only_method,
        side=True,
        scores=lambda original, other, step, settings: only_scores(
            original,
            other,
            alpha_pos=settings.only_alpha_pos,
            alpha_neg=settings.only_alpha_neg,
            gamma=settings.only_gamma,
            beta=settings.beta,
        ),
        official={
            ("pope", "llava"): dict(
                prompt_style="llava_v1",
                parser="avisc",
                decode={**SAMPLING, "max_new_tokens": 8, **WEIGHTS, "beta": 0.1, "only_gamma": 0.2},
            ),
            ("mme", "llava"): dict(
                prompt_style="llava_v1",
                parser="official",
                question="mme_llava_two_lines",
                decode={**SAMPLING, "max_new_tokens": 64, **WEIGHTS, "beta": 0.4, "only_gamma": 0.25},
            ),
        },
        no_official="ONLY's POPE and MME scripts for LLaVA-1.5 are transcribed here; its InstructBLIP scripts are not, "
        "and it has no AMBER script",
    )
)
