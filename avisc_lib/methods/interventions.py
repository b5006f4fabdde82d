"""Attention interventions as decoding methods: PAI, ClearSight, VAR and ONLY (:mod:`.only`).

``INTERVENTIONS[method](model, prompt, settings)`` returns a context manager that decode holds
around the original branch's prefill and every later step (a second branch joined as extra batch
rows is left untouched by ``attention_edit``); a second branch's own prefill runs outside it.
``settings`` is anything with the method's fields (``DecodeSettings``); the functions validate
them. More methods are added by putting an entry in ``INTERVENTIONS``.

* **PAI** (Liu et al., ECCV 2024; code ``LALBJ/PAI`` at 9bbd8bd): in layers [2, 32) every head's
  pre-softmax logit ``s`` from the answer position to each image token becomes ``s + alpha * |s|``
  (``attention.py`` lines 90-94: only the last query row, so the prompt's own rows are unchanged).
  With the logit refinement on (``gamma != 1``), the official code skips the edit for the *first*
  answer token: ``llama_modify`` leaves ``use_cfg=True`` on the layers and the image branch's
  prefill runs before ``CFGLogits`` first resets it (``pope_eval.py`` lines 113-143, ``CFG.py``
  lines 32-49; confirmed in the repository's issue #11). We follow the code: with ``gamma != 1``
  the prefill is not edited, generated tokens are. ``pai_refine`` is the refinement itself.
  ``gamma = 1`` here is the official code run *without* ``--use-cfg`` (edit on every step, the
  prefill's answer row included, no text-only branch), not ``--use-cfg --gamma 1``: there
  ``CFGLogits`` returns before it ever clears ``use_cfg`` (``CFG.py`` lines 28-33, 48-49), so the
  flag ``llama_modify`` set stays on and the edit never runs (``attention.py`` line 90, ``if
  use_attn and not use_cfg``): that call decodes the unedited model.
* **ClearSight / VAF** (CVPR 2025; code ``ustc-hyin/ClearSight`` at 5466c94): in layers [9, 15) the
  pre-softmax logits of queries after the image are multiplied by ``enhance`` on image tokens and
  by ``suppress`` on the system prompt (``visaug/inference/AttnAdapter.py`` lines 70-78). The code
  hard-codes the system prompt as the first 35 positions (``SYS_LEN``), which is everything before
  the image in LLaVA-1.5's ``llava_v1`` prompt (BOS, system message, "USER:"); here it is the
  non-padding positions before each row's first image token. With the "hf" chat template that is
  BOS and "USER:"; for InstructBLIP, whose query tokens come first, it is empty.

Neither paper reports InstructBLIP; PAI's code covers LLaVA-1.5, MiniGPT-4 and Shikra
(``model_loader.py`` lines 211-227), ClearSight's README LLaVA-1.5 and Qwen-VL. Layer ranges are
given for LLaVA-1.5-7B's 32 layers; ``layers=None`` scales them to the model's depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from .. import sinks
from ..hooks.edit import AttentionEdit, Mode, edit_attention, register_mode
from ..models.inputs import Prompt
from .only import only

# LALBJ/PAI (commit 9bbd8bd). README.md line 65 (POPE) and 82 (CHAIR): --alpha 0.2 --gamma 1.1
# --start-layer 2 --end-layer 32 (pope_eval.py line 53's argparse default, gamma = 2, is not what
# the README runs). The layers are range(start, end) (attention.py line 122).
PAI_ALPHA = 0.2
PAI_GAMMA = 1.1
PAI_LAYERS = (2, 32)
PAI_BETA = 0.1  # CFG.py line 53: tokens below 0.1 x the image branch's top probability are cut
# ustc-hyin/ClearSight (commit 5466c94). visaug/inference/infer_pope.sh lines 7-8 (also README.md
# lines 94-95): --enh-para 1.15 --sup-para 0.95; infer_pope.py line 54: layers with 8 < i < 15.
CLEARSIGHT_ENHANCE = 1.15
CLEARSIGHT_SUPPRESS = 0.95
CLEARSIGHT_LAYERS = (9, 15)
PAPER_DEPTH = 32  # language-model layers of LLaVA-1.5-7B, for which the ranges above were given

Intervention = Callable[[PreTrainedModel, Prompt, Any], AbstractContextManager]


def layer_range(layers: tuple[int, int] | None, paper: tuple[int, int], num_layers: int, name: str) -> tuple[int, ...]:
    """Layer indices of the half-open range ``layers = (start, end)``.

    None: the ``paper`` range for a 32-layer model scaled to ``num_layers`` (rounded, at least
    one layer). Raises ``ValueError`` unless ``0 <= start < end <= num_layers``.
    """
    if layers is None:
        start = round(paper[0] * num_layers / PAPER_DEPTH)
        return tuple(range(start, max(start + 1, round(paper[1] * num_layers / PAPER_DEPTH))))
    ok = (isinstance(layers, (tuple, list)) and len(layers) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in layers)
          and 0 <= layers[0] < layers[1] <= num_layers)
    if not ok:
        raise ValueError(f"{name} must be None or (start, end) with 0 <= start < end <= {num_layers} "
                         f"(the language model's layers), got {layers!r}")
    return tuple(range(*layers))


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pai_edits(
    model: PreTrainedModel, prompt: Prompt, alpha: float, gamma: float, layers: tuple[int, int] | None
) -> list[AttentionEdit]:
    """PAI's attention edit: image-token logits ``s -> s + alpha * |s|`` from the answer rows.

    ``alpha >= 0`` (0 = off), ``gamma >= 1`` (1 = no refinement; decides whether the prefill's
    last row is edited, see the module docstring), ``layers`` as ``layer_range``.
    """
    _check(_finite(alpha) and alpha >= 0, "pai_alpha", alpha, "a finite number >= 0")
    _check(_finite(gamma) and gamma >= 1, "pai_gamma", gamma, "a finite number >= 1")
    text = model.config.get_text_config()
    chosen = layer_range(layers, PAI_LAYERS, text.num_hidden_layers, "pai_layers")
    queries = torch.zeros_like(prompt.image_mask)
    if gamma == 1:
        queries[:, -1] = True  # left padding: the last column is every row's answer position
    return [AttentionEdit(prompt.image_mask, "amplify_logits", float(alpha), layers=chosen, queries=queries)]


def pai_refine(logits: torch.Tensor, text_logits: torch.Tensor, gamma: float, beta: float = PAI_BETA) -> torch.Tensor:
    """PAI's logit refinement against the text-only branch (``CFG.py`` lines 29-57), ``[B, V]``.

    With ``s = log_softmax(logits)`` (image branch, attention edited) and ``u =
    log_softmax(text_logits)`` (no image, no edit): ``gamma * (s - u) + u``, then ``-inf`` where
    ``s < log(beta) + max s``. ``gamma == 1`` returns ``s`` unchanged (the code returns before the cut).
    """
    scores = torch.log_softmax(logits.float(), dim=-1)
    if gamma == 1:
        return scores
    text = torch.log_softmax(text_logits.float(), dim=-1)
    cutoff = math.log(beta) + scores.max(dim=-1, keepdim=True).values
    return (gamma * (scores - text) + text).masked_fill(scores < cutoff, -math.inf)


def clearsight_edits(
    model: PreTrainedModel, prompt: Prompt, enhance: float, suppress: float, layers: tuple[int, int] | None
) -> list[AttentionEdit]:
    """ClearSight's edits: from queries after the image, image logits ``x enhance``, system ``x suppress``.

    ``enhance``, ``suppress`` finite and > 0 (1 = off); ``layers`` as ``layer_range``.
    """
    _check(_finite(enhance) and enhance > 0, "clearsight_enhance", enhance, "a finite number > 0")
    _check(_finite(suppress) and suppress > 0, "clearsight_suppress", suppress, "a finite number > 0")
    text = model.config.get_text_config()
    chosen = layer_range(layers, CLEARSIGHT_LAYERS, text.num_hidden_layers, "clearsight_layers")
    image = prompt.image_mask
    positions = torch.arange(image.shape[1], device=image.device)[None]
    first = image.int().argmax(-1, keepdim=True)
    last = image.shape[1] - 1 - image.flip(-1).int().argmax(-1, keepdim=True)
    system = (positions < first) & prompt.attention_mask.bool()
    after = positions > last
    return [AttentionEdit(image, "scale_logits", float(enhance), layers=chosen, queries=after),
            AttentionEdit(system, "scale_logits", float(suppress), layers=chosen, queries=after)]


def pai(model: PreTrainedModel, prompt: Prompt, settings) -> AbstractContextManager:
    """PAI's attention edit from ``settings.pai_alpha``, ``pai_gamma``, ``pai_layers``."""
    return edit_attention(model, pai_edits(model, prompt, settings.pai_alpha, settings.pai_gamma, settings.pai_layers))


