"""Batched decoding with AvisC, its controls and its baselines (VCD, M3ID, greedy, sampling).

Contrastive methods run two branches over the same prompt: the original one and a second one
(:mod:`.branches`: AvisC keeps the blind image tokens, VCD noises the image, M3ID drops it, the
controls keep a random same-size set or nothing). Each branch has its own KV cache, but after the
two prefills the caches are joined along the batch, so every later step is ONE forward of 2B
rows. The image goes through the vision tower once and both branches share it (VCD's noised image
is the one extra pass). Every generated token is appended to both branches. The contrast is
computed in float32:

* AvisC, VCD, the controls, your own branch: ``z = (1 + alpha) * l - alpha * l_other``
* M3ID: ``z = lc + (1 - g_t) / g_t * (lc - lu)`` on log-softmaxes, ``g_t = exp(-gamma_decay * t)``

then tokens with ``p(v) < beta * max p`` under the original branch are removed (``-inf``), EOS is
banned for the first ``min_new_tokens`` steps, and the next token is the argmax (``do_sample=False``)
or a sample after temperature / top-k / top-p (``do_sample=True``). That last choice is the same
for every method, one-pass ones included; only ``greedy`` (argmax) and ``sample`` (sampling) fix
it, and asking them for the other raises ``ValueError``. ``DecodeSettings.decoding`` names the
choice made, and the benchmark runner records it.

Every option is a field of :class:`DecodeSettings`, with its help text; ``decode``'s keywords, the
benchmark runner's options and ``avisc-eval run``'s flags are derived from those fields.
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any
from collections.abc import Callable, Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import Field, dataclass, field, fields

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.utils import ModelOutput

from .models import compat
from .hooks.capture import image_rows, record_last_query_attention
from .methods.base import BRANCHES, DIFFUSION_STEPS, Branch, BranchContext, BranchInputs, image_branch
from .models.inputs import Prompt, embed_prompt
from .methods.interventions import INTERVENTIONS, pai_refine
from .methods.only import only_scores

SINGLE = ("greedy", "sample")
CONTRASTIVE = tuple(BRANCHES)
# Methods that act inside the original branch's forwards (:mod:`.interventions`): PAI, ClearSight
# and VAR edit its attention (PAI also contrasts with a text-only branch unless ``pai_gamma`` is 1);
# ONLY reads a side branch from its first and last layers and contrasts with it.
INTERVENING = tuple(INTERVENTIONS)
METHODS = SINGLE + CONTRASTIVE + INTERVENING
# One line per method, in METHODS order: the registry every list of methods shown to a user is
# generated from (DecodeSettings.method's help, hence ``avisc-eval run --method``; custom_generate's card).
METHOD_SUMMARIES = {
    "greedy": "the argmax of the model's logits",
    "sample": "plain multinomial sampling (the AvisC paper's 'base')",
    "avisc": "AvisC: contrast with a branch that keeps only the blind image tokens",
    "vcd": "VCD: contrast with a branch whose image is diffusion-noised",
    "m3id": "M3ID as AvisC re-implemented it: contrast with a branch without the image",
    "random_mask": "control: AvisC with a random set of image tokens kept instead of the blind ones",
    "zero_image": "control: AvisC with every image token zeroed",
    "pai": "PAI: amplified image attention, refined against a text-only branch",
    "clearsight": "ClearSight (VAF): image attention scaled up, system-prompt attention down, in middle layers",
    "var": "VAR: attention absorbed by sink tokens handed to the image, in image-centric heads",
    "only": "ONLY: contrast with a side branch from one layer's text-enhanced attention",
}
if tuple(METHOD_SUMMARIES) != METHODS:
    raise RuntimeError(f"METHOD_SUMMARIES {tuple(METHOD_SUMMARIES)} does not list METHODS {METHODS} in order")
SAMPLING_ONLY, ARGMAX_ONLY = ("sample",), ("greedy",)  # methods whose name fixes how the token is chosen


def method_lines(bullet: str = "- ") -> str:
    """Every method name with its summary, one per line (``bullet`` before each)."""
    return "\n".join(f"{bullet}{name}: {summary}" for name, summary in METHOD_SUMMARIES.items())


def method_help() -> str:
    """``DecodeSettings.method``'s help text: every method of the registry, then branch functions."""
    names = "; ".join(f"{name} ({summary})" for name, summary in METHOD_SUMMARIES.items())
    return (f"{names}; in Python also your own branch, a function (features [B, N, D], attention [B, layers, N]) "
            "-> features")
