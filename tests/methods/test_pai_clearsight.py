"""PAI and ClearSight: batched interventions against per-sample references in the official code's style."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import QUESTIONS, eager_scores, row

from avisc_lib.methods import get
from avisc_lib.methods.base import layer_range
from avisc_lib.methods.pai import pai_refine
from avisc_lib.models import compat
from avisc_lib.models.inputs import embed_prompt, encode
from avisc_lib.world.scenes import make_scene

REFERENCE = "test_reference_pai_clearsight"
# What the reference attention edits: method, layers, image slice [start, end), and the method's numbers.
_SPEC: dict = {}


def _reference(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Eager attention of ONE unpadded sample, edited by slices as PAI's and ClearSight's code do."""
    _, heads, num_queries, dim = query.shape
    num_keys = key.shape[2]
    s, values = eager_scores(query, key, value)
    start, end = _SPEC["image"]
    if module.layer_idx in _SPEC["layers"]:
        if _SPEC["method"] == "pai" and (num_queries == 1 or _SPEC["gamma"] == 1):
            s[:, :, -1, start:end] = s[:, :, -1, start:end].abs() * _SPEC["alpha"] + s[:, :, -1, start:end]
        if _SPEC["method"] == "clearsight":
            rows = slice(end, None) if num_queries > end else slice(None)
            s[:, :, rows, start:end] = _SPEC["enhance"] * s[:, :, rows, start:end]
            s[:, :, rows, :start] = _SPEC["suppress"] * s[:, :, rows, :start]
    causal = torch.ones(num_queries, num_keys).tril(num_keys - num_queries).bool()
    probs = torch.softmax(s.masked_fill(~causal, -math.inf), dim=-1)
    return (probs @ values).transpose(1, 2).to(query.dtype), None


compat.register_attention(REFERENCE, _reference)


def _greedy(model, prompt, steps: int, tokens: torch.Tensor | None = None):
    """Prefill + ``steps`` cached steps feeding ``tokens [B, steps]`` (else the argmax).

    Returns ``(logits [B, steps+1, V], tokens)``."""
    logits, cache = compat.language_model_forward(model, prompt.embeds, prompt.attention_mask)
    mask, out, chosen = prompt.attention_mask, [logits], []
    for step in range(steps):
        token = logits.argmax(-1) if tokens is None else tokens[:, step]
        chosen.append(token)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        logits, cache = compat.language_model_forward(model, model.get_input_embeddings()(token)[:, None], mask, cache)
        out.append(logits)
    return torch.stack(out, 1), torch.stack(chosen, 1)


def _batch(case, n: int = 3):
    """``n`` left-padded samples with LLaVA-1.5's system prompt where the model has one."""
    style = "llava_v1" if case.model.config.model_type == "llava" else None
    images = [make_scene("test", i).image for i in range(n)]
    return encode(case.model, case.processor, images, [QUESTIONS[i % len(QUESTIONS)] for i in range(n)], style)


def _settings(**overrides):
    values = {
        "pai_alpha": 0.5,
        "pai_gamma": 1.0,
        "pai_layers": None,
        "clearsight_enhance": 1.6,
        "clearsight_suppress": 0.7,
        "clearsight_layers": None,
    }
    return SimpleNamespace(**{**values, **overrides})


CASES = [
    ("pai", {"pai_gamma": 1.0}),
    ("pai", {"pai_gamma": 1.1, "pai_layers": (1, 3)}),
    ("clearsight", {}),
    ("clearsight", {"clearsight_layers": (0, 2)}),
]


