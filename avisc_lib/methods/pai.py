"""PAI (Liu et al., ECCV 2024, "Paying More Attention to Image"; code ``LALBJ/PAI`` at 9bbd8bd).

In layers [2, 32) every head's pre-softmax logit ``s`` from the answer position to each image
token becomes ``s + alpha * |s|`` (``attention.py`` lines 90-94: only the last query row, so the
prompt's own rows are unchanged), and the logits are refined against a text-only branch
(:func:`pai_refine`, M3ID's branch).

With the refinement on (``gamma != 1``), the official code skips the edit for the *first* answer
token: ``llama_modify`` leaves ``use_cfg=True`` on the layers and the image branch's prefill runs
before ``CFGLogits`` first resets it (``pope_eval.py`` lines 113-143, ``CFG.py`` lines 32-49;
confirmed in the repository's issue #11). We follow the code: with ``gamma != 1`` the prefill is
not edited, generated tokens are. ``gamma = 1`` here is the official code run *without*
``--use-cfg`` (edit on every step, the prefill's answer row included, no text-only branch), not
``--use-cfg --gamma 1``: there ``CFGLogits`` returns before it ever clears ``use_cfg`` (``CFG.py``
lines 28-33, 48-49), so the flag ``llama_modify`` set stays on and the edit never runs
(``attention.py`` line 90, ``if use_attn and not use_cfg``): that call decodes the unedited model.

PAI's code covers LLaVA-1.5, MiniGPT-4 and Shikra (``model_loader.py`` lines 211-227), not
InstructBLIP. Layer ranges are given for LLaVA-1.5-7B's 32 layers; ``layers=None`` scales them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from transformers import PreTrainedModel

from ..hooks.edit import AttentionEdit, edit_attention
from ..models.inputs import Prompt
from ..scores import plausibility_cut
from .base import BETA, NON_NEGATIVE, Check, Method, Option, Passes, finite, layer_range, layer_span
from .m3id import TEXT_ONLY
from .registry import register

# README.md line 65 (POPE) and 82 (CHAIR): --alpha 0.2 --gamma 1.1 --start-layer 2 --end-layer 32
# (pope_eval.py line 53's argparse default, gamma = 2, is not what the README runs). The layers are
# range(start, end) (attention.py line 122). CFG.py line 53: tokens below 0.1 x the image branch's
# top probability are cut (beta).
PAI_LAYERS = (2, 32)
AT_LEAST_ONE = Check(lambda v: finite(v) and v >= 1, "a finite number >= 1")
PAI_ALPHA = Option(
    "pai_alpha", 0.2, "PAI: image-token attention logits s -> s + pai_alpha * |s| (0: off)", NON_NEGATIVE
)
PAI_GAMMA = Option("pai_gamma", 1.1, "PAI: refinement against a text-only branch (1: off, one pass)", AT_LEAST_ONE)
LAYERS_HELP = "PAI: layers start:end, half-open (None: the paper's 2:32 of 32, scaled to the model's depth)"
PAI_LAYER_SPAN = Option("pai_layers", None, LAYERS_HELP, kind=layer_span)


def pai_edits(
    model: PreTrainedModel, prompt: Prompt, alpha: float, gamma: float, layers: tuple[int, int] | None
) -> list[AttentionEdit]:
    """PAI's attention edit: image-token logits ``s -> s + alpha * |s|`` from the answer rows.

    ``alpha >= 0`` (0 = off), ``gamma >= 1`` (1 = no refinement; decides whether the prefill's
    last row is edited, see the module docstring), ``layers`` as ``layer_range``.
    """
    PAI_ALPHA.validate(alpha)
    PAI_GAMMA.validate(gamma)
    text = model.config.get_text_config()
    chosen = layer_range(layers, PAI_LAYERS, text.num_hidden_layers, "pai_layers")
    queries = torch.zeros_like(prompt.image_mask)
    if gamma == 1:
        queries[:, -1] = True  # left padding: the last column is every row's answer position
    return [AttentionEdit(prompt.image_mask, "amplify_logits", float(alpha), layers=chosen, queries=queries)]


def pai_refine(
    logits: torch.Tensor, text_logits: torch.Tensor, gamma: float, beta: float = BETA.default
) -> torch.Tensor:
    """PAI's logit refinement against the text-only branch (``CFG.py`` lines 29-57), ``[B, V]``.

    With ``s = log_softmax(logits)`` (image branch, attention edited) and ``u =
    log_softmax(text_logits)`` (no image, no edit): ``gamma * (s - u) + u``, then the plausibility
    cut on ``s``. ``gamma == 1`` returns ``s`` unchanged (the code returns before the cut).
    """
    scores = torch.log_softmax(logits.float(), dim=-1)
    if gamma == 1:
        return scores
    text = torch.log_softmax(text_logits.float(), dim=-1)
    return plausibility_cut(gamma * (scores - text) + text, scores, beta)


def pai(model: PreTrainedModel, prompt: Prompt, settings) -> AbstractContextManager:
    """PAI's attention edit from ``settings.pai_alpha``, ``pai_gamma``, ``pai_layers``."""
    return edit_attention(model, pai_edits(model, prompt, settings.pai_alpha, settings.pai_gamma, settings.pai_layers))


PAI = register(
    Method(
        "pai",
        "PAI: amplified image attention, refined against a text-only branch",
        (BETA, PAI_ALPHA, PAI_GAMMA, PAI_LAYER_SPAN),
        Passes(1, 2, 2),  # the refinement's text-only branch (pai_gamma != 1, the default)
        branch=TEXT_ONLY,
        branch_if=lambda settings: settings.pai_gamma != 1,
        intervention=pai,
        scores=lambda original, other, step, settings: pai_refine(original, other, settings.pai_gamma, settings.beta),
        no_official=(
            "PAI's POPE script reads chat-format question files its repository does not hold (LALBJ/PAI "
            "constants.py:29-33) and a prompt the library has no style for (constants.py:14,27); pass its "
            "README.md:65 settings yourself (pai_alpha=0.2, pai_gamma=1.1, layers 2:32, greedy)"
        ),
    )
)