# The official code's default (``cd_alpha=1.0``; its VCD branch hard-codes 1.0). The paper reports
# alpha = 2.5 for LLaVA-1.5 and 3.0 for InstructBLIP: pass those explicitly to reproduce it.
DEFAULT_ALPHA = 1.0


def option(default, help: str, methods: tuple[str, ...] | None = None) -> Field:
    """A ``DecodeSettings`` field: its default, the help text the CLI shows, and the ``methods``
    that read it (None: every method)."""
    return field(default=default, metadata={"help": help, "methods": methods})


CONTRAST_ALPHA = ("avisc", "vcd", "random_mask", "zero_image")  # z = (1 + alpha) l - alpha l_other
BLIND = ("avisc", "random_mask")  # read the blind tokens
TWO_LOGITS = CONTRASTIVE + ("pai", "only")  # a second set of logits, hence the plausibility cut


@dataclass(frozen=True)
class DecodeSettings:
    """Every decoding option, validated. The one place options are declared."""

    method: str | Callable = field(metadata={"help": method_help()})
    alpha: float | None = option(None, (
        "contrast strength of the two-branch methods except M3ID (default 1.0, the official code's; the paper "
        "used 2.5 for LLaVA-1.5, 3.0 for InstructBLIP)"), CONTRAST_ALPHA)
    beta: float = option(0.1, "plausibility cut in (0, 1]: tokens with p < beta * max p (original branch) removed",
                         TWO_LOGITS)
    lam: float = option(1.0, "blind-token threshold: attention >= mean + lam * std", BLIND)
    layer_gamma: float = option(0.5, "share of image attention of the layers that choose blind tokens, in (0, 1]",
                                BLIND)
    do_sample: bool | None = option(None, (
        "sample the next token instead of taking the argmax, for every method (None: sample only for 'sample'; "
        "greedy cannot sample, sample cannot take the argmax)"))
    temperature: float = option(1.0, "sampling temperature > 0")
    top_p: float = option(1.0, "nucleus sampling mass in (0, 1]")
    top_k: int | None = option(None, "sample among the k most likely tokens (None or 0: off)")
    max_new_tokens: int = option(64, "most tokens generated")
    min_new_tokens: int = option(0, "EOS banned until this many tokens (InstructBLIP's official min_length=1)")
    seed: int | None = option(None, "seeds sampling, VCD's noise and random_mask (None: torch's global RNG)")
    noise_step: int = option(500, "VCD's diffusion step, 0 to 999", ("vcd",))
    gamma_decay: float = option(0.02, "M3ID's decay of the image-conditioning weight", ("m3id",))
    pai_alpha: float = option(0.2, (
        "PAI: image-token attention logits s -> s + pai_alpha * |s|, >= 0 (0: off)"), ("pai",))
    pai_gamma: float = option(1.1, "PAI: refinement against a text-only branch, >= 1 (1: off, one pass)", ("pai",))
    pai_layers: tuple[int, int] | None = option(None, (
        "PAI: layers start:end, half-open (None: the paper's 2:32 of 32, scaled to the model's depth)"), ("pai",))
    clearsight_enhance: float = option(1.15, (
        "ClearSight: image-token attention logits times this, > 0 (1: off)"), ("clearsight",))
    clearsight_suppress: float = option(0.95, (
        "ClearSight: system-prompt attention logits times this, > 0 (1: off)"), ("clearsight",))
    clearsight_layers: tuple[int, int] | None = option(None, (
        "ClearSight: layers start:end, half-open (None: the paper's 9:15 of 32, scaled to the model's depth)"),
        ("clearsight",))
    var_p: float = option(0.6, "VAR: share of a sink token's attention it keeps, in [0, 1] (1: off)", ("var",))
    var_rho: float = option(0.5, (
        "VAR: a head is image-centric when visual sinks hold <= var_rho of its image attention"), ("var",))
    var_summ: float = option(0.2, "VAR: ... and its attention on the image is >= var_summ", ("var",))
    var_tau: float = option(20.0, "VAR: massive-activation threshold that finds sink dimensions and tokens", ("var",))
    only_layer: int = option(0, "ONLY: the layer whose edited attention forms its side branch", ("only",))
    only_alpha_pos: float = option(3.0, "ONLY: weight added for the side branch when the two agree, >= 0", ("only",))
    only_alpha_neg: float = option(1.0, "ONLY: contrast strength when they disagree, >= 0", ("only",))
    only_gamma: float = option(0.2, "ONLY: L1 distance of the two distributions below which they agree", ("only",))
    warpers: LogitsProcessorList = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.method, str) and self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS} or a branch function")
        if not isinstance(self.method, str) and not callable(self.method):
            raise ValueError(f"method must be a name or a branch function, got {self.method!r}")
        self._resolve_do_sample()
        if self.alpha is None:
            object.__setattr__(self, "alpha", DEFAULT_ALPHA if self.contrastive else 0.0)
        _check(self.alpha >= 0 and math.isfinite(self.alpha), "alpha", self.alpha, "a finite number >= 0")
        _check(0 < self.beta <= 1, "beta", self.beta, "in (0, 1]")
        _check(math.isfinite(self.lam), "lam", self.lam, "finite")
        _check(0 < self.layer_gamma <= 1, "layer_gamma", self.layer_gamma, "in (0, 1]")
        _check(self.temperature > 0 and math.isfinite(self.temperature), "temperature", self.temperature, "> 0")
        _check(0 < self.top_p <= 1, "top_p", self.top_p, "in (0, 1]")
        _check(self.top_k is None or (_is_int(self.top_k) and self.top_k >= 0), "top_k", self.top_k,
               "None or an int >= 0")
        _check(_is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens",
               self.max_new_tokens, "an int >= 1")
        _check(_is_int(self.min_new_tokens) and self.min_new_tokens >= 0, "min_new_tokens",
               self.min_new_tokens, "an int >= 0")
        _check(self.seed is None or _is_int(self.seed), "seed", self.seed, "None or an int")
        _check(_is_int(self.noise_step) and 0 <= self.noise_step < DIFFUSION_STEPS, "noise_step",
               self.noise_step, f"an int in [0, {DIFFUSION_STEPS - 1}]")
        _check(self.gamma_decay >= 0 and math.isfinite(self.gamma_decay), "gamma_decay", self.gamma_decay, ">= 0")
        object.__setattr__(self, "warpers", self._warpers())

    def _resolve_do_sample(self) -> None:
        """``do_sample=None`` becomes the method's own choice; a choice the method cannot make raises."""
        if self.do_sample is None:
            object.__setattr__(self, "do_sample", self.method in SAMPLING_ONLY)
        _check(isinstance(self.do_sample, bool), "do_sample", self.do_sample, "True, False or None")
        if self.method in ARGMAX_ONLY and self.do_sample:
            raise ValueError("method='greedy' with do_sample=True: greedy takes the argmax; use method='sample' "
                             "for plain sampling")
        if self.method in SAMPLING_ONLY and not self.do_sample:
            raise ValueError("method='sample' with do_sample=False: sample draws the token; use method='greedy' "
                             "for the argmax")

    @property
    def decoding(self) -> str:
        """How the next token is chosen: ``"sampling"`` or ``"argmax"``."""
        return "sampling" if self.do_sample else "argmax"

    def used_options(self) -> dict:
        """The options this method reads, ``{name: value}`` (all of them for a branch function)."""
        return {f.name: getattr(self, f.name) for f in decode_options()
                if not isinstance(self.method, str) or f.metadata["methods"] is None
                or self.method in f.metadata["methods"]}

    @property
    def contrastive(self) -> bool:
        """Two sets of logits: a second branch (AvisC and the like, your own, PAI refining) or ONLY's side branch."""
        return self.branch is not None or self.method == "only"

    @property
    def branch(self) -> Branch | None:
        """The second branch (None for one-pass methods)."""
        if not isinstance(self.method, str):
            return image_branch(self.method)
        if self.method == "pai":
            return BRANCHES["m3id"] if self.pai_gamma != 1 else None
        return BRANCHES.get(self.method)

    @property
    def sampling(self) -> bool:
        """Whether the next token is drawn (``do_sample``, resolved), for every method alike."""
        return self.do_sample

    def _warpers(self) -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k:
            warpers.append(TopKLogitsWarper(int(self.top_k)))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(float(self.top_p)))
        return warpers


