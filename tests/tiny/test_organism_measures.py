"""The organism table's arithmetic: the width-scaled sink threshold, paired intervals, Jaccard."""

import math

import numpy as np
import pytest
import torch

from avisc_lib.tiny.organism import jaccard, paired_difference, sink_tau


def test_sink_tau_keeps_vars_fraction_of_the_ceiling():
    assert sink_tau(4096) == pytest.approx(20.0)
    assert sink_tau(128) / math.sqrt(128) == pytest.approx(20.0 / 64)


def test_paired_difference_interval():
    a = np.array([1] * 60 + [0] * 40)
    same = paired_difference(a, a)
    assert (same["mean"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    better = paired_difference(np.ones(100, bool), a)  # 40 questions fixed, none broken
    assert better["mean"] == pytest.approx(0.4) and 0.3 < better["low"] < 0.4 < better["high"] < 0.5


def test_jaccard_rows():
    a = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert jaccard(a, b) == pytest.approx((1 / 3 + 0) / 2)