@pytest.mark.parametrize("method,overrides", CASES)
@pytest.mark.parametrize("name", ["llava_gqa", "embedded"])
def test_batched_equals_per_sample_reference(request, name, method, overrides):
    case = request.getfixturevalue(f"{name}_case")
    model, inputs = case.model, _batch(case)
    settings = _settings(**overrides)
    prompt = embed_prompt(model, inputs)
    assert not bool(prompt.attention_mask.all()), "the batch must be left-padded"
    depth = model.config.get_text_config().num_hidden_layers
    layers = settings.pai_layers if method == "pai" else settings.clearsight_layers
    paper = (2, 32) if method == "pai" else (9, 15)  # the official scripts' ranges for 32 layers
    layers = layer_range(layers, paper, depth, "layers")  # the scaling itself: test_default_layers_...
    with torch.no_grad():
        with get(method).intervention(model, prompt, settings):
            got, tokens = _greedy(model, prompt, 3)
        plain, _ = _greedy(model, prompt, 3, tokens)
        for b in range(3):
            single = embed_prompt(model, row(inputs, b))
            image = torch.nonzero(single.image_mask[0]).flatten()
            _SPEC.update(
                method=method,
                layers=set(layers),
                image=(int(image[0]), int(image[-1]) + 1),
                alpha=settings.pai_alpha,
                gamma=settings.pai_gamma,
                enhance=settings.clearsight_enhance,
                suppress=settings.clearsight_suppress,
            )
            with compat.text_attention(model, REFERENCE):
                expected, _ = _greedy(model, single, 3, tokens[b : b + 1])
            # float32 matmuls of a left-padded batch and of one row take different kernel blockings on
            # AVX-512 hosts: logits then differ by up to ~1.5e-5; the intervention moves them > 1e-3.
            torch.testing.assert_close(got[b : b + 1], expected, atol=5e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3, "the intervention must change the logits"


@pytest.mark.parametrize(
    "method,neutral",
    [
        ("pai", {"pai_alpha": 0.0, "pai_gamma": 1.0}),
        ("pai", {"pai_alpha": 0.0, "pai_gamma": 1.1}),
        ("clearsight", {"clearsight_enhance": 1.0, "clearsight_suppress": 1.0}),
    ],
)
def test_neutral_values_give_greedy_exactly(embedded_case, method, neutral):
    model = embedded_case.model
    prompt = embed_prompt(model, _batch(embedded_case))
    with torch.no_grad():
        plain, plain_tokens = _greedy(model, prompt, 6)
        with get(method).intervention(model, prompt, _settings(**neutral)):
            got, tokens = _greedy(model, prompt, 6)
    assert torch.equal(tokens, plain_tokens) and torch.equal(got, plain)


def test_default_layers_are_the_official_ranges_on_32_layers():
    assert layer_range(None, (2, 32), 32, "pai_layers") == tuple(range(2, 32))
    assert layer_range(None, (9, 15), 32, "clearsight_layers") == (9, 10, 11, 12, 13, 14)
    assert layer_range(None, (9, 15), 4, "clearsight_layers") == (1,)


@pytest.mark.parametrize(
    "method,overrides,message",
    [
        ("pai", {"pai_alpha": -0.1}, "pai_alpha must be a finite number >= 0, got -0.1"),
        ("pai", {"pai_alpha": float("inf")}, "pai_alpha must be a finite number >= 0"),
        ("pai", {"pai_gamma": 0.5}, "pai_gamma must be a finite number >= 1, got 0.5"),
        ("pai", {"pai_layers": (3, 2)}, r"pai_layers must be None or \(start, end\) with 0 <= start < end <= 3"),
        ("pai", {"pai_layers": (0, 4)}, "pai_layers must be None or"),
        ("pai", {"pai_layers": "2,3"}, "pai_layers must be None or"),
        ("clearsight", {"clearsight_enhance": 0.0}, "clearsight_enhance must be a finite number > 0, got 0.0"),
        ("clearsight", {"clearsight_suppress": -1}, "clearsight_suppress must be a finite number > 0"),
        ("clearsight", {"clearsight_layers": (1, 1)}, "clearsight_layers must be None or"),
    ],
)
def test_bad_hyper_parameters_raise(llava_case, method, overrides, message):
    prompt = embed_prompt(llava_case.model, llava_case.batch(2))
    with pytest.raises(ValueError, match=message):
        get(method).intervention(llava_case.model, prompt, _settings(**overrides))


def test_pai_refine_formula_and_cut():
    p = torch.tensor([[0.5, 0.3, 0.16, 0.04]])  # image branch
    q = torch.tensor([[0.25, 0.25, 0.25, 0.25]])  # text-only branch
    got = pai_refine(p.log() + 3.0, q.log() - 1.0, gamma=2.0)  # logits up to a constant
    expected = torch.tensor(
        [
            [
                2 * math.log(0.5) - math.log(0.25),
                2 * math.log(0.3) - math.log(0.25),
                2 * math.log(0.16) - math.log(0.25),
                -math.inf,
            ]
        ]
    )  # 0.04 < 0.1 * 0.5: cut
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(pai_refine(p.log(), q.log(), gamma=1.0), p.log())  # no cut at gamma = 1
