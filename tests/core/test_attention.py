"""image_attention against eager output_attentions; the recorder switches only the LM, and back."""

from __future__ import annotations

import pytest
import torch
from conftest import Case, row

from avisc_lib.hooks.capture import image_attention, last_query_probs, record_last_query_attention
from avisc_lib.hooks.stack import DISPATCHER
from avisc_lib.tiny.build import LMSize, build_model, build_processor


def eager_image_attention(case, inputs) -> torch.Tensor:
    """``[layers, N]``: eager ``output_attentions``, last row, head mean, image columns (one sample)."""
    with torch.no_grad():
        out = case.eager(**inputs, output_attentions=True)
    attentions = getattr(out, "language_model_outputs", out).attentions
    image = inputs["input_ids"][0] == case.model.config.image_token_id
    return torch.stack([a[0, :, -1].float().mean(0)[image] for a in attentions])


def test_matches_eager_on_a_left_padded_batch(case):
    inputs = case.batch(4)
    got = image_attention(case.model, inputs)
    layers = case.model.config.get_text_config().num_hidden_layers
    n_image = int((inputs["input_ids"][0] == case.model.config.image_token_id).sum())
    assert got.shape == (4, layers, n_image) and got.dtype == torch.float32
    for b in range(4):
        torch.testing.assert_close(got[b], eager_image_attention(case, row(inputs, b)), atol=1e-5, rtol=0)


def eager_language_model_attention(case, inputs) -> torch.Tensor:
    """:func:`eager_image_attention` from the language model itself, called on the embeddings LLaVA
    hands it (LLaVA's own forward cannot return GPT-2's attentions: its output class has no field
    for GPT-2's ``cross_attentions``)."""
    lm = case.eager.model.language_model
    seen = {}
    hook = lm.register_forward_pre_hook(lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        case.eager(**inputs)
        hook.remove()
        attentions = lm(inputs_embeds=seen["inputs_embeds"], output_attentions=True).attentions
    image = inputs["input_ids"][0] == case.model.config.image_token_id
    return torch.stack([a[0, :, -1].float().mean(0)[image] for a in attentions])


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2"])
def test_matches_eager_with_other_language_model_families(family):
    """The organism search's other families (GPT-2: learned absolute positions, blocks named ``h``)
    go through the same dispatcher; left-padded rows get the positions they would have alone."""
    processor = build_processor()
    model = build_model(processor.tokenizer, lm=LMSize(2, 64, 2, family)).eval()
    case = Case(family, model, processor)
    inputs = case.batch(3)
    got = image_attention(model, inputs)
    for b in range(3):
        torch.testing.assert_close(got[b], eager_language_model_attention(case, row(inputs, b)), atol=1e-5, rtol=0)


def test_padding_changes_nothing_but_is_not_ignored(llava_case):
    """A row's result is its own; with the padding mask dropped it would not be."""
    inputs = llava_case.batch(4)
    alone = image_attention(llava_case.model, row(inputs, 1))
    torch.testing.assert_close(image_attention(llava_case.model, inputs)[1:2], alone, atol=1e-6, rtol=0)
    unmasked = {**inputs, "attention_mask": torch.ones_like(inputs["attention_mask"])}
    assert (image_attention(llava_case.model, unmasked)[1:2] - alone).abs().max() > 1e-4


def test_only_the_language_model_records_and_is_restored(instructblip_case):
    model, inputs = instructblip_case.model, instructblip_case.batch(2)
    before = {k: getattr(model.config, k)._attn_implementation for k in model.config.sub_configs}
    with record_last_query_attention(model) as rows:
        during = {k: getattr(model.config, k)._attn_implementation for k in model.config.sub_configs}
        with torch.no_grad():
            model(**inputs)
    assert during == {**before, "text_config": DISPATCHER}
    assert sorted(rows) == list(range(model.config.text_config.num_hidden_layers))
    heads, length = model.config.text_config.num_attention_heads, inputs["input_ids"].shape[1]
    assert all(r.shape == (2, heads, length) for r in rows.values())  # one row per head, not L x L
    assert {k: getattr(model.config, k)._attn_implementation for k in model.config.sub_configs} == before


def test_restored_after_an_exception(llava_case):
    model = llava_case.model
    with pytest.raises(RuntimeError, match="boom"), record_last_query_attention(model):
        raise RuntimeError("boom")
    assert model.config.text_config._attn_implementation == "sdpa"
    with torch.no_grad():  # and nothing is recorded outside the block
        assert image_attention(model, llava_case.batch(1)).shape[0] == 1


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_last_query_probs_with_grouped_heads(mask_kind):
    torch.manual_seed(0)
    query, key = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 7, 8)
    keep = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    keep[0, ..., :3] = False
    mask = {"none": None, "bool": keep, "float": torch.zeros(keep.shape).masked_fill(~keep, -1e9)}[mask_kind]
    scores = torch.einsum("bhd,bhld->bhl", query[:, :, -1], key.repeat_interleave(2, dim=1)) * 0.3
    if mask is not None:
        scores = scores.masked_fill(~keep[:, :, -1], float("-inf"))
    torch.testing.assert_close(last_query_probs(query, key, mask, 0.3), scores.softmax(-1))