def clearsight(model: PreTrainedModel, prompt: Prompt, settings) -> AbstractContextManager:
    """ClearSight's edits from ``settings.clearsight_enhance``, ``clearsight_suppress``, ``clearsight_layers``."""
    return edit_attention(model, clearsight_edits(
        model, prompt, settings.clearsight_enhance, settings.clearsight_suppress, settings.clearsight_layers))


# --- VAR: redistribute the attention sink tokens absorb to the image, in image-centric heads ---------
# Official code: MICV-yonsei/VisAttnSink, src/logic/logic.py (HeadFork, VARProcessor) and
# A_exps/lv1.5_7b.yml (LLaVA-1.5-7B; the paper's InstructBLIP settings are not in the repository).
VAR_P = 0.6  # share of a sink's attention it keeps (yml line 14, "p"); 1 = off
VAR_RHO = 0.5  # a head qualifies when the visual sinks hold <= rho of its image attention (yml line 13)
VAR_SUMM = 0.2  # ... and its image attention is >= summ (yml line 15)


@dataclass(frozen=True)
class SinkEdit(AttentionEdit):
    """VAR at one layer: ``keys`` are that layer's sink tokens (text and image), found during the
    prefill and written into ``keys``/``targets`` in place; ``image [B, L]`` the image tokens."""

    image: torch.Tensor | None = None
    rho: float = VAR_RHO
    summ: float = VAR_SUMM


