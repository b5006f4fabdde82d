"""Checks for the notebooks' exercises: your function against the library's, on random and edge cases.

    from avisc_lib.course import check
    check.contrast_logits(my_contrast)     # "contrast_logits: all 7 cases agree" or an AssertionError
    check.plausibility_cut(my_cut)         # that names the first case where yours differs
    check.select_blind_tokens(my_blind)

Each check calls your function and the library's (:func:`avisc_lib.scores.contrast_logits`,
:func:`avisc_lib.scores.plausibility_cut`, :func:`avisc_lib.select_blind_tokens`) with the same
seeded inputs, including the edge cases that trip first attempts (α = 0, β = 1, ties, -inf logits,
uniform attention), and compares the outputs exactly for masks and to float tolerance for scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .. import scores
from ..tokens.blind import select_blind_tokens as library_blind_tokens

Case = tuple[str, tuple, dict]  # (description, positional arguments, keyword arguments)


def _compare(name: str, yours: Callable, reference: Callable, cases: Iterator[Case]) -> str:
    count = 0
    for what, args, kwargs in cases:
        expected = reference(*args, **kwargs)
        got = yours(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
            found = f"{got.dtype} of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
            wanted = f"{expected.dtype} of shape {tuple(expected.shape)}"
            raise AssertionError(f"{name}, case {what!r}: expected a tensor {wanted}, got {found}")
        try:
            torch.testing.assert_close(got, expected, equal_nan=True)
        except AssertionError as error:
            raise AssertionError(f"{name}, case {what!r}: your output differs from the library's.\n{error}") from None
        count += 1
    message = f"{name}: all {count} cases agree"
    print(message)
    return message


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