def decode_options() -> list[Field]:
    """The ``DecodeSettings`` fields a caller sets besides ``method``, in declaration order."""
    return [f for f in fields(DecodeSettings) if f.init and f.name != "method"]


def settings_doc() -> str:
    """The methods and every option with its default and help, as ``help(DecodeSettings)`` shows them."""
    options = "\n".join(f"    {f.name} = {f.default!r}: {f.metadata['help']}" for f in decode_options())
    return f"\n\nMethods:\n\n{method_lines('    ')}\n\nOptions:\n\n{options}\n"


DecodeSettings.__doc__ += settings_doc()


def option_type(option: Field) -> Callable[[str], object]:
    """How to read a field's value from text (``float | None`` -> ``float``; layer ranges: ``layer_span``)."""
    hint = typing.get_type_hints(DecodeSettings)[option.name]
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return layer_span if typing.get_origin(kinds[0]) is tuple else kinds[0]


def layer_span(text: str) -> tuple[int, int]:
    """``"2:32"`` -> ``(2, 32)``, a half-open range of layers."""
    start, colon, end = text.partition(":")
    try:
        return int(start), int(end)
    except ValueError:
        raise ValueError(f"a layer range is start:end, e.g. 2:32, got {text!r}") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


# ---------------------------------------------------------------------------------- next-token rule


