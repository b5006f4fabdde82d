"""The organism table's arithmetic (the width-scaled sink threshold, paired intervals, Jaccard) and
the per-layer language profile, checked against the library's own attention and sink readers."""

import math

import numpy as np
import pytest
import torch

from avisc_lib.hooks.capture import image_attention
from avisc_lib.models.inputs import encode
from avisc_lib.tiny.organism import (
    OFFSETS,
    jaccard,
    language_profile,
    paired_difference,
    sink_placement,
    sink_tau,
)
from avisc_lib.tokens.sinks import activation
from avisc_lib.world import questions as Q


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


def test_sink_placement_counts_sinks_and_their_background_share():
    on_object = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    sinks = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)  # 2 on background, 1 on an object
    placed = sink_placement(sinks, on_object)
    assert placed == {"sinks_per_image": 1.5, "sinks_on_background": pytest.approx(2 / 3), "background_tokens": 0.625}
    assert sink_placement(torch.zeros_like(sinks), on_object)["sinks_on_background"] == 0.0


def test_language_profile_agrees_with_the_attention_reader(embedded_case):
    model, processor = embedded_case.model, embedded_case.processor
    profile = language_profile(model, processor, n_scenes=3)
    assert [row["layer"] for row in profile] == list(range(model.config.text_config.num_hidden_layers))
    items = Q.existence_set("test", 3, start=OFFSETS["attention"])
    inputs = encode(model, processor, [s.image for s, _ in items], [q["question"] for _, q in items])
    per_layer = image_attention(model, inputs)  # [B, layers, N]
    for row, attention in zip(profile, per_layer.unbind(1)):
        assert row["image"] == pytest.approx(float(attention.sum(1).mean()), abs=1e-4)
        top5 = attention.topk(5, 1).values.sum(1) / attention.sum(1)
        assert row["image_top5"] == pytest.approx(float(top5.mean()), abs=1e-4)
        assert 0 <= row["bos"] <= 1 - row["image"] + 1e-4 and 0 <= row["top1_on_background"] <= 1
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    bos = inputs["attention_mask"].int().argmax(-1)
    for row, states in zip(profile, hidden):
        expected = activation(states).amax(-1)[torch.arange(len(items)), bos].mean()
        assert row["phi_bos"] == pytest.approx(float(expected), abs=1e-3)
