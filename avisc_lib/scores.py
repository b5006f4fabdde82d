"""Next-token rules shared by the methods: the contrast, the plausibility cut, the EOS ban and the
final choice of a token. A method's own score rule (``Method.scores``) composes them."""

from __future__ import annotations

import math

import torch


def contrast_logits(original: torch.Tensor, other: torch.Tensor, alpha: float) -> torch.Tensor:
    """The contrast ``(1 + alpha) * original - alpha * other`` of AvisC and VCD, ``[B, V]``."""
    return (1 + alpha) * original - alpha * other


def plausibility_cut(scores: torch.Tensor, original: torch.Tensor, beta: float) -> torch.Tensor:
    """``scores`` with ``-inf`` wherever the original branch gives ``p(v) < beta * max p``.

    ``original [B, V]``: logits or log-probabilities (the cut is the same on both).
    """
    cutoff = math.log(beta) + original.max(-1, keepdim=True).values
    return scores.masked_fill(original < cutoff, float("-inf"))


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
    scores: torch.Tensor, settings, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next tokens ``[B]`` and the scores ``[B, V]`` they were chosen from.

    Argmax of ``scores``, or (``settings.sampling``) a multinomial sample after temperature /
    top-k / top-p (the warped scores are returned then).
    """
    if not settings.sampling:
        return scores.argmax(-1), scores
    warped = settings.warpers(None, scores)
    return torch.multinomial(warped.softmax(-1), 1, generator=generator).squeeze(-1), warped
