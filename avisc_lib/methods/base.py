"""What a decoding method is, and the pieces several methods share.

A method is one :class:`Method` record in a file of its own (``methods/<name>.py``), registered
with :func:`avisc_lib.methods.register`. The record declares

* its ``options`` (:class:`Option`: default, help text, valid values, source), from which
  ``DecodeSettings``, ``decode``'s keywords and ``avisc-eval run``'s flags are built;
* what it adds to the original forward: a second ``branch`` (:class:`Branch`, joined to the
  original rows as extra batch rows), an attention ``intervention`` held around the original
  branch's forwards, or both;
* its ``scores`` rule, from the original branch's logits and the other ones, ``[B, V]``;
* its cost in forward passes (:class:`Passes`), for the GPU cost model;
* its official evaluation settings where they are sourced (``official``, ``no_official``).

A second branch is a function of a :class:`BranchContext` returning :class:`BranchInputs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from ..models.inputs import Prompt
from ..scores import contrast_logits, plausibility_cut
from ..tokens.masking import replace_image_tokens


# ------------------------------------------------------------------------------------ options
def finite(value) -> bool:
    """A real number (not a bool), finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def layer_span(text: str) -> tuple[int, int]:
    """``"2:32"`` -> ``(2, 32)``, a half-open range of layers (how the CLI reads a layer range)."""
    start, _, end = text.partition(":")
    try:
        return int(start), int(end)
    except ValueError:
        raise ValueError(f"a layer range is start:end, e.g. 2:32, got {text!r}") from None


@dataclass(frozen=True)
class Check:
    """The values an option accepts: ``test(value) -> bool``, and how an error message words them."""

    test: Callable[[Any], bool]
    expected: str


FINITE = Check(finite, "finite")
NON_NEGATIVE = Check(lambda v: finite(v) and v >= 0, "a finite number >= 0")
POSITIVE = Check(lambda v: finite(v) and v > 0, "a finite number > 0")
UNIT = Check(lambda v: finite(v) and 0 <= v <= 1, "in [0, 1]")
OPEN_UNIT = Check(lambda v: finite(v) and 0 < v <= 1, "in (0, 1]")


def int_at_least(low: int) -> Check:
    return Check(lambda v: is_int(v) and v >= low, f"an int >= {low}")


@dataclass(frozen=True)
class Option:
    """One decoding option: its ``default``, the ``help`` the CLI shows, the values it accepts
    (``check``; None: checked where it is used) and how text is read into it (``kind``: float, int,
    bool or :func:`layer_span`)."""

    name: str
    default: Any
    help: str
    check: Check | None = None
    kind: Callable[[str], Any] = float

    def validate(self, value) -> None:
        """Raise ``ValueError`` naming the option unless ``value`` is accepted."""
        if self.check is not None and not self.check.test(value):
            raise ValueError(f"{self.name} must be {self.check.expected}, got {value!r}")


# Options read by several methods (the contrast family). The official code's default alpha is 1.0
# (``cd_alpha=1.0``; its VCD branch hard-codes 1.0); the paper reports 2.5 for LLaVA-1.5 and 3.0 for
# InstructBLIP: pass those explicitly to reproduce it. None resolves to DEFAULT_ALPHA.
DEFAULT_ALPHA = 1.0
ALPHA_HELP = (
    "contrast strength of the two-branch methods except M3ID (default 1.0, the official code's; the paper "
    "used 2.5 for LLaVA-1.5, 3.0 for InstructBLIP)"
)
ALPHA = Option("alpha", None, ALPHA_HELP, NON_NEGATIVE)
BETA = Option(
    "beta", 0.1, "plausibility cut in (0, 1]: tokens with p < beta * max p (original branch) removed", OPEN_UNIT
)
CONTRAST = (ALPHA, BETA)


# ------------------------------------------------------------------------------------ branches
@dataclass(frozen=True)
class BranchContext:
    """What a branch may build from: the original branch's prompt and prefill.

    ``attention [B, layers, N]``: the original prefill's image attention (float32), or None when
    the branch does not ask for it. ``settings``: the decode's ``DecodeSettings``.
    """

    model: PreTrainedModel
    inputs: Mapping[str, torch.Tensor]
    prompt: Prompt
    attention: torch.Tensor | None
    settings: Any
    generator: torch.Generator | None


@dataclass(frozen=True)
class BranchInputs:
    """The second branch's prompt: ``embeds [B, L, D]`` and ``attention_mask [B, L]``.

    ``kept [B, N]``: image tokens left as they were (AvisC and its controls), and ``layers
    [B, layers]``: the layers whose attention chose them, when the branch used attention.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    kept: torch.Tensor | None = None
    layers: torch.Tensor | None = None


@dataclass(frozen=True)
class Branch:
    """A second branch: ``build(context)``, and whether it reads the original prefill's attention."""

    build: Callable[[BranchContext], BranchInputs]
    needs_attention: bool