def contrast_logits(original: torch.Tensor, other: torch.Tensor, alpha: float) -> torch.Tensor:
    """AvisC / VCD contrast ``(1 + alpha) * original - alpha * other``, ``[B, V]``."""
    return (1 + alpha) * original - alpha * other


def m3id_logits(conditioned: torch.Tensor, unconditioned: torch.Tensor, step: int, decay: float) -> torch.Tensor:
    """M3ID as in the AvisC code: ``lc + (1 - g) / g * (lc - lu)`` on log-softmaxes, ``g = exp(-decay * step)``.

    ``step`` counts generated tokens from 1. ``[B, V]`` in, ``[B, V]`` out.

    This is AvisC's re-implementation of M3ID (Favero et al., CVPR 2024), whose own code is not
    public, and the baseline of AvisC's tables. It differs from the original M3ID in its gating:
    the original applies the correction ``lc - lu`` only when the conditioned model is uncertain
    (its largest log-probability below a threshold) and keeps ``lc`` otherwise; AvisC applies it
    at every step and instead removes implausible tokens with VCD's ``beta`` cut
    (:func:`plausibility_cut`), to use one cut for every method. The decay ``0.02`` is AvisC's
    hard-coded value. With it the weight ``(1 - g) / g`` is 0.02 at the first token and 2.6 at
    the 64th, so on one-word answers this M3ID is close to the original branch plus the cut.
    """
    gamma = math.exp(-decay * step)
    lc, lu = conditioned.log_softmax(-1), unconditioned.log_softmax(-1)
    return lc + (1 - gamma) / gamma * (lc - lu)


