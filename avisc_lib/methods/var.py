"""VAR (Kang et al., ICLR 2025, "See What You Are Told: Visual Attention Sink in Large Multimodal
Models"): the attention sink tokens absorb is handed to the image, in image-centric heads.

Official code: ``MICV-yonsei/VisAttnSink`` at 98e62d6, ``src/logic/logic.py`` (HeadFork,
VARProcessor) and ``A_exps/lv1.5_7b.yml`` (LLaVA-1.5-7B; the paper's InstructBLIP settings are not
in the repository). Sinks are found with :mod:`avisc_lib.tokens.sinks`. Its official POPE evaluation:
``A_exps/lv1.5_7b.yml`` lines 9 (``vicuna_v1``), 12-15 (tau, rho, p, summ), 17 (128 tokens);
``src/inference.py`` lines 99-110 (the question as it is), 132 (``do_sample=False``);
``src/eval/eval_and_save_pope.py`` lines 40-47 (POPE's rule).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..hooks.edit import AttentionEdit, Mode, edit_attention, redistribute, register_mode
from ..hooks.layers import layer_inputs
from ..models.inputs import Prompt
from ..tokens import sinks
from .base import POSITIVE, UNIT, Method, Option
from .registry import register

P = Option("var_p", 0.6, "VAR: share of a sink token's attention it keeps (1: off)", UNIT)  # yml line 14, "p"
RHO_HELP = "VAR: a head is image-centric when visual sinks hold <= var_rho of its image attention"
RHO = Option("var_rho", 0.5, RHO_HELP, UNIT)  # yml line 13
SUMM = Option("var_summ", 0.2, "VAR: ... and its attention on the image is >= var_summ", UNIT)  # yml line 15
TAU = Option("var_tau", sinks.TAU, "VAR: massive-activation threshold that finds sink dimensions and tokens", POSITIVE)


@dataclass(frozen=True)
class SinkEdit(AttentionEdit):
    """VAR at one layer: ``keys`` are that layer's sink tokens (text and image), found during the
    prefill and written into ``keys``/``targets`` in place; ``image [B, L]`` the image tokens."""

    image: torch.Tensor | None = None
    rho: float = RHO.default
    summ: float = SUMM.default


def head_gated_redistribute(values, selected, edit, targets):
    """VARProcessor.attn_redist on float32 probabilities ``[b, H, q, Lk]`` (logic.py lines 163-212).

    A (row, head) qualifies when some visual sink is visible, the visual sinks hold <= rho of the
    image attention and the image attention is >= summ (HeadFork, lines 115-145). Then every sink
    (text ones such as BOS too) keeps ``factor`` of its attention, and the (1 - factor) taken goes to
    the non-sink image tokens (``targets``) in proportion to their attention; rows whose targets
    hold no attention are left as they are (the code divides by 0).
    """
    image = torch.nn.functional.pad(edit.image, (0, values.shape[-1] - edit.image.shape[1]))[:, None, None]
    visual = selected & image
    image_mass = values.masked_fill(~image, 0).sum(-1, keepdim=True)
    # HeadFork adds 1e-6 per image token to the denominator (line 129)
    portion = values.masked_fill(~visual, 0).sum(-1, keepdim=True) / (image_mass + 1e-6 * image.sum(-1, keepdim=True))
    chosen = visual.any(-1, keepdim=True) & (portion <= edit.rho) & (image_mass >= edit.summ)
    return torch.where(chosen, redistribute(values, selected, edit.factor, targets), values)


register_mode(
    "var", Mode("probs", 1.0, lambda f: 0 <= f <= 1, "in [0, 1]", head_gated_redistribute, needs_targets=True)
)


def after_image(prompt: Prompt) -> torch.Tensor:
    """``[B, L]`` True at prompt positions after each row's last image token (VAR's query rows)."""
    last = prompt.image_mask.long().cumsum(-1) == prompt.image_mask.sum(-1, keepdim=True)
    return last & ~prompt.image_mask


@contextmanager
def var(
    model,
    prompt: Prompt,
    *,
    p: float = P.default,
    rho: float = RHO.default,
    summ: float = SUMM.default,
    tau: float = TAU.default,
) -> Iterator[None]:
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
    for option, value in ((P, p), (RHO, rho), (SUMM, summ)):
        option.validate(value)
    sinks.check_tau(tau)
    device = model.get_input_embeddings().weight.device
    layers = sinks.sink_layers(model)
    image = prompt.image_mask.to(device)
    edits = {
        layer: SinkEdit(
            keys=torch.zeros_like(image),
            mode="var",
            factor=p,
            layers=(layer,),
            queries=after_image(prompt).to(device),
            targets=torch.zeros_like(image),
            image=image,
            rho=rho,
            summ=summ,
        )
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
    with layer_inputs(model, layers, find), edit_attention(model, list(edits.values())):
        yield


def var_method(model: PreTrainedModel, prompt: Prompt, settings) -> AbstractContextManager:
    """VAR from ``settings.var_p``, ``var_rho``, ``var_summ``, ``var_tau``."""
    return var(model, prompt, p=settings.var_p, rho=settings.var_rho, summ=settings.var_summ, tau=settings.var_tau)


VAR = register(
    Method(
        "var",
        "VAR: attention absorbed by sink tokens handed to the image, in image-centric heads",
        (P, RHO, SUMM, TAU),
        intervention=var_method,
        official={
            ("pope", "llava"): dict(
                prompt_style="vicuna_v1",
                parser="official",
                decode={
                    "do_sample": False,
                    "max_new_tokens": 128,
                    "var_p": 0.6,
                    "var_rho": 0.5,
                    "var_summ": 0.2,
                    "var_tau": 20.0,
                },
            )
        },
        no_official="VisAttnSink's repository scores POPE only (src/eval/eval_and_save_pope.py), for LLaVA-1.5 "
        "(A_exps/lv1.5_7b.yml)",
    )
)
