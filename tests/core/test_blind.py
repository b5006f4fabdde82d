"""select_blind_tokens on a hand-computed example, its edge cases and errors."""

from __future__ import annotations

import pytest
import torch

from avisc_lib.tokens.blind import select_blind_tokens, select_layers

# One sample, 3 layers, 4 image tokens; dyadic values so every sum below is exact.
# Layer masses 0.5, 0.3125, 0.1875 (total 1), so the shares equal the masses.
EXAMPLE = torch.tensor(
    [
        [
            [0.125, 0.25, 0.0625, 0.0625],
            [0.03125, 0.03125, 0.03125, 0.21875],
            [0.0625, 0.0625, 0.0625, 0.0],
        ]
    ]
)


@pytest.mark.parametrize(
    "layer_gamma,lam,layers,blind",
    [
        # gamma 0.5: layer 0 alone reaches it. a = [.125, .25, .0625, .0625], mean .125,
        # std = sqrt((0 + .125^2 + 2 * .0625^2) / 3) = .0884 -> threshold .2134 -> only token 1.
        (0.5, 1.0, [True, False, False], [False, True, False, False]),
        # gamma 0.6: 0.5 < 0.6 <= 0.8125 -> layers 0 and 1. a = [.078125, .140625, .046875, .140625],
        # mean .1015625, std .046875: lam 1 -> .1484375, nothing blind; lam 0.5 -> .125, tokens 1 and 3.
        (0.6, 1.0, [True, True, False], [False, False, False, False]),
        (0.6, 0.5, [True, True, False], [False, True, False, True]),
        # gamma 1: all layers. a = [.21875, .34375, .15625, .28125] / 3, mean 1/12 -> lam 0: tokens 1, 3.
        (1.0, 0.0, [True, True, True], [False, True, False, True]),
    ],
)
def test_hand_computed_example(layer_gamma, lam, layers, blind):
    assert select_layers(EXAMPLE, layer_gamma).tolist() == [layers]
    assert select_blind_tokens(EXAMPLE, layer_gamma, lam).tolist() == [blind]


def test_samples_are_independent():
    other = EXAMPLE[:, [2, 0, 1]].flip(-1) * 3.0  # other layer ranking, other scale
    batch = torch.cat([EXAMPLE, other])
    for lam in (0.0, 0.5, 1.0):
        together = select_blind_tokens(batch, 0.6, lam)
        assert torch.equal(together[0], select_blind_tokens(EXAMPLE, 0.6, lam)[0])
        assert torch.equal(together[1], select_blind_tokens(other, 0.6, lam)[0])


def test_all_layers_despite_rounding():
    # ten shares of 0.1 add up to 0.99999994 in float32; gamma = 1 must still keep all ten layers
    attention = torch.full((1, 10, 5), 0.1)
    assert select_layers(attention, 1.0).all()
    assert select_layers(attention, 0.3).sum() == 3


def test_equal_attention_makes_every_token_blind():
    assert select_blind_tokens(torch.full((2, 3, 6), 0.1), lam=1.0).all()


def test_large_lambda_leaves_no_blind_token():
    assert not select_blind_tokens(EXAMPLE, lam=100.0).any()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"layer_gamma": 0.0}, "layer_gamma must be in"),
        ({"layer_gamma": 1.5}, "layer_gamma must be in"),
        ({"lam": float("nan")}, "lam must be finite"),
    ],
)
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_blind_tokens(EXAMPLE, **kwargs)


def test_needs_a_layer_axis_and_two_tokens():
    with pytest.raises(ValueError, match=r"\[B, layers, N\] with N >= 2"):
        select_blind_tokens(EXAMPLE[0])
    with pytest.raises(ValueError, match=r"\[B, layers, N\] with N >= 2"):
        select_blind_tokens(EXAMPLE[..., :1])
