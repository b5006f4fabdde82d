"""Checks for the notebooks' exercises: your function against the library's, on random and edge cases.

    from avisc_lib.course import check
    check.contrast_logits(my_contrast)     # "contrast_logits: all 7 cases agree" or an AssertionError
    check.plausibility_cut(my_cut)         # that names the first case where yours differs
    check.select_blind_tokens(my_blind)

One check per exercise of the series: notebook 00 :func:`image_positions`, 01 :func:`top_k_share`, 02
:func:`replace_image_tokens`, 03 :func:`contrast_logits`, :func:`plausibility_cut` and
:func:`select_blind_tokens`, 04 :func:`mcnemar`, 05 :func:`mme_score`, 06 :func:`wilson`, 07
:func:`activation`. Each calls your function and the library's with the same seeded inputs,
including the edge cases that trip first attempts (α = 0, β = 1, ties, -inf logits, uniform
attention, no discordant pairs, zero rows), and compares the outputs exactly for masks and to float
tolerance for scores and numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import torch

from .. import scores
from ..benchmarks import mme, statistics
from ..models.inputs import image_token_mask
from ..tokens import masking, sinks
from ..tokens.blind import select_blind_tokens as library_blind_tokens
from . import ablation

Case = tuple[str, tuple, dict]  # (description, positional arguments, keyword arguments)


def _compare(name: str, yours: Callable, reference: Callable, cases: Iterator[Case]) -> str:
    count = 0
    for what, args, kwargs in cases:
        expected = reference(*args, **kwargs)
        got = yours(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)
        if isinstance(expected, torch.Tensor):
            _same_tensor(name, what, got, expected)
        else:
            _same_numbers(name, what, got, expected)
        count += 1
    message = f"{name}: all {count} cases agree"
    print(message)
    return message


def _same_tensor(name: str, what: str, got, expected: torch.Tensor) -> None:
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
        found = f"{got.dtype} of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
        wanted = f"{expected.dtype} of shape {tuple(expected.shape)}"
        raise AssertionError(f"{name}, case {what!r}: expected a tensor {wanted}, got {found}")
    try:
        torch.testing.assert_close(got, expected, equal_nan=True)
    except AssertionError as error:
        raise AssertionError(f"{name}, case {what!r}: your output differs from the library's.\n{error}") from None


def _same_numbers(name: str, what: str, got, expected: float | tuple[float, ...]) -> None:
    """A number, or a tuple of numbers, to within 1e-6 relative (float32 arithmetic passes)."""
    wanted = expected if isinstance(expected, tuple) else (expected,)
    found = got if isinstance(got, tuple) else (got,)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in found)
    if len(found) != len(wanted) or not numbers:
        raise AssertionError(f"{name}, case {what!r}: expected {expected!r}, got {got!r}")
    if not all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(found, wanted)):
        raise AssertionError(f"{name}, case {what!r}: expected {expected!r}, got {got!r}")


def _logits(generator: torch.Generator, batch: int = 3, vocab: int = 50) -> torch.Tensor:
    return 3 * torch.randn(batch, vocab, generator=generator)


def contrast_logits(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> str:
    """Check ``fn(original [B, V], other [B, V], alpha) -> [B, V]``: AvisC's and VCD's contrast."""
    g = torch.Generator().manual_seed(0)

    def cases() -> Iterator[Case]:
        for alpha in (0.0, 1.0, 2.5, 0.3):
            yield f"random logits, alpha={alpha}", (_logits(g), _logits(g), alpha), {}
        same = _logits(g)
        yield "the same logits in both branches", (same, same.clone(), 1.0), {}
        yield "a batch of one", (_logits(g, 1), _logits(g, 1), 1.0), {}
        yield "float64 inputs", (_logits(g).double(), _logits(g).double(), 2.0), {}

    return _compare("contrast_logits", fn, scores.contrast_logits, cases())


def plausibility_cut(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> str:
    """Check ``fn(scores [B, V], original [B, V], beta) -> [B, V]``: -inf where ``p(v) < beta * max p``."""
    g = torch.Generator().manual_seed(1)

    def cases() -> Iterator[Case]:
        for beta in (0.1, 0.5, 1e-6):
            yield f"random logits, beta={beta}", (_logits(g), _logits(g), beta), {}
        logits = _logits(g)
        yield "beta=1: only the most probable token survives", (logits, logits.clone(), 1.0), {}
        tied = torch.tensor([[2.0, 2.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
        yield "ties at the maximum", (tied.clone(), tied, 0.5), {}
        masked = _logits(g)
        masked[:, :10] = float("-inf")
        yield "-inf in the original logits", (_logits(g), masked, 0.1), {}
        log_probs = _logits(g).log_softmax(-1)
        yield "log-probabilities instead of logits", (_logits(g), log_probs, 0.1), {}

    return _compare("plausibility_cut", fn, scores.plausibility_cut, cases())


def select_blind_tokens(fn: Callable[..., torch.Tensor]) -> str:
    """Check ``fn(attention [B, layers, N], layer_gamma=..., lam=...) -> bool [B, N]``."""
    g = torch.Generator().manual_seed(2)

    def attention(batch: int = 2, layers: int = 6, tokens: int = 24) -> torch.Tensor:
        return (2 * torch.randn(batch, layers, tokens, generator=g)).softmax(-1) * torch.rand(
            batch, layers, 1, generator=g
        )

    def cases() -> Iterator[Case]:
        for gamma, lam in ((0.5, 1.0), (1.0, 1.0), (0.5, 0.0), (0.2, 2.0), (0.9, -0.5)):
            yield (
                f"random attention, layer_gamma={gamma}, lam={lam}",
                (attention(),),
                {"layer_gamma": gamma, "lam": lam},
            )
        peaked = attention()
        peaked[:, :, 3] += 1.0
        yield "one token draws most attention", (peaked,), {"layer_gamma": 0.5, "lam": 1.0}
        yield "uniform attention (std 0)", (torch.full((2, 4, 9), 0.1),), {"layer_gamma": 0.5, "lam": 1.0}
        yield "a batch of one, one layer", (attention(1, 1, 16),), {"layer_gamma": 1.0, "lam": 1.0}

    return _compare("select_blind_tokens", fn, library_blind_tokens, cases())


def _image_mask_reference(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    return image_token_mask(SimpleNamespace(config=SimpleNamespace(image_token_id=image_token_id)), input_ids)


def image_positions(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """Check ``fn(input_ids [B, L], image_token_id) -> bool [B, L]``: where a prompt holds its image
    tokens, as :func:`avisc_lib.models.inputs.image_token_mask` finds them (notebook 00)."""
    g = torch.Generator().manual_seed(7)

    def prompt(batch: int, before: int, image: int, after: int, token: int, pad: int = 0) -> torch.Tensor:
        text = torch.randint(1, 1000, (batch, before + after), generator=g)
        ids = torch.cat([text[:, :before], torch.full((batch, image), token), text[:, before:]], -1)
        return torch.cat([torch.full((batch, pad), 0), ids], -1)

    def cases() -> Iterator[Case]:
        yield "one prompt, LLaVA's 576 image tokens", (prompt(1, 35, 576, 12, 32000), 32000), {}
        yield "a batch, 64 image tokens", (prompt(3, 5, 64, 9, 1000), 1000), {}
        yield "left padding before the prompt", (prompt(2, 4, 8, 3, 5, pad=6), 5), {}

    return _compare("image_positions", fn, _image_mask_reference, cases())


def _attention(g: torch.Generator, batch: int = 2, layers: int = 6, tokens: int = 24) -> torch.Tensor:
    return (2 * torch.randn(batch, layers, tokens, generator=g)).softmax(-1) * torch.rand(batch, layers, 1, generator=g)


def top_k_share(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """Check ``fn(attention [B, layers, N], k) -> [B]``: the share of the image attention (averaged
    over layers) that the ``k`` most attended tokens hold (notebook 01)."""
    g = torch.Generator().manual_seed(3)

    def cases() -> Iterator[Case]:
        for k in (1, 5, 24):
            yield f"random attention, k={k}", (_attention(g), k), {}
        peaked = _attention(g)
        peaked[:, :, 7] += 2.0
        yield "one token draws most attention", (peaked, 1), {}
        yield "uniform attention", (torch.full((2, 3, 10), 0.05), 2), {}
        yield "k larger than the number of tokens", (_attention(g, 1, 2, 4), 9), {}

    return _compare("top_k_share", fn, ablation.top_k_share, cases())


def replace_image_tokens(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """Check ``fn(features [B, N, D], which bool [B, N]) -> [B, N, D]``: the rows where ``which`` is
    True set to zero, the others unchanged (notebook 02)."""
    g = torch.Generator().manual_seed(4)

    def cases() -> Iterator[Case]:
        features = torch.randn(2, 12, 8, generator=g)
        yield "a random set of tokens", (features, torch.rand(2, 12, generator=g) < 0.3), {}
        yield "no token", (features, torch.zeros(2, 12, dtype=torch.bool)), {}
        yield "every token", (features, torch.ones(2, 12, dtype=torch.bool)), {}
        yield "bfloat16 features", (features.bfloat16(), torch.rand(2, 12, generator=g) < 0.5), {}

    return _compare("replace_image_tokens", fn, masking.replace_image_tokens, cases())


def mcnemar(fn: Callable[[int, int], float]) -> str:
    """Check ``fn(only_a, only_b) -> p``: the two-sided exact McNemar p-value from the questions
    only method A gets right and those only B gets right (notebook 04)."""

    def cases() -> Iterator[Case]:
        for only_a, only_b in ((10, 3), (3, 10), (5, 0), (40, 50), (1, 1), (12, 12)):
            yield f"{only_a} vs {only_b} discordant questions", (only_a, only_b), {}
        yield "no discordant question", (0, 0), {}

    return _compare("mcnemar", fn, statistics.mcnemar, cases())


def _mme_reference(right: torch.Tensor) -> float:
    """MME's score of one subtask through the library's scorer, from ``right [images, 2]``."""
    items = [
        mme.MMEItem(f"image{i}.png", f"question {j}", "yes", "yes" if ok else "no")
        for i, pair in enumerate(right.tolist())
        for j, ok in enumerate(pair)
    ]
    return mme.subtask_scores(items)["score"]


def mme_score(fn: Callable[[torch.Tensor], float]) -> str:
    """Check ``fn(right bool [images, 2]) -> score``: MME's ``100·acc + 100·acc+`` of one subtask,
    where ``right[i, j]`` says whether question ``j`` of image ``i`` was answered right (notebook 05)."""
    g = torch.Generator().manual_seed(5)

    def cases() -> Iterator[Case]:
        yield "random answers", (torch.rand(30, 2, generator=g) < 0.7,), {}
        yield "every answer right", (torch.ones(10, 2, dtype=torch.bool),), {}
        yield "one question of each image right", (torch.tensor([[True, False], [False, True]] * 5),), {}
        yield "one image", (torch.tensor([[True, True]]),), {}

    return _compare("mme_score", fn, _mme_reference, cases())


def _wilson_reference(successes: int, n: int) -> tuple[float, float]:
    interval = statistics.wilson(successes, n)
    return interval.low, interval.high


def wilson(fn: Callable[[int, int], tuple[float, float]]) -> str:
    """Check ``fn(successes, n) -> (low, high)``: the 95 % Wilson interval of a proportion (notebook 06)."""

    def cases() -> Iterator[Case]:
        for successes, n in ((30, 100), (1, 20), (150, 200), (7, 7), (0, 12)):
            yield f"{successes} of {n}", (successes, n), {}

    return _compare("wilson", fn, _wilson_reference, cases())


def activation(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """Check ``fn(hidden [..., D]) -> float32 [..., D]``: VAR's ``phi(x) = |x / rms(x)|`` (notebook 07)."""
    g = torch.Generator().manual_seed(6)

    def cases() -> Iterator[Case]:
        yield "random hidden states", (torch.randn(2, 5, 16, generator=g),), {}
        massive = torch.randn(1, 4, 16, generator=g)
        massive[0, 0, 3] = 300.0
        yield "one massive activation", (massive,), {}
        yield "a zero row (rms 0)", (torch.zeros(3, 8),), {}
        yield "float16 input", (torch.randn(2, 16, generator=g).half(),), {}

    return _compare("activation", fn, sinks.activation, cases())
