"""Batched decoding with AvisC and its baselines (VCD, M3ID, greedy, sampling).

Contrastive methods run two branches over the same prompt: the original one and a second one
(AvisC: non-blind image tokens zeroed; VCD: a diffusion-noised image; M3ID: no image at all).
Each branch has its own KV cache, but after the two prefills the caches are joined along the
batch, so every later step is ONE forward of 2B rows. The image goes through the vision tower
once and both branches share it (VCD's noised image is the one extra pass). Every generated
token is appended to both branches. The contrast is computed in float32:

* AvisC, VCD: ``z = (1 + alpha) * l - alpha * l_other``
* M3ID: ``z = lc + (1 - g_t) / g_t * (lc - lu)`` on log-softmaxes, ``g_t = exp(-gamma_decay * t)``

then tokens with ``p(v) < beta * max p`` under the original branch are removed (``-inf``), EOS is
banned for the first ``min_new_tokens`` steps, and the next token is the argmax (``do_sample=False``)
or a sample after temperature / top-k / top-p.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from . import compat
from .attention import image_rows, record_last_query_attention
from .blind import select_blind_tokens
from .inputs import Prompt, embed_prompt
from .masking import replace_image_tokens

METHODS = ("greedy", "sample", "avisc", "vcd", "m3id")
CONTRASTIVE = ("avisc", "vcd", "m3id")
# The official code's default (``cd_alpha=1.0``; its VCD branch hard-codes 1.0). The paper reports
# alpha = 2.5 for LLaVA-1.5 and 3.0 for InstructBLIP: pass those explicitly to reproduce it.
DEFAULT_ALPHA = {"avisc": 1.0, "vcd": 1.0}
DIFFUSION_STEPS = 1000


@dataclass(frozen=True)
class DecodeSettings:
    """Validated ``decode`` hyper-parameters (see ``decode`` for their meaning)."""

    method: str
    alpha: float | None = None
    beta: float = 0.1
    lam: float = 1.0
    layer_gamma: float = 0.5
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    seed: int | None = None
    noise_step: int = 500
    gamma_decay: float = 0.02
    warpers: LogitsProcessorList = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.method == "greedy" and self.do_sample:
            raise ValueError("method='greedy' with do_sample=True: use method='sample' for plain sampling")
        if self.alpha is None:
            object.__setattr__(self, "alpha", DEFAULT_ALPHA.get(self.method, 0.0))
        _check(self.alpha >= 0 and math.isfinite(self.alpha), "alpha", self.alpha, "a finite number >= 0")
        _check(0 < self.beta <= 1, "beta", self.beta, "in (0, 1]")
        _check(math.isfinite(self.lam), "lam", self.lam, "finite")
        _check(0 < self.layer_gamma <= 1, "layer_gamma", self.layer_gamma, "in (0, 1]")
        _check(isinstance(self.do_sample, bool), "do_sample", self.do_sample, "True or False")
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

    @property
    def sampling(self) -> bool:
        return self.method == "sample" or (self.do_sample and self.method in CONTRASTIVE)

    def _warpers(self) -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k:
            warpers.append(TopKLogitsWarper(int(self.top_k)))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(float(self.top_p)))
        return warpers


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
    if settings.method not in CONTRASTIVE:
        return original
    other = logits[batch:]
    other = torch.where(other.isnan().any(-1, keepdim=True), original, other)
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


def choose_tokens(scores: torch.Tensor, settings: DecodeSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Argmax, or a multinomial sample after temperature / top-k / top-p, ``[B]``."""
    if not settings.sampling:
        return scores.argmax(-1)
    probs = settings.warpers(None, scores).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------- second branches


def diffusion_noise(pixel_values: torch.Tensor, noise_step: int = 500, generator: torch.Generator | None = None):
    """VCD's forward-diffusion noise at ``noise_step`` on normalised pixels ``[B, C, H, W]``.

    ``x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps`` with VCD's sigmoid beta schedule. One
    ``eps [C, H, W]`` is drawn and shared by the batch, so a row's result does not depend on its
    neighbours (VCD ran B = 1).
    """
    betas = torch.sigmoid(torch.linspace(-6, 6, DIFFUSION_STEPS)) * (5e-3 - 1e-5) + 1e-5
    alpha_bar = torch.cumprod(1 - betas, dim=0)[noise_step].item()
    eps = torch.randn(pixel_values.shape[1:], generator=generator, device=pixel_values.device)
    noised = math.sqrt(alpha_bar) * pixel_values.float() + math.sqrt(1 - alpha_bar) * eps
    return noised.to(pixel_values.dtype)


