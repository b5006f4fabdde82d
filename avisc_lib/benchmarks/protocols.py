"""Evaluation protocols: how a benchmark run words its questions, prompts, decodes and parses, under one name.

    run_benchmark("pope", model_name="llava", method="avisc", protocol="paper", seed=42, ...)
    run_benchmark("pope", model_name="llava", method="clearsight", protocol="official", ...)

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
(:func:`avisc_lib.course.tables.mean_std`), as the paper does for MME and AMBER. Its
``greedy`` has no place in it: ``method="greedy"`` with this protocol is refused unless the
caller passes ``do_sample=False``. The one-pass methods (PAI with ``pai_gamma=1``, ClearSight,
VAR) sample under it too: sampling is the final token choice, the same for every method, and
``config.json`` records it (``"decoding"``).

The paper protocol also sends each MME question as AvisC's scripts did (``question``
``"mme_first_line"``, :func:`mme_first_line`): they read LLaVA's MME question file, in which
each release question's "Please answer yes or no." is replaced by a second line "Answer the
question using a single word or phrase.", and keep the first line (``mme_llava.py`` line 112,
``mme_instructblip.py`` line 91 in sangminwoo/AvisC at 772eba4; the file is
``experiments/data/MME_Benchmark_release_version/mme_hallucination.jsonl`` of the authors'
sangminwoo/RITUAL at 8059bb9, named in ``experiments/cd_scripts/mme_eval.sh`` line 3). The
model therefore sees the bare question. POPE and AMBER questions are sent as they are
(``eval_bench/pope_eval_llavab.py`` line 207, ``eval_bench/amber_eval_llava.py`` line 175).

``official`` is each method's own released evaluation, so that a number set beside a paper's
number is produced the way that paper produced it. For AvisC, its baselines and controls it is
the ``paper`` protocol (AvisC's released scripts). For the later methods it exists where their
repositories hold a script for the benchmark and model, on LLaVA-1.5 only:

==========  =======  ============  =====================  ========  ==========  ===============================
method      bench    prompt        question               decoding  new tokens  method options, parser
==========  =======  ============  =====================  ========  ==========  ===============================
clearsight  POPE     vicuna_v1     + " Please just        argmax    1024        enhance 1.15, suppress 0.95,
                                   answer yes or no."                           layers 9:15; POPE ``official``
var         POPE     vicuna_v1     as it is               argmax    128         p 0.6, rho 0.5, summ 0.2, tau 20;
                                                                                POPE ``official``
only        POPE     llava_v1      as it is               sampling  8           alpha+ 3, alpha- 1, beta 0.1,
                                                          T=1, p=1              gamma 0.2, layer 0; ``avisc``
only        MME      llava_v1      LLaVA's two-line       sampling  64 (none    alpha+ 3, alpha- 1, beta 0.4,
                                   form (whole)           T=1, p=1  sourced)    gamma 0.25, layer 0; MME
                                                                                ``official``
==========  =======  ============  =====================  ========  ==========  ===============================

Sources (file:line): ClearSight, ustc-hyin/ClearSight at 5466c94: ``visaug/inference/infer_pope.py``
lines 37 (``vicuna_v1``), 70 (the suffix), 92-96 (``generate`` without ``do_sample``, 1024 tokens),
54 (layers 8 < i < 15); ``infer_pope.sh`` lines 7-8 (1.15, 0.95). Its scorer
(``visaug/inference/eval_pope.py`` lines 22-33) looks for "yes" in answers to yes-questions and
for "no" or "not" in answers to no-questions, as substrings; the library has no such parser and
POPE's ``official`` applies, which agrees with it on one-word Yes/No answers. VAR, MICV-yonsei/VisAttnSink at 98e62d6:
``A_exps/lv1.5_7b.yml`` lines 9 (``vicuna_v1``), 12-15 (tau, rho, p, summ), 17 (128 tokens);
``src/inference.py`` lines 99-110 (the question as it is), 132 (``do_sample=False``);
``src/eval/eval_and_save_pope.py`` lines 40-47 (POPE's rule). ONLY, zifuwan/ONLY at 109bffe:
``eval_bench/pope_eval_llava.py`` lines 257-269 (the ``llava_v1`` conversation, the question as
it is), 59-61 and 288-292 (sampling, T = 1, top-p 1, no top-k), 86 (8 tokens), 130-144 (AvisC's
recorder); ``eval_bench/scripts/pope_eval.sh`` lines 31-35; ``experiments/eval/mme_llava.py``
lines 70 and 113-117 (the question file's whole text under ``llava_v1``, line 176), 131 and
179-181 (sampling); ``experiments/cd_scripts/mme_eval.sh`` lines 3 (the same RITUAL question file
as AvisC's) and 25-28 (alpha+ 3, alpha- 1, beta 0.4, gamma 0.25); its scorer
``experiments/eval/eval_mme.py`` lines 30-44 is MME's. ONLY's MME script passes no token limit
(line 135 is commented out), so the checkpoint's generation config decided; that is not sourced
here and the library's 64 applies (its answers are a word or two).

Everything else has no ``official`` protocol and :func:`resolve_protocol` refuses it, naming why
(each method's ``no_official``): ``greedy`` is no paper's method; PAI's POPE script reads chat-format
question files its repository does not hold (LALBJ/PAI at 9bbd8bd, ``constants.py`` lines
29-33) and writes a prompt the library has no style for (lines 14 and 27: the system message
run into ``USER: <image> {question} ASSISTANT:``); ClearSight and VAR release a POPE script
only; ONLY's InstructBLIP scripts are not transcribed here and it has no AMBER script; and no
later method's settings for InstructBLIP are sourced.

Values the caller passes to the runner explicitly (decode options, ``parser``,
``prompt_style``) override the protocol's; the question form is the protocol's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from transformers import PreTrainedModel

from .. import methods
from ..models.loading import CLASSES_BY_TYPE, resolve

PROTOCOLS = ("argmax", "paper", "official")
PROTOCOL_HELP = {
    "argmax": "library defaults: the model's default prompt, argmax, the benchmark's default parser",
    "paper": "AvisC's evaluation: its prompt, question wording, sampling, alpha and answer recorder",
    "official": "each method's own released evaluation (AvisC's for AvisC and its baselines); refused "
    "where none is sourced",
}
MODEL_KINDS = tuple(CLASSES_BY_TYPE)  # "llava", "instructblip"

PAPER_PROMPT = {"llava": "llava_v1", "instructblip": "raw"}
PAPER_TOP_K = {"llava": None, "instructblip": 50}
PAPER_MIN_NEW_TOKENS = {"llava": 0, "instructblip": 1}
PAPER_SHARED = {
    "do_sample": True,
    "temperature": 1.0,
    "top_p": 1.0,
    "max_new_tokens": 64,
    "beta": 0.1,
    "lam": 1.0,
    "layer_gamma": 0.5,
}
PAPER_PARSER = "avisc"
PAPER_QUESTIONS = {"mme": "mme_first_line"}  # benchmark -> question form; others as they are

# --- question forms: the text a run sends for a task's question -----------------------------------
RELEASE_SUFFIX = "Please answer yes or no."  # ends every question of the MME release
LLAVA_MME_LINE = "Answer the question using a single word or phrase."  # LLaVA's second line instead


def llava_mme_text(question: str) -> str:
    """An MME release question in LLaVA's question-file form: ``RELEASE_SUFFIX`` removed, then a
    second line ``LLAVA_MME_LINE`` (RITUAL's ``mme_hallucination.jsonl``; AvisC's
    ``experiments/eval/convert_answer_to_mme.py`` lines 57-62 undo this to find the release's answer)."""
    return f"{question.replace(RELEASE_SUFFIX, '').strip()}\n{LLAVA_MME_LINE}"


def mme_first_line(question: str) -> str:
    """What AvisC's MME scripts send: the first line of :func:`llava_mme_text`, the bare question."""
    return llava_mme_text(question).split("\n")[0]


BENCHMARK_FORMS: dict[str, Callable[[str], str]] = {
    "mme_first_line": mme_first_line,
    "mme_llava_two_lines": llava_mme_text,
}


def question_forms() -> dict[str, Callable[[str], str]]:
    """Every question form: the benchmarks' and those the registered methods declare."""
    return {**BENCHMARK_FORMS, **{k: f for m in methods.registered() for k, f in m.question_forms.items()}}


def question_form(name: str | None) -> Callable[[str], str]:
    """The function a run applies to every question text; None: the text as it is."""
    if name is None:
        return str
    forms = question_forms()
    if name not in forms:
        raise ValueError(f"unknown question form {name!r}; expected one of {tuple(forms)} or None")
    return forms[name]


@dataclass(frozen=True)
class Protocol:
    """What a protocol sets for one run; None keeps the runner's default."""

    name: str
    prompt_style: str | None = None  # None: the model's default style
    parser: str | None = None  # None: the benchmark's default parser
    decode: dict = field(default_factory=dict)  # decode options; omitted ones keep decode's defaults
    question: str | None = None  # a name in QUESTION_FORMS; None: the task's question text as it is


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
    alpha = methods.get(method).paper_alpha.get(kind)
    if alpha is not None:
        options["alpha"] = alpha
    return options


def paper_protocol(method: str, benchmark: str | None, kind: str) -> Protocol:
    """The ``paper`` protocol's settings for ``method`` on ``benchmark`` with a ``kind`` model."""
    return Protocol(
        "paper", PAPER_PROMPT[kind], PAPER_PARSER, paper_decode(method, kind), PAPER_QUESTIONS.get(benchmark)
    )


def official_protocol(method: str, benchmark: str | None, kind: str) -> Protocol:
    """``method``'s own evaluation of ``benchmark`` on a ``kind`` model; ``ValueError`` where none is sourced."""
    if benchmark is None:
        raise ValueError("the official protocol depends on the benchmark: pass benchmark=")
    record = methods.get(method)
    if record.avisc_family:  # AvisC, its baselines and controls: AvisC's released scripts
        return replace(paper_protocol(method, benchmark, kind), name="official")
    if (benchmark, kind) in record.official:
        return Protocol("official", **record.official[benchmark, kind])
    reason = record.no_official
    raise ValueError(f"no official protocol for method {method!r} on {benchmark} with a {kind} model: {reason}")


def resolve_protocol(
    protocol: str,
    *,
    method: str,
    benchmark: str | None = None,
    model_name: str | None = None,
    model: PreTrainedModel | None = None,
) -> Protocol:
    """The settings of ``protocol`` for ``method``; ``paper`` and ``official`` depend on the model kind
    (:func:`model_kind`) and on ``benchmark`` (None: ``paper`` without its question form; ``official``
    needs it)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if protocol == "argmax":
        return Protocol("argmax")
    kind = model_kind(model_name, model)
    if protocol == "paper":
        return paper_protocol(method, benchmark, kind)
    return official_protocol(method, benchmark, kind)
