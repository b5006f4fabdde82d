"""Decoding rules pinned by expectations computed here, with plain Python and numpy.

Each test sits on an edge a small change of the rule would cross: the unbiased standard
deviation of the blind threshold, ``>=`` at the threshold, VCD's beta schedule, ``<`` in the
plausibility cut, the contrast formulas, and M3ID counting steps from 1. None of them calls a
library helper to build its expected value.
"""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
import torch

from avisc_lib.decoding import decode
from avisc_lib.methods.m3id import m3id_logits
from avisc_lib.methods.vcd import diffusion_noise
from avisc_lib.scores import contrast_logits, plausibility_cut
from avisc_lib.tokens.blind import select_blind_tokens


def _one_layer(scores: list[float]) -> torch.Tensor:
    """Image attention ``[1, 1, N]`` of one layer, so a token's score is its attention."""
    return torch.tensor([[scores]], dtype=torch.float32)


def _blind_by_hand(scores: list[float], lam: float, std) -> list[bool]:
    threshold = statistics.mean(scores) + lam * std(scores)
    return [s >= threshold for s in scores]


# ------------------------------------------------------------------------------------ blind tokens


def test_blind_threshold_uses_the_unbiased_std():
    scores = [v / 8 for v in (0, 0, 1, 3, 5, 7)]
    lam = 0.85
    unbiased = _blind_by_hand(scores, lam, statistics.stdev)
    assert unbiased != _blind_by_hand(scores, lam, statistics.pstdev)  # the case tells them apart
    assert select_blind_tokens(_one_layer(scores), layer_gamma=1.0, lam=lam).tolist() == [unbiased]


def test_a_score_exactly_at_the_threshold_is_blind():
    # mean 1/8, unbiased variance (3 * (1/8)^2 + (3/8)^2) / 3 = 1/16, std 1/4:
    # mean + 1.5 * std = 1/2, the last score. Dyadic values: every step is exact in float32.
    scores = [Fraction(0), Fraction(0), Fraction(0), Fraction(1, 2)]
    lam = Fraction(3, 2)
    mean = sum(scores) / len(scores)
    variance = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
    assert variance == Fraction(1, 16) and mean + lam * Fraction(1, 4) == scores[-1]
    as_float32 = np.array([float(s) for s in scores], dtype=np.float32)
    assert as_float32[-1] == as_float32.mean() + np.float32(lam) * as_float32.std(ddof=1)  # tie in float32
    blind = select_blind_tokens(_one_layer([float(s) for s in scores]), layer_gamma=1.0, lam=float(lam))
    assert blind.tolist() == [[False, False, False, True]]


# ------------------------------------------------------------------------------------ VCD's noise


def _vcd_alpha_bar(step: int) -> float:
    """prod_{s <= step} (1 - beta_s), betas = sigmoid(linspace(-6, 6, 1000)) scaled to [1e-5, 5e-3]."""
    xs = np.linspace(-6.0, 6.0, 1000)
    betas = 1 / (1 + np.exp(-xs)) * (5e-3 - 1e-5) + 1e-5
    return float(np.prod(1 - betas[: step + 1]))


def test_vcd_alpha_bar_at_step_500():
    alpha_bar = _vcd_alpha_bar(500)
    pixels = torch.linspace(-2, 2, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    noised = diffusion_noise(pixels, 500, torch.Generator().manual_seed(7))
    eps = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(7)).double()  # one eps for the batch
    expected = math.sqrt(alpha_bar) * pixels.double() + math.sqrt(1 - alpha_bar) * eps
    # float32 keeps ~1e-6; beta_min 2e-5 instead of 1e-5 moves abar by ~0.5 % and x_t by ~1e-2 here.
    torch.testing.assert_close(noised.double(), expected, rtol=0, atol=2e-5)


# ------------------------------------------------------------------------------------ next-token rule


def test_plausibility_cut_keeps_a_token_exactly_at_beta_times_the_max():
    beta = 0.5
    at_cut = np.float32(math.log(beta))  # max logit 0: log p(v) - log max p == log beta exactly
    below = np.nextafter(at_cut, np.float32(-np.inf))
    original = torch.tensor([[0.0, float(at_cut), float(below)]])
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    assert plausibility_cut(scores, original, beta).tolist() == [[1.0, 2.0, float("-inf")]]


def test_plausibility_cut_reads_the_original_branch_not_the_scores():
    original = torch.tensor([[0.0, -5.0]])  # p(1) / p(0) = e^-5 < 0.1: token 1 is cut
    scores = torch.tensor([[-5.0, 0.0]])  # the contrast prefers token 1
    assert plausibility_cut(scores, original, 0.1).tolist() == [[-5.0, float("-inf")]]


def test_contrast_by_hand():
    original, other = torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[1.0, 3.0, 0.5]])
    # (1 + 2.5) * l - 2.5 * l_other
    assert contrast_logits(original, other, 2.5).tolist() == [[4.5, -11.0, 0.5]]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


@pytest.mark.parametrize("step", [1, 5])
def test_m3id_by_hand(step):
    decay = 0.3
    lc = _log_softmax(np.array([1.0, 0.0, -1.0]))
    lu = _log_softmax(np.array([0.0, 2.0, -1.0]))
    g = math.exp(-decay * step)
    expected = lc + (1 - g) / g * (lc - lu)
    got = m3id_logits(torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, -1.0]]), step, decay)
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_m3id_decode_counts_its_first_token_as_step_1(llava_case):
    """The first scores use g = exp(-decay), not exp(0) = 1 (which would leave the original alone)."""
    decay, beta = 1.0, 0.1
    out = decode(
        llava_case.model,
        llava_case.batch(1),
        method="m3id",
        gamma_decay=decay,
        beta=beta,
        max_new_tokens=1,
        return_dict=True,
    )
    lc = out.logits[0][0].double().numpy()
    lu = out.branch_logits[0][0].double().numpy()
    g = math.exp(-decay)
    lc_log, lu_log = _log_softmax(lc), _log_softmax(lu)
    expected = lc_log + (1 - g) / g * (lc_log - lu_log)
    expected[lc < math.log(beta) + lc.max()] = -np.inf
    np.testing.assert_allclose(out.scores[0][0].double().numpy(), expected, rtol=1e-4, atol=1e-4)