def plausibility_cut(scores: torch.Tensor, original: torch.Tensor, beta: float) -> torch.Tensor:
    """``scores`` with ``-inf`` wherever the original branch gives ``p(v) < beta * max p``."""
    cutoff = math.log(beta) + original.max(-1, keepdim=True).values
    return scores.masked_fill(original < cutoff, float("-inf"))


def next_token_scores(logits: torch.Tensor, batch: int, step: int, settings: DecodeSettings) -> torch.Tensor:
    """Scores ``[B, V]`` to pick the next token from, given last-position logits of all branches.

    ``logits [branches * B, V]``: the original branch's rows first. A contrast branch whose row
    holds NaN is replaced by the original row (as the official code does), which cancels the contrast.
    """
    logits = logits.float()
    original = logits[:batch]
    if not settings.contrastive:
        return original
    other = logits[batch:]
    other = torch.where(other.isnan().any(-1, keepdim=True), original, other)
    if settings.method == "pai":
        return pai_refine(original, other, settings.pai_gamma, settings.beta)  # PAI's code: beta 0.1
    if settings.method == "only":
        return only_scores(original, other, alpha_pos=settings.only_alpha_pos, alpha_neg=settings.only_alpha_neg,
                           gamma=settings.only_gamma, beta=settings.beta)
    if settings.method == "m3id":
        scores = m3id_logits(original, other, step, settings.gamma_decay)
    else:
        scores = contrast_logits(original, other, settings.alpha)
    return plausibility_cut(scores, original, settings.beta)