def avisc_branch(
    prompt: Prompt, attention: torch.Tensor, settings: DecodeSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Biased prompt: image tokens that are not blind get zero embeddings. ``(embeds, attention_mask)``."""
    blind = select_blind_tokens(attention, settings.layer_gamma, settings.lam)
    return prompt.with_images(replace_image_tokens(prompt.features, ~blind, "zeros")), prompt.attention_mask


def vcd_branch(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    prompt: Prompt,
    settings: DecodeSettings,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same prompt with the image diffusion-noised. ``(embeds, attention_mask)``."""
    pixel_values = inputs["pixel_values"].to(prompt.input_ids.device)
    noised = diffusion_noise(pixel_values, settings.noise_step, generator)
    features = compat.image_features(model, {**inputs, "pixel_values": noised})
    return prompt.with_images(features), prompt.attention_mask


def text_only_branch(prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
    """M3ID's unconditioned prompt: image tokens dropped, re-left-padded to the same length L.

    Keeping length L lets its cache join the original one. ``(embeds, attention_mask)``.
    """
    keep = prompt.attention_mask.bool() & ~prompt.image_mask
    order = keep.int().sort(dim=-1, stable=True).indices  # dropped positions first, kept ones in order
    embeds = prompt.token_embeds.gather(1, order[..., None].expand_as(prompt.token_embeds))
    return embeds, keep.gather(1, order).long()


# ---------------------------------------------------------------------------------- the loop


@torch.no_grad()
def decode(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    *,
    method: str,
    alpha: float | None = None,
    beta: float = 0.1,
    lam: float = 1.0,
    layer_gamma: float = 0.5,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    max_new_tokens: int = 64,
    min_new_tokens: int = 0,
    seed: int | None = None,
    noise_step: int = 500,
    gamma_decay: float = 0.02,
    **unknown,
) -> torch.LongTensor:
    """Generate answers; returns the new token ids ``[B, T]``, padded after each row's EOS.

    ``inputs``: the processor's output (left-padded for B > 1). ``method``: "greedy", "sample"
    (plain multinomial, the paper's "base"), "avisc", "vcd" or "m3id".

    * ``alpha``: contrast strength for AvisC/VCD, default 1.0 (the official code; the paper used
      2.5 for LLaVA-1.5 and 3.0 for InstructBLIP). ``beta``: plausibility cut (0, 1].
    * ``lam``, ``layer_gamma``: AvisC's blind-token threshold and layer share (``select_blind_tokens``).
      Blind tokens come from the original branch's prefill, as in the official code.
    * ``do_sample``: for the contrastive methods, sample instead of taking the argmax (the paper
      sampled). ``temperature``, ``top_p``, ``top_k`` (None or 0 = off) shape the sampling.
    * ``min_new_tokens``: EOS is banned until that many tokens are generated (HF's
      ``min_new_tokens``; InstructBLIP's official generation used ``min_length=1``). Default 0.
    * ``seed``: seeds a generator for the sampling and VCD's noise (None = torch's global RNG).
    * ``noise_step``: VCD's diffusion step (0..999). ``gamma_decay``: M3ID's decay.

    Hyper-parameters a method does not use are ignored. Unknown keywords or invalid values raise
    ``ValueError``.
    """
    if unknown:
        raise ValueError(f"unknown keyword argument(s) for decode: {', '.join(sorted(unknown))}")
    settings = DecodeSettings(
        method=method, alpha=alpha, beta=beta, lam=lam, layer_gamma=layer_gamma, do_sample=do_sample,
        temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens, seed=seed, noise_step=noise_step, gamma_decay=gamma_decay,
    )
    prompt = embed_prompt(model, inputs)
    generator = None if seed is None else torch.Generator(device=prompt.input_ids.device).manual_seed(seed)
    logits, cache, mask = prefill(model, inputs, prompt, settings, generator)
    return _generate(model, logits, cache, mask, settings, generator)


def prefill(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    prompt: Prompt,
    settings: DecodeSettings,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
    """Prefill the original branch, then the method's second branch; join them along the batch.

    Returns ``(last-position logits [branches * B, V], cache, attention_mask [branches * B, L])``,
    original rows first. AvisC records the original prefill's attention to find the blind tokens.
    """
    recording = record_last_query_attention(model) if settings.method == "avisc" else nullcontext({})
    with recording as rows:
        logits, cache = compat.language_model_forward(model, prompt.embeds, prompt.attention_mask)
    if settings.method not in CONTRASTIVE:
        return logits, cache, prompt.attention_mask
    if settings.method == "avisc":
        embeds, mask = avisc_branch(prompt, image_rows(rows, prompt.image_mask), settings)
    elif settings.method == "vcd":
        embeds, mask = vcd_branch(model, inputs, prompt, settings, generator)
    else:
        embeds, mask = text_only_branch(prompt)
    other_logits, other_cache = compat.language_model_forward(model, embeds, mask)
    return (torch.cat([logits, other_logits]), compat.concat_caches(cache, other_cache, model.config),
            torch.cat([prompt.attention_mask, mask]))


def _generate(
    model: PreTrainedModel,
    logits: torch.Tensor,
    cache: DynamicCache,
    mask: torch.Tensor,
    settings: DecodeSettings,
    generator: torch.Generator | None,
) -> torch.LongTensor:
    """The decode loop after the prefill(s): one forward of ``branches * B`` rows per token."""
    batch = logits.shape[0] // (2 if settings.method in CONTRASTIVE else 1)
    eos, pad = special_token_ids(model)
    eos = torch.tensor(eos, dtype=torch.long, device=logits.device)
    embed = model.get_input_embeddings()
    done = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    tokens = []
    for step in range(1, settings.max_new_tokens + 1):
        scores = next_token_scores(logits, batch, step, settings)
        if step <= settings.min_new_tokens:
            scores = ban_tokens(scores, eos)
        token = choose_tokens(scores, settings, generator)
        token = token.masked_fill(done, pad)
        tokens.append(token)
        done |= torch.isin(token, eos)
        if bool(done.all()) or step == settings.max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        step_embeds = embed(token.repeat(logits.shape[0] // batch))[:, None]
        logits, cache = compat.language_model_forward(model, step_embeds, mask, cache)
    return torch.stack(tokens, dim=1)


def special_token_ids(model: PreTrainedModel) -> tuple[list[int], int]:
    """``(eos ids, pad id)`` from the generation config, else the text config; pad falls back to EOS."""
    text = model.config.get_text_config()
    sources = (model.generation_config, model.config, text)
    eos = next((s.eos_token_id for s in sources if getattr(s, "eos_token_id", None) is not None), [])
    eos = [eos] if isinstance(eos, int) else list(eos)
    pad = next((s.pad_token_id for s in sources if getattr(s, "pad_token_id", None) is not None), None)
    return eos, pad if pad is not None else (eos[0] if eos else 0)
