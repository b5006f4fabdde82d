"""VAR's sink tokens: a constructed model with a known massive dimension, a reference from
transformers' own hidden states, per-sample batching, and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import row

from avisc_lib.models import compat
from avisc_lib.tokens.sinks import activation, find_sinks, sink_tokens

MASSIVE = 1000.0
BOS_DIM, OTHER_DIM = 5, 17


def massive_model(case, image_dim: int | None):
    """A copy of ``case``'s model whose BOS embedding is MASSIVE in BOS_DIM and, when ``image_dim``
    is given, whose projector maps every image to MASSIVE in ``image_dim`` (weights zeroed)."""
    model = copy.deepcopy(case.model)
    bos = model.config.get_text_config().bos_token_id
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[bos] = 0.0
        embedding[bos, BOS_DIM] = MASSIVE
        if image_dim is not None:
            last = compat.projector(model).linear_2
            last.weight.zero_()
            last.bias.zero_()
            last.bias[image_dim] = MASSIVE
    return model


def reference_phi(hidden: torch.Tensor) -> torch.Tensor:
    """|x| / sqrt(mean(x^2) + 1e-6), written out per the official DimProspector.rmsnorm."""
    hidden = hidden.double()
    return hidden.abs() / (hidden.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()


def test_activation_matches_written_out_formula():
    hidden = torch.randn(2, 3, 8) * torch.tensor([1.0] * 7 + [50.0])
    torch.testing.assert_close(activation(hidden).double(), reference_phi(hidden), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("image_dim,image_sinks", [(BOS_DIM, True), (OTHER_DIM, False), (None, False)])
def test_constructed_massive_dimension(llava_case, image_dim, image_sinks):
    model = massive_model(llava_case, image_dim)
    inputs = llava_case.batch(2)
    # A one-hot hidden state of size D has phi = sqrt(D) in its dimension: 8 for D = 64.
    sinks = find_sinks(model, inputs, tau=6.0)
    assert sinks.layers == (2,)  # 3 layers: the official search starts at layer 2
    assert sinks.dimensions() == [BOS_DIM]
    bos = inputs["input_ids"] == model.config.get_text_config().bos_token_id
    assert torch.equal(sinks.tokens[:, 0] & bos, bos)  # BOS is its own sink
    assert bool(sinks.mask.all()) == image_sinks and bool(sinks.mask.any()) == image_sinks
    assert sink_tokens(model, inputs, tau=6.0).shape == (2, int(sinks.image_mask[0].sum()))


def test_fixed_dims_replace_bos_dimensions(llava_case):
    model = massive_model(llava_case, OTHER_DIM)
    inputs = llava_case.batch(2)
    sinks = find_sinks(model, inputs, tau=6.0, dims=[OTHER_DIM])
    assert sinks.dimensions() == [OTHER_DIM]
    assert sinks.mask.all()
    bos = inputs["input_ids"] == model.config.get_text_config().bos_token_id
    assert not (sinks.tokens[:, 0] & bos).any()


def test_matches_hidden_states_of_transformers(embedded_case):
    """Reference: transformers' ``output_hidden_states`` (input of layer l = hidden_states[l]) and a
    threshold chosen from the data so that some tokens pass and some do not."""
    model, inputs = embedded_case.model, embedded_case.batch(3)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    layers = [1, 3]
    phis = [reference_phi(out.hidden_states[layer]) for layer in layers]
    bos = (inputs["input_ids"] == model.config.get_text_config().bos_token_id).int().argmax(-1)
    tau = float(phis[0][torch.arange(3), bos].max(-1).values.min()) - 0.5  # every BOS has a dimension above it
    sinks = find_sinks(model, inputs, tau=tau, layers=layers)
    valid = inputs["attention_mask"].bool()
    for i, phi in enumerate(phis):
        dims = phi[torch.arange(3), bos] > tau
        expected = ((phi > tau) & dims[:, None]).any(-1) & valid
        assert torch.equal(sinks.dims[:, i], dims)
        assert torch.equal(sinks.tokens[:, i], expected)
    assert sinks.tokens.any() and not sinks.tokens[valid[:, None].expand_as(sinks.tokens)].all()


def test_batched_equals_per_sample(llava_gqa_case):
    model, inputs = llava_gqa_case.model, llava_gqa_case.batch(4)
    tau = 3.0
    together = find_sinks(model, inputs, tau=tau, layers=[0, 1, 2])
    assert together.tokens.any()
    for b in range(4):
        alone = find_sinks(model, row(inputs, b), tau=tau, layers=[0, 1, 2])
        real = inputs["attention_mask"][b].bool()
        assert torch.equal(together.tokens[b][:, real], alone.tokens[0])
        assert torch.equal(together.mask[b], alone.mask[0])
        assert torch.equal(together.dims[b], alone.dims[0])


def test_embedded_model_has_no_massive_activation_at_the_paper_threshold(embedded_case):
    # phi <= sqrt(D) for any vector (sqrt(128) = 11.3 here), so tau = 20 cannot be reached.
    sinks = find_sinks(embedded_case.model, embedded_case.batch(2))
    assert sinks.dimensions() == [] and not sinks.tokens.any()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tau": 0.0}, "tau must be"),
        ({"tau": float("nan")}, "tau must be"),
        ({"tau": float("inf")}, "tau must be"),
        ({"layers": [3]}, r"layers must be .* \[0, 2\]"),
        ({"layers": []}, "layers must be"),
        ({"dims": [64]}, r"dims must be .* \[0, 63\]"),
    ],
)
def test_errors(llava_case, kwargs, message):
    with pytest.raises(ValueError, match=message):
        find_sinks(llava_case.model, llava_case.batch(1), **kwargs)


@pytest.mark.parametrize("name", ["llava", "instructblip"])
def test_bos_is_the_first_text_token_after_padding_and_query_tokens(request, name):
    from avisc_lib.models.inputs import embed_prompt
    from avisc_lib.tokens.sinks import bos_positions

    case = request.getfixturevalue(f"{name}_case")
    inputs = case.batch(3)
    padding = (inputs["attention_mask"] == 0).sum(-1)
    # LLaVA: BOS opens the text; InstructBLIP: the 32 query tokens come first, then BOS
    queries = 0 if name == "llava" else int((inputs["input_ids"][0] == case.model.config.image_token_id).sum())
    assert bos_positions(embed_prompt(case.model, inputs)).tolist() == (padding + queries).tolist()


def test_a_model_too_shallow_to_search_finds_no_sinks(llava_case):
    import copy

    from avisc_lib.tokens import sinks as S

    model = copy.deepcopy(llava_case.model)
    model.config.get_text_config().num_hidden_layers = 2  # VAR searches layers 2 .. L-1: none
    model.model.language_model.layers = model.model.language_model.layers[:2]
    inputs = llava_case.batch(2)
    found = S.find_sinks(model, inputs)
    image_tokens = int((inputs["input_ids"][0] == model.config.image_token_id).sum())
    assert found.layers == () and found.dimensions() == []
    assert found.mask.shape == (2, image_tokens) and not found.mask.any()
