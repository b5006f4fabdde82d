"""Batched decoding with any registered method (:mod:`avisc_lib.methods`): the loop.

A method adds to the original forward a second branch, an attention intervention, or both
(:class:`avisc_lib.methods.Method`). A second branch has its own KV cache, but after the two
prefills the caches are joined along the batch, so every later step is ONE forward of 2B rows.
The image goes through the vision tower once and both branches share it (VCD's noised image is
the one extra pass). Every generated token is appended to both branches. An intervention is held
around the original branch's prefill and every step; it acts on the original rows only.

Per step, the method's score rule turns the last-position logits (float32) into scores ``[B, V]``
(AvisC: ``(1 + alpha) * l - alpha * l_other``, then the plausibility cut), EOS is banned for the
first ``min_new_tokens`` steps, and the next token is the argmax or a sample
(:mod:`avisc_lib.settings`, :mod:`avisc_lib.scores`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.utils import ModelOutput

from . import methods
from .hooks.capture import image_rows, record_last_query_attention
from .methods.base import Branch, BranchContext, BranchInputs
from .models import compat
from .models.inputs import Prompt, embed_prompt
from .scores import ban_tokens, choose_tokens
from .settings import DecodeSettings, decode_options

METHODS = methods.METHODS  # every registered method's name (a live view)


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
    return settings.record.scores(original, other, step, settings)


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
    compile: bool = False,
    **options,
) -> torch.LongTensor | DecodeOutput:
    """Generate answers; returns the new token ids ``[B, T]``, padded after each row's EOS.

    ``inputs``: the processor's output (left-padded for B > 1). ``method``: a registered method's
    name (:data:`METHODS`; ``help(DecodeSettings)`` lists them) or your own branch function
    (:func:`avisc_lib.methods.image_branch`). ``options``: any option of :class:`DecodeSettings`
    (its help text says what each does). Options a method does not use are ignored
    (``DecodeSettings.used_options`` lists the others); unknown keywords or invalid values raise
    ``ValueError``. Blind tokens come from the original branch's prefill, as in the official code.

    ``return_dict=True`` returns a :class:`DecodeOutput` with the per-step scores and logits of both
    branches and the kept image tokens.

    ``compile=True`` runs the decode steps through ``torch.compile`` with a static KV cache
    (:class:`CompiledSteps`; the prefill stays eager): the same tokens, faster once compiled (the
    first call per model and batch shape compiles, which takes seconds to a minute). Methods with an
    ``intervention`` during the steps (PAI, ClearSight, VAR, ONLY) raise ``ValueError``: their
    attention edits are module hooks, at which the compiled graph breaks in every edited layer, so
    dynamo recompiles until its limit and then runs them eagerly (PAI, ClearSight and VAR gave the
    eager tokens that way on the tiny model, with nothing gained), and ONLY's side logits come from
    a reader the compiled steps do not collect.
    """
    settings = decode_settings(method, options)
    if compile and settings.record.intervention is not None:
        raise ValueError(
            f"compile=True does not support {settings.record.name!r}: its attention hooks break the compiled "
            "graph in every edited layer (and ONLY's side logits are not collected); use compile=False"
        )
    prompt = embed_prompt(model, inputs)
    device = prompt.input_ids.device
    generator = None if settings.seed is None else torch.Generator(device=device).manual_seed(settings.seed)
    with ExitStack() as interventions:  # held from the original prefill to the last step
        logits, cache, mask, second, forward = prefill(model, inputs, prompt, settings, generator, interventions)
        trace = Trace(return_dict, second)
        if compile:
            steps = CompiledSteps(model, cache, mask, settings.max_new_tokens)
        else:
            steps = EagerSteps(forward, cache, mask)
        sequences = _generate(model, steps, logits, mask.shape[0], settings, generator, trace)
    return trace.output(sequences) if return_dict else sequences


def decode_settings(method, options: Mapping) -> DecodeSettings:
    """``DecodeSettings(method=method, **options)``, with unknown options named in a ``ValueError``."""
    unknown = sorted(set(options) - {o.name for o in decode_options()})
    if unknown:
        raise ValueError(f"unknown keyword argument(s) for decode: {', '.join(unknown)}")
    return DecodeSettings(method=method, **options)


_FIXED_PARAMETERS = list(inspect.signature(decode).parameters.values())[:5]


def _refresh_signature() -> None:
    """``decode``'s signature: its fixed parameters, then every option of the registry as a keyword."""
    decode.__signature__ = inspect.Signature(
        [
            *_FIXED_PARAMETERS,
            *(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default) for o in decode_options()),
        ]
    )


