"""A decoding method from outside the library, in one file: nothing else is edited to add it.

``keep_top`` contrasts the model with a branch that keeps only the ``top_tokens`` most attended
image tokens (AvisC's contrast and cut, another token set). Loaded by
``avisc_lib.methods.load("tests/methods/plugins/keep_top.py")`` or ``avisc-eval --methods-from ...``.
"""

import torch

from avisc_lib.methods import Branch, Method, Option, Passes, register
from avisc_lib.methods.base import CONTRAST, BranchContext, BranchInputs, contrast_scores, int_at_least, keep_only

TOP_TOKENS = Option(
    "top_tokens", 4, "keep_top: how many of the most attended image tokens its branch keeps", int_at_least(1), int
)


def most_attended(context: BranchContext) -> BranchInputs:
    """The ``top_tokens`` image tokens with the most attention (mean over layers) kept, the rest zeroed."""
    score = context.attention.mean(1)  # [B, N]
    top = score.topk(min(context.settings.top_tokens, score.shape[1]), dim=1).indices
    return keep_only(context, torch.zeros_like(score, dtype=torch.bool).scatter(1, top, True))


KEEP_TOP = register(
    Method(
        "keep_top",
        "test: contrast with a branch that keeps the most attended image tokens",
        (*CONTRAST, TOP_TOKENS),
        Passes(1, 2, 2),
        branch=Branch(most_attended, needs_attention=True),
        scores=contrast_scores,
    )
)