def _var_redistribute(values, selected, edit, targets):
    """VARProcessor.attn_redist on float32 probabilities ``[b, H, q, Lk]`` (logic.py lines 163-212).

    A (row, head) qualifies when some visual sink is visible, the visual sinks hold <= rho of the
    image attention and the image attention is >= summ (HeadFork, lines 115-145). Then every sink
    (text ones such as BOS too) keeps ``factor`` of its attention, and the (1 - factor) taken goes to
    the non-sink image tokens (``targets``) in proportion to their attention.
    """
    image = torch.nn.functional.pad(edit.image, (0, values.shape[-1] - edit.image.shape[1]))[:, None, None]
    visual = selected & image
    image_mass = values.masked_fill(~image, 0).sum(-1, keepdim=True)
    # HeadFork adds 1e-6 per image token to the denominator (line 129)
    portion = values.masked_fill(~visual, 0).sum(-1, keepdim=True) / (image_mass + 1e-6 * image.sum(-1, keepdim=True))
    chosen = visual.any(-1, keepdim=True) & (portion <= edit.rho) & (image_mass >= edit.summ)
    taken = (1 - edit.factor) * values.masked_fill(~selected, 0).sum(-1, keepdim=True)
    target_mass = values.masked_fill(~targets, 0).sum(-1, keepdim=True)
    share = taken / target_mass.clamp(min=torch.finfo(values.dtype).tiny)
    edited = torch.where(selected, values * edit.factor, torch.where(targets, values * (1 + share), values))
    # Rows whose non-sink image tokens hold no attention are left as they are (the code divides by 0).
    return torch.where(chosen & (target_mass > 0), edited, values)


register_mode("var", Mode("probs", 1.0, lambda f: 0 <= f <= 1, "in [0, 1]", _var_redistribute, needs_targets=True))