def keep_only(context: BranchContext, kept: torch.Tensor, layers: torch.Tensor | None = None) -> BranchInputs:
    """The original prompt with every image token outside ``kept [B, N]`` zeroed."""
    prompt = context.prompt
    features = replace_image_tokens(prompt.features, ~kept, "zeros")
    return BranchInputs(prompt.with_images(features), prompt.attention_mask, kept, layers)


def contrast_scores(original: torch.Tensor, other: torch.Tensor, step: int, settings) -> torch.Tensor:
    """AvisC's and VCD's rule: ``(1 + alpha) * l - alpha * l_other``, then the plausibility cut."""
    return plausibility_cut(contrast_logits(original, other, settings.alpha), original, settings.beta)


# ------------------------------------------------------------------------------------ the record
@dataclass(frozen=True)
class Passes:
    """Forward passes per batch, for the cost model (:mod:`avisc_lib.course.budget`)."""

    vision: int  # vision-tower passes
    prefills: int  # language-model prefills of the B prompts
    branches: int  # rows per decode step, in units of B (0: no decoding)


Intervention = Callable[[PreTrainedModel, Prompt, Any], AbstractContextManager]
ScoreRule = Callable[[torch.Tensor, torch.Tensor, int, Any], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A decoding method. See the module docstring; every field but ``name`` and ``summary`` is optional.

    ``scores(original [B, V], other [B, V], step, settings) -> [B, V]`` is called when the method
    has second logits (a branch, or ``side``); ``step`` counts generated tokens from 1.
    ``branch_if(settings)``: whether the branch runs for these settings (None: always).
    ``side``: the intervention yields an object whose ``logits [B, V]`` (updated on every forward)
    are the second logits (ONLY), instead of a branch. ``choice``: ``"argmax"`` or ``"sampling"``
    when the method's name fixes how the token is chosen. ``official``: ``{(benchmark, model kind):
    settings}`` of the method's own released evaluation (keys of ``benchmarks.protocols.Protocol``);
    ``no_official``: why there is none elsewhere; ``paper_alpha``: ``{model kind: alpha}`` of AvisC's
    paper evaluation for a method of its family (``avisc_family``), whose official protocol is the paper's.
    """

    name: str
    summary: str
    options: tuple[Option, ...] = ()
    passes: Passes = Passes(1, 1, 1)
    branch: Branch | None = None
    branch_if: Callable[[Any], bool] | None = None
    intervention: Intervention | None = None
    side: bool = False
    scores: ScoreRule | None = None
    choice: str | None = None
    avisc_family: bool = False
    paper_alpha: Mapping[str, float] = field(default_factory=dict)
    official: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    no_official: str = "its official evaluation is not sourced here"
    question_forms: Mapping[str, Callable[[str], str]] = field(default_factory=dict)

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"a method name is an identifier, got {self.name!r}")
        if self.choice not in (None, "argmax", "sampling"):
            raise ValueError(f"choice must be None, 'argmax' or 'sampling', got {self.choice!r}")
        if (self.branch is not None or self.side) and self.scores is None:
            raise ValueError(f"method {self.name!r} has second logits but no scores rule")


def image_branch(edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Method:
    """A method from your function ``edit(features [B, N, D], attention [B, layers, N]) -> [B, N, D]``:
    its second branch holds the edited image features, contrasted as AvisC's (``alpha``, ``beta``)."""

    def build(context: BranchContext) -> BranchInputs:
        features = edit(context.prompt.features, context.attention)
        expected = tuple(context.prompt.features.shape)
        if not isinstance(features, torch.Tensor) or tuple(features.shape) != expected:
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"branch {getattr(edit, '__name__', edit)!r} returned {got}; expected features {expected}")
        return BranchInputs(context.prompt.with_images(features), context.prompt.attention_mask)

    name = getattr(edit, "__name__", "branch")
    return Method(
        name if name.isidentifier() else "branch",
        "your own image branch",
        CONTRAST,
        Passes(1, 2, 2),
        branch=Branch(build, needs_attention=True),
        scores=contrast_scores,
    )


# ------------------------------------------------------------------------------------ layers
PAPER_DEPTH = 32  # language-model layers of LLaVA-1.5-7B, for which the methods' layer ranges were given


def layer_range(layers: tuple[int, int] | None, paper: tuple[int, int], num_layers: int, name: str) -> tuple[int, ...]:
    """Layer indices of the half-open range ``layers = (start, end)``.

    None: the ``paper`` range for a 32-layer model scaled to ``num_layers`` (rounded, at least
    one layer). Raises ``ValueError`` unless ``0 <= start < end <= num_layers``.
    """
    if layers is None:
        start = round(paper[0] * num_layers / PAPER_DEPTH)
        return tuple(range(start, max(start + 1, round(paper[1] * num_layers / PAPER_DEPTH))))
    ok = (
        isinstance(layers, (tuple, list))
        and len(layers) == 2
        and all(is_int(v) for v in layers)
        and 0 <= layers[0] < layers[1] <= num_layers
    )
    if not ok:
        raise ValueError(
            f"{name} must be None or (start, end) with 0 <= start < end <= {num_layers} "
            f"(the language model's layers), got {layers!r}"
        )
    return tuple(range(*layers))