def ban_tokens(scores: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """``scores [B, V]`` with ``token_ids`` set to ``-inf``, as HF's ``MinNewTokensLengthLogitsProcessor``.

    Applied after the plausibility cut, as the official code runs the model's logits processors
    after it. A row that the cut left with only banned tokens keeps its scores: there is nothing
    else to choose (HF's sampling would fail on it).
    """
    banned = scores.index_fill(-1, token_ids, float("-inf"))
    empty = banned.isneginf().all(-1, keepdim=True)
    return torch.where(empty, scores, banned)


def choose_tokens(
    scores: torch.Tensor, settings: DecodeSettings, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next tokens ``[B]`` and the scores ``[B, V]`` they were chosen from.

    Argmax of ``scores``, or a multinomial sample after temperature / top-k / top-p (the warped
    scores are returned then).
    """
    if not settings.sampling:
        return scores.argmax(-1), scores
    warped = settings.warpers(None, scores)
    return torch.multinomial(warped.softmax(-1), 1, generator=generator).squeeze(-1), warped


# ---------------------------------------------------------------------------------- the loop


@dataclass
class DecodeOutput(ModelOutput):
    """What ``decode(..., return_dict=True)`` returns, in the spirit of transformers' generate outputs.

    ``sequences [B, T]``: the new token ids (what ``decode`` returns by default). Per step t, in
    tuples of length T: ``scores[t] [B, V]`` the final scores the token was chosen from (after the
    contrast, the cut, the EOS ban and, when sampling, the warpers); ``logits[t] [B, V]`` the original
    branch's raw logits and ``branch_logits[t] [B, V]`` the second branch's (None for one-branch
    methods). ``kept [B, N]``: image tokens the second branch left untouched (AvisC: the blind ones;
    the controls: the random set, or none), ``layers [B, layers]``: the layers whose attention chose
    them (None where no attention was used). Logits and scores are float32.
    """

    sequences: torch.LongTensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    branch_logits: tuple[torch.Tensor, ...] | None = None
    kept: torch.Tensor | None = None
    layers: torch.Tensor | None = None


@torch.no_grad()
def decode(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    *,
    method: str | Callable,
    return_dict: bool = False,
    **options,
) -> torch.LongTensor | DecodeOutput:
    """Generate answers; returns the new token ids ``[B, T]``, padded after each row's EOS.

    ``inputs``: the processor's output (left-padded for B > 1). ``method``: "greedy", "sample",
    "avisc", "vcd", "m3id", the controls "random_mask" and "zero_image", the attention methods
    "pai", "clearsight", "var" and "only" (:mod:`.interventions`), or your own branch function
    (see :mod:`.branches`). ``options``: any field of :class:`DecodeSettings` (``alpha``, ``beta``,
    ``lam``, ``layer_gamma``, ``do_sample``, ``temperature``, ``top_p``, ``top_k``,
    ``max_new_tokens``, ``min_new_tokens``, ``seed``, ``noise_step``, ``gamma_decay`` and each
    attention method's own; their help texts are there). Options a method does not use are ignored
    (``DecodeSettings.used_options`` lists the others); unknown keywords or invalid values raise
    ``ValueError``. Blind tokens come from the original branch's prefill, as in the official code.

    ``return_dict=True`` returns a :class:`DecodeOutput` with the per-step scores and logits of both
    branches and the kept image tokens.
    """
    settings = decode_settings(method, options)
    prompt = embed_prompt(model, inputs)
    device = prompt.input_ids.device
    generator = None if settings.seed is None else torch.Generator(device=device).manual_seed(settings.seed)
    with ExitStack() as interventions:  # held from the original prefill to the last step
        logits, cache, mask, second, forward = prefill(model, inputs, prompt, settings, generator, interventions)
        trace = Trace(return_dict, second)
        sequences = _generate(model, forward, logits, cache, mask, settings, generator, trace)
    return trace.output(sequences) if return_dict else sequences


def decode_settings(method, options: Mapping) -> DecodeSettings:
    """``DecodeSettings(method=method, **options)``, with unknown options named in a ``ValueError``."""
    unknown = sorted(set(options) - {f.name for f in decode_options()})
    if unknown:
        raise ValueError(f"unknown keyword argument(s) for decode: {', '.join(unknown)}")
    return DecodeSettings(method=method, **options)


decode.__signature__ = inspect.signature(decode).replace(parameters=[
    *list(inspect.signature(decode).parameters.values())[:4],
    *(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in decode_options()),
])


def prefill(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    prompt: Prompt,
    settings: DecodeSettings,
    generator: torch.Generator | None,
    interventions: ExitStack,
) -> tuple[torch.Tensor, DynamicCache, torch.Tensor, BranchInputs | None, Forward]:
    """Prefill the original branch and the method's second branch; join them along the batch.

    Returns ``(last-position logits [2B or B, V], cache, attention_mask [rows, L], the second
    branch's inputs or None, the forward to use for later steps)``, original rows first. A second
    branch that reads the original prefill's attention is built after it; any other is prefilled
    first, so that an intervention (entered on ``interventions``, held by the caller until the
    last step) acts on the original branch only. ONLY's side-branch logits follow the original
    rows' logits after every forward.
    """
    branch = settings.branch
    context = BranchContext(model, inputs, prompt, None, settings, generator)
    early = _branch_prefill(model, branch, context) if branch is not None and not branch.needs_attention else None
    side = interventions.enter_context(INTERVENTIONS[settings.method](model, prompt, settings)) \
        if settings.method in INTERVENTIONS else None
    forward = Forward(model, side if settings.method == "only" else None)
    recording = record_last_query_attention(model) if branch is not None and branch.needs_attention else nullcontext()
    with recording as rows:
        logits, cache = forward(prompt.embeds, prompt.attention_mask)
    if branch is None:
        return logits, cache, prompt.attention_mask, None, forward
    if early is None:
        context = BranchContext(model, inputs, prompt, image_rows(rows, prompt.image_mask), settings, generator)
    second, other_logits, other_cache = early or _branch_prefill(model, branch, context)
    return (torch.cat([logits, other_logits]), compat.concat_caches(cache, other_cache, model.config),
            torch.cat([prompt.attention_mask, second.attention_mask]), second, forward)


@dataclass(frozen=True)
class Forward:
    """One language-model forward: last-position logits ``[rows, V]`` and the cache; with ONLY's
    ``side`` branch, its logits ``[B, V]`` appended as extra rows."""

    model: PreTrainedModel
    side: Any = None

    def __call__(self, embeds: torch.Tensor, mask: torch.Tensor, cache: DynamicCache | None = None):
        logits, cache = compat.language_model_forward(self.model, embeds, mask, cache)
        return (logits if self.side is None else torch.cat([logits, self.side.logits.to(logits.dtype)])), cache


def _branch_prefill(
    model: PreTrainedModel, branch: Branch, context: BranchContext
) -> tuple[BranchInputs, torch.Tensor, DynamicCache]:
    """Build the second branch and prefill it: ``(its inputs, logits [B, V], cache)``."""
    second = branch.build(context)
    logits, cache = compat.language_model_forward(model, second.embeds, second.attention_mask)
    return second, logits, cache


class Trace:
    """Collects a decode's per-step scores and logits when ``return_dict`` asks for them."""

    def __init__(self, enabled: bool, second: BranchInputs | None):
        self.enabled, self.second = enabled, second
        self.scores, self.logits, self.branch_logits = [], [], []

    def step(self, logits: torch.Tensor, scores: torch.Tensor, batch: int) -> None:
        """Record one step: ``logits [branches * B, V]`` (raw, original rows first), ``scores [B, V]``."""
        if self.enabled:
            self.scores.append(scores.float())
            self.logits.append(logits[:batch].float())
            if logits.shape[0] > batch:
                self.branch_logits.append(logits[batch:].float())

    def output(self, sequences: torch.LongTensor) -> DecodeOutput:
        second = self.second
        return DecodeOutput(
            sequences=sequences,
            scores=tuple(self.scores),
            logits=tuple(self.logits),
            branch_logits=tuple(self.branch_logits) or None,
            kept=None if second is None else second.kept,
            layers=None if second is None else second.layers,
        )


def _generate(
    model: PreTrainedModel,
    forward: Forward,
    logits: torch.Tensor,
    cache: DynamicCache,
    mask: torch.Tensor,
    settings: DecodeSettings,
    generator: torch.Generator | None,
    trace: Trace,
) -> torch.LongTensor:
    """The decode loop after the prefill(s): one forward of ``branches * B`` rows per token."""
    batch = logits.shape[0] // (2 if settings.contrastive else 1)
    rows = mask.shape[0]
    eos, pad = special_token_ids(model)
    eos = torch.tensor(eos, dtype=torch.long, device=logits.device)
    embed = model.get_input_embeddings()
    done = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    tokens = []
    for step in range(1, settings.max_new_tokens + 1):
        scores = next_token_scores(logits, batch, step, settings)
        if step <= settings.min_new_tokens:
            scores = ban_tokens(scores, eos)
        token, chosen_from = choose_tokens(scores, settings, generator)
        trace.step(logits, chosen_from, batch)
        token = token.masked_fill(done, pad)
        tokens.append(token)
        done |= torch.isin(token, eos)
        if bool(done.all()) or step == settings.max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        step_embeds = embed(token.repeat(rows // batch))[:, None]
        logits, cache = forward(step_embeds, mask, cache)
    return torch.stack(tokens, dim=1)


def special_token_ids(model: PreTrainedModel) -> tuple[list[int], int]:
    """``(eos ids, pad id)`` from the generation config, else the text config; pad falls back to EOS."""
    text = model.config.get_text_config()
    sources = (model.generation_config, model.config, text)
    eos = next((s.eos_token_id for s in sources if getattr(s, "eos_token_id", None) is not None), [])
    eos = [eos] if isinstance(eos, int) else list(eos)
    pad = next((s.pad_token_id for s in sources if getattr(s, "pad_token_id", None) is not None), None)
    return eos, pad if pad is not None else (eos[0] if eos else 0)