def after_image(prompt: Prompt) -> torch.Tensor:
    """``[B, L]`` True at prompt positions after each row's last image token (VAR's query rows)."""
    last = prompt.image_mask.long().cumsum(-1) == prompt.image_mask.sum(-1, keepdim=True)
    return last & ~prompt.image_mask


@contextmanager
def var(model, prompt: Prompt, *, p: float = VAR_P, rho: float = VAR_RHO, summ: float = VAR_SUMM,
        tau: float = sinks.TAU) -> Iterator[None]:
    """VAR on every forward inside the block; sinks are found in the prefill, layer by layer.

    What the official code does for its *first* question, for every question: sinks are looked
    for before layers 2 .. L-1 on the hidden states of the *edited* forward (DimProspector runs
    inside it); prompt rows after the image and every generated row are edited; the last layer is
    edited too (its ``except_last_layer`` option never takes effect: ``VARProcessor`` shadows it
    with its own class attribute ``False``, line 148). ``p = 1`` leaves the model exactly as it is.

    Two departures from the released code (VisAttnSink at 98e62d6), both deliberate:

    * It never resets its state between questions. ``StashEngine.clear`` (``src/stash.py`` lines
      87-93) reassigns the class-level dicts of ``DefaultConfig`` (lines 24-29), which are the very
      dicts already mutated, so ``output_token_count`` keeps counting. From the second question on
      it is >= 0: the sink search, gated on a count < 0 (``src/model/llava.py`` line 314), never
      runs again and question 1's sinks are reused, and the filter that keeps prompt rows after
      the image (``src/logic/logic.py`` line 179) is off, so every prompt row is edited. This
      function implements the intended behaviour, per question, for every batch.
    * Sink dimensions are read from each row's BOS at each layer (``sinks.massive_dimensions``)
      rather than taken from the fixed table ``DIM_SINK`` (LLaMA-2-7B: 2533 and 1415,
      ``src/logic/constants.py`` line 9), so no table of models is needed.
    """
    _check(_finite(p) and 0 <= p <= 1, "var_p", p, "in [0, 1]")
    _check(_finite(rho) and 0 <= rho <= 1, "var_rho", rho, "in [0, 1]")
    _check(_finite(summ) and 0 <= summ <= 1, "var_summ", summ, "in [0, 1]")
    sinks.check_tau(tau)
    device = model.get_input_embeddings().weight.device
    layers = sinks.sink_layers(model)
    image = prompt.image_mask.to(device)
    edits = {
        layer: SinkEdit(keys=torch.zeros_like(image), mode="var", factor=p, layers=(layer,),
                        queries=after_image(prompt).to(device), targets=torch.zeros_like(image), image=image,
                        rho=rho, summ=summ)
        for layer in layers
    }
    bos = sinks.bos_positions(prompt)
    valid = prompt.attention_mask.bool().to(device)

    def find(layer: int, hidden: torch.Tensor) -> None:
        if hidden.shape[1] != image.shape[1]:
            return  # a decode step: the prefill's sinks stay
        phi = sinks.activation(hidden[: image.shape[0]])
        found = sinks.massive_tokens(phi, sinks.massive_dimensions(phi, bos, tau), tau) & valid
        edits[layer].keys.copy_(found)
        edits[layer].targets.copy_(image & ~found)

    # The masks are filled in place: edit_attention keeps tensors already on the model's device.
    with sinks.layer_inputs(model, layers, find), edit_attention(model, list(edits.values())):
        yield


def var_method(model: PreTrainedModel, prompt: Prompt, settings) -> AbstractContextManager:
    """VAR from ``settings.var_p``, ``var_rho``, ``var_summ``, ``var_tau``."""
    return var(model, prompt, p=settings.var_p, rho=settings.var_rho, summ=settings.var_summ, tau=settings.var_tau)


def only_method(model: PreTrainedModel, prompt: Prompt, settings) -> AbstractContextManager:
    """ONLY's side branch at ``settings.only_layer``; yields an ``OnlyBranch`` (contrast with ``only_scores``)."""
    return only(model, prompt, layer=settings.only_layer)


INTERVENTIONS: dict[str, Intervention] = {"pai": pai, "clearsight": clearsight, "var": var_method, "only": only_method}
