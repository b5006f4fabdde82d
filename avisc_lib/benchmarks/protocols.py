"""Evaluation protocols: how a benchmark run prompts, decodes and parses, under one name.

    run_benchmark("pope", model_name="llava", method="avisc", protocol="paper", seed=42, ...)

``argmax`` (the default) is the library's defaults: the model's default prompt style, argmax
decoding, α = 1, β = 0.1, and the benchmark's default parser (POPE and MME ``official``,
AMBER ``normalised``; :data:`.tasks.DEFAULT_PARSERS`). It is deterministic, so one seed suffices.

``paper`` is the evaluation AvisC's tables come from (arXiv 2405.17820 and its released code):

=================  ==========================  ===============================================
setting            LLaVA-1.5                   InstructBLIP
=================  ==========================  ===============================================
prompt             ``llava_v1`` (system        ``raw`` (the question alone)
                   prompt, ``USER: <image>\\n
                   {question} ASSISTANT:``)
decoding           multinomial sampling (``do_sample=True``; the paper's "base" is
                   ``method="sample"``), T = 1, top-p = 1, at most 64 new tokens
top-k              off (the scripts pass           50 (LAVIS does not pass it, so HF's default
                   ``top_k=None``)                 top-k warper stays on)
min_new_tokens     0                           1 (LAVIS passes ``min_length=1``)
α (AvisC)          2.5                         3.0
α (VCD)            1.0                         1.0
β, λ, P            0.1, 1.0, 0.5               0.1, 1.0, 0.5
parser             ``avisc``: AvisC's answer recorder, for POPE, MME and AMBER
=================  ==========================  ===============================================

α is ambiguous in the sources. The paper states α = 2.5 for LLaVA-1.5 and 3 for InstructBLIP
(with P = 0.5 and λ = 1), for all benchmarks. The released scripts differ per benchmark: POPE
passes α = 1.0 (next to an unused list holding 3.0), AMBER 2.5 (LLaVA), and the MME script is
set up for an M3ID run, which has no α, with α = 1.0 left in it. The protocol takes the paper's
statement, the only one about the reported numbers; the AMBER script agrees with it. Pass
``alpha=1.0`` to run the POPE or MME script's value instead. VCD's α is 1.0 because the
AvisC code hard-codes it in its VCD branch, whatever is passed. M3ID has no α (its decay is
AvisC's 0.02, the library default). The controls ``random_mask`` and ``zero_image`` take
AvisC's α, so that only their second branch differs from AvisC's.

The paper sampled, so its numbers vary with the seed: run several seeds and report mean ± std
(:func:`avisc_lib.evaluation_views.mean_std`), as the paper does for MME and AMBER. Its
``greedy`` has no place in it: ``method="greedy"`` with this protocol is refused unless the
caller passes ``do_sample=False``.

Values the caller passes to the runner explicitly (decode options, ``parser``,
``prompt_style``) override the protocol's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedModel

from ..models import CLASSES_BY_TYPE, resolve

PROTOCOLS = ("argmax", "paper")
MODEL_KINDS = tuple(CLASSES_BY_TYPE)  # "llava", "instructblip"

PAPER_PROMPT = {"llava": "llava_v1", "instructblip": "raw"}
PAPER_TOP_K = {"llava": None, "instructblip": 50}
PAPER_MIN_NEW_TOKENS = {"llava": 0, "instructblip": 1}
PAPER_ALPHA = {  # (method, model kind) -> alpha; the same for every benchmark (see the module docstring)
    ("avisc", "llava"): 2.5,
    ("avisc", "instructblip"): 3.0,
    ("vcd", "llava"): 1.0,
    ("vcd", "instructblip"): 1.0,
}
PAPER_SHARED = {
    "do_sample": True,
    "temperature": 1.0,
    "top_p": 1.0,
    "max_new_tokens": 64,
    "beta": 0.1,
    "lam": 1.0,
    "layer_gamma": 0.5,
}
AVISC_CONTROLS = ("random_mask", "zero_image")  # AvisC with another second branch
PAPER_PARSER = "avisc"


@dataclass(frozen=True)
class Protocol:
    """What a protocol sets for one run; None keeps the runner's default."""

    name: str
    prompt_style: str | None = None  # None: the model's default style
    parser: str | None = None  # None: the benchmark's default parser
    decode: dict = field(default_factory=dict)  # decode options; omitted ones keep decode's defaults


def model_kind(model_name: str | None = None, model: PreTrainedModel | None = None) -> str:
    """``"llava"`` or ``"instructblip"``: ``model.config.model_type``, else from the name before loading."""
    if model is not None:
        kind = model.config.model_type
    else:
        model_class = resolve(model_name)[1]
        kind = next(t for t, c in CLASSES_BY_TYPE.items() if c is model_class)
    if kind not in MODEL_KINDS:
        raise ValueError(f"no paper protocol for model type {kind!r}; expected one of {MODEL_KINDS}")
    return kind


def paper_decode(method: str, kind: str) -> dict:
    """The paper's decode options for ``method`` on a ``kind`` model (see the module docstring)."""
    options = {**PAPER_SHARED, "top_k": PAPER_TOP_K[kind], "min_new_tokens": PAPER_MIN_NEW_TOKENS[kind]}
    alpha_of = "avisc" if method in AVISC_CONTROLS else method
    if (alpha_of, kind) in PAPER_ALPHA:
        options["alpha"] = PAPER_ALPHA[alpha_of, kind]
    return options


def resolve_protocol(
    protocol: str, *, method: str, model_name: str | None = None, model: PreTrainedModel | None = None
) -> Protocol:
    """The settings of ``protocol`` for ``method``; the paper's depend on the model kind (:func:`model_kind`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if protocol == "argmax":
        return Protocol("argmax")
    kind = model_kind(model_name, model)
    return Protocol("paper", PAPER_PROMPT[kind], PAPER_PARSER, paper_decode(method, kind))