_refresh_signature()
methods.on_register(_refresh_signature)


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
    last step) acts on the original branch only. A side branch's logits (ONLY's) follow the original
    rows' logits after every forward.
    """
    branch, record = settings.branch, settings.record
    context = BranchContext(model, inputs, prompt, None, settings, generator)
    early = _branch_prefill(model, branch, context) if branch is not None and not branch.needs_attention else None
    side = (
        interventions.enter_context(record.intervention(model, prompt, settings))
        if record.intervention is not None
        else None
    )
    forward = Forward(model, side if record.side else None)
    recording = record_last_query_attention(model) if branch is not None and branch.needs_attention else nullcontext()
    with recording as rows:
        logits, cache = forward(prompt.embeds, prompt.attention_mask)
    if branch is None:
        return logits, cache, prompt.attention_mask, None, forward
    if early is None:
        context = BranchContext(model, inputs, prompt, image_rows(rows, prompt.image_mask), settings, generator)
    second, other_logits, other_cache = early or _branch_prefill(model, branch, context)
    return (
        torch.cat([logits, other_logits]),
        compat.concat_caches(cache, other_cache, model.config),
        torch.cat([prompt.attention_mask, second.attention_mask]),
        second,
        forward,
    )


@dataclass(frozen=True)
class Forward:
    """One language-model forward: last-position logits ``[rows, V]`` and the cache; with a ``side``
    branch (ONLY's), its logits ``[B, V]`` appended as extra rows."""

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


class EagerSteps:
    """Decode steps on the prefill's ``DynamicCache``: ``steps(embeds [rows, 1, D])`` -> logits
    ``[rows (+ B side rows), V]``, the mask growing by one position per step."""

    def __init__(self, forward: Forward, cache: DynamicCache, mask: torch.Tensor):
        self.forward, self.cache, self.mask = forward, cache, mask

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        logits, self.cache = self.forward(embeds, self.mask, self.cache)
        return logits


class CompiledSteps:
    """Decode steps under ``torch.compile``, as ``generate`` runs them with ``cache_implementation="static"``:
    the prefill's cache is copied into a ``StaticCache`` of ``prompt + new_tokens`` positions and the
    mask padded with zeros to that length, so that every step has the same shapes and one compiled
    graph serves them all; the position ids come from the mask (left padding kept)."""

    def __init__(self, model: PreTrainedModel, cache: DynamicCache, mask: torch.Tensor, new_tokens: int):
        rows, self.length = mask.shape
        self.model = model
        self.mask = torch.cat([mask, mask.new_zeros(rows, new_tokens)], dim=1)
        self.cache = compat.static_copy(cache, model.config.get_text_config(), self.length + new_tokens)
        self.cache_name = compat.cache_kwarg(model)

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        self.mask[:, self.length] = 1
        self.length += 1
        positions = self.mask.sum(-1, keepdim=True) - 1
        return _compiled_logits()(self.model, embeds, self.mask, positions, self.cache, self.cache_name)[0]


@functools.cache
def _compiled_logits() -> Callable:
    """``compat.decoder_logits`` under ``torch.compile``, made on first use (importing the compiler is slow)."""
    return torch.compile(compat.decoder_logits)


def _generate(
    model: PreTrainedModel,
    steps: Callable[[torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    rows: int,
    settings: DecodeSettings,
    generator: torch.Generator | None,
    trace: Trace,
) -> torch.LongTensor:
    """The decode loop after the prefill(s): one forward of ``rows`` (``branches * B``) per token."""
    batch = logits.shape[0] // (2 if settings.contrastive else 1)
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
        logits = steps(embed(token.repeat(rows // batch))[:, None])
    return torch.stack(tokens, dim=1)


def special_token_ids(model: PreTrainedModel) -> tuple[list[int], int]:
    """``(eos ids, pad id)`` from the generation config, else the text config; pad falls back to EOS."""
    text = model.config.get_text_config()
    sources = (model.generation_config, model.config, text)
    eos = next((s.eos_token_id for s in sources if getattr(s, "eos_token_id", None) is not None), [])
    eos = [eos] if isinstance(eos, int) else list(eos)
    pad = next((s.pad_token_id for s in sources if getattr(s, "pad_token_id", None) is not None), None)
    return eos, pad if pad is not None else (eos[0] if eos else 0)


@contextmanager
def eos_disabled(model: PreTrainedModel) -> Iterator[None]:
    """No EOS id inside the block, so that every row generates exactly ``max_new_tokens`` (for timing)."""
    configs = (model.generation_config, model.config, model.config.get_text_config())
    saved = [getattr(c, "eos_token_id", None) for c in configs]  # a config may not define it
    for c in configs:
        c.eos_token_id = None
    try:
        yield
    finally:
        for c, eos in zip(configs, saved, strict=True):
            c.eos_token_id = eos
