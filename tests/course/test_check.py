"""The exercise checks accept the library's own functions and name the case a wrong attempt fails."""

import math

import pytest
import torch

from avisc_lib import scores, select_blind_tokens
from avisc_lib.course import check


def test_the_library_passes_its_own_checks(capsys):
    assert check.contrast_logits(scores.contrast_logits).endswith("cases agree")
    assert check.plausibility_cut(scores.plausibility_cut).endswith("cases agree")
    assert check.select_blind_tokens(select_blind_tokens).endswith("cases agree")
    assert capsys.readouterr().out.count("agree") == 3


def test_independent_solutions_pass():
    """Written from the definitions, not from the library's code."""

    def contrast(original, other, alpha):
        return original + alpha * (original - other)

    def cut(values, original, beta):
        p = original.softmax(-1)
        return torch.where(p >= beta * p.max(-1, keepdim=True).values, values, torch.tensor(-math.inf))

    check.contrast_logits(contrast)
    check.plausibility_cut(cut)


@pytest.mark.parametrize(
    "attempt, case",
    [
        (lambda o, x, a: (1 - a) * o + a * x, "alpha=1.0"),  # the sign of the contrast flipped
        (lambda o, x, a: ((1 + a) * o - a * x).float(), "float64"),  # dtype lost
    ],
)
def test_a_wrong_contrast_names_the_failing_case(attempt, case):
    with pytest.raises(AssertionError, match=case):
        check.contrast_logits(attempt)


def test_a_cut_on_the_contrast_instead_of_the_original_fails():
    with pytest.raises(AssertionError, match="plausibility_cut, case 'random logits, beta=0.1'"):
        check.plausibility_cut(lambda s, o, b: scores.plausibility_cut(s, s, b))


def test_blind_tokens_with_population_std_fail():
    def population_std(attention, layer_gamma=0.5, lam=1.0):
        score = attention.mean(1)
        return score >= score.mean(-1, keepdim=True) + lam * score.std(-1, unbiased=False, keepdim=True)

    with pytest.raises(AssertionError, match="select_blind_tokens, case"):
        check.select_blind_tokens(population_std)


def test_a_wrong_shape_or_dtype_is_named():
    with pytest.raises(
        AssertionError, match=r"expected a tensor torch.bool of shape \(2, 24\), got torch.bool of shape \(6, 24\)"
    ):
        check.select_blind_tokens(lambda attention, **_: attention.mean(0) > 0)
    with pytest.raises(AssertionError, match="got torch.float32 of shape"):
        check.select_blind_tokens(lambda attention, **_: attention.mean(1))


def test_the_later_notebooks_checks_accept_the_library():
    from avisc_lib.benchmarks import statistics
    from avisc_lib.course import ablation
    from avisc_lib.tokens import masking, sinks

    check.image_positions(lambda ids, token: ids == token)
    check.top_k_share(ablation.top_k_share)
    check.replace_image_tokens(masking.replace_image_tokens)
    check.mcnemar(statistics.mcnemar)
    check.activation(sinks.activation)


def test_the_later_notebooks_checks_accept_independent_solutions():
    """The solutions the notebooks hide, written from the definitions."""
    from statistics import NormalDist

    def wilson(successes, n):
        z = NormalDist().inv_cdf(0.975)
        p = successes / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half

    check.mme_score(lambda right: 100 * right.float().mean().item() + 100 * right.all(-1).float().mean().item())
    check.wilson(wilson)
    check.mcnemar(lambda a, b: min(1.0, 2 * sum(math.comb(a + b, k) for k in range(min(a, b) + 1)) / 2 ** (a + b)))


@pytest.mark.parametrize(
    "name, attempt, says",
    [
        ("mcnemar", lambda a, b: None, "10 vs 3 discordant questions"),  # not a number
        ("mcnemar", lambda a, b: 2 * math.comb(a + b, min(a, b)) / 2 ** (a + b), "10 vs 3"),  # one term, not the tail
        ("mme_score", lambda right: 100 * right.float().mean().item(), "random answers"),  # acc+ forgotten
        ("wilson", lambda s, n: (s / n - 0.1, s / n + 0.1), "30 of 100"),
        # unnormalised: the share of all attention, not of the image's
        ("top_k_share", lambda att, k: att.mean(1).topk(min(k, att.shape[-1]), -1).values.sum(-1), "k=1"),
        ("replace_image_tokens", lambda f, w: f * w[..., None], "a random set"),  # kept what should go
        ("activation", lambda h: h.float().abs(), "random hidden states"),  # not normalised
    ],
)
def test_wrong_attempts_at_the_later_exercises_name_the_case(name, attempt, says):
    with pytest.raises(AssertionError, match=says):
        getattr(check, name)(attempt)
