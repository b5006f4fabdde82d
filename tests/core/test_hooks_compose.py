"""Hooks stack: attention read inside or around an edit (a capture, ONLY's side read) is the edited
attention, whichever block is entered first; leaving a block restores what was there before."""

from __future__ import annotations

import pytest
import torch

from avisc_lib.hooks import AttentionEdit, edit_attention, record_last_query_attention
from avisc_lib.methods.only import only
from avisc_lib.models import compat
from avisc_lib.models.inputs import embed_prompt

FACTOR = 3.0  # image-token probabilities x 3, rows renormalised: an edit whose effect on layer 0 is known


def _expected(probs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``probs [B, H, Lk]`` with the image keys ``image [B, Lk]`` scaled by FACTOR and each row renormalised."""
    scaled = torch.where(image[:, None], probs * FACTOR, probs)
    return scaled / scaled.sum(-1, keepdim=True)


def _forward(model, prompt):
    return compat.language_model_forward(model, prompt.embeds, prompt.attention_mask)


@pytest.fixture
def case(llava_case):
    model = llava_case.model
    prompt = embed_prompt(model, llava_case.batch(2))
    with torch.no_grad(), record_last_query_attention(model) as rows:
        _forward(model, prompt)
    edit = AttentionEdit(prompt.image_mask, "scale_probs", FACTOR, layers=(0,))
    return model, prompt, rows, edit


@pytest.mark.parametrize("capture_first", [False, True])
def test_capture_records_the_edited_attention(case, capture_first):
    model, prompt, plain, edit = case
    blocks = [lambda: record_last_query_attention(model), lambda: edit_attention(model, [edit])]
    if not capture_first:
        blocks.reverse()
    with torch.no_grad(), blocks[0]() as outer, blocks[1]() as inner:
        _forward(model, prompt)
    rows = outer if capture_first else inner
    expected = _expected(plain[0], prompt.image_mask)  # layer 0's input is the same with or without the edit
    assert torch.allclose(rows[0], expected, atol=1e-6)
    assert not torch.allclose(rows[0], plain[0], atol=1e-3)
    assert not torch.allclose(rows[1], plain[1], atol=1e-4)  # layer 1 saw an edited layer 0


def test_capture_alone_records_sdpa_attention_after_an_edit_ends(case):
    model, prompt, plain, edit = case
    with torch.no_grad():
        with edit_attention(model, [edit]):
            _forward(model, prompt)
        with record_last_query_attention(model) as rows:
            _forward(model, prompt)
    assert all(torch.equal(rows[layer], plain[layer]) for layer in plain)
    assert model.config.get_text_config()._attn_implementation == "sdpa"


def test_only_side_read_sees_an_edit_nested_inside_it(case):
    model, prompt, plain, edit = case
    with torch.no_grad(), only(model, prompt, layer=0) as branch:
        _forward(model, prompt)
        unedited = branch.logits.clone()
        with edit_attention(model, [edit]), record_last_query_attention(model) as rows:
            _forward(model, prompt)
        edited = branch.logits.clone()
    assert torch.allclose(rows[0], _expected(plain[0], prompt.image_mask), atol=1e-6)
    assert not torch.allclose(edited, unedited, atol=1e-4)  # ONLY's branch read the edited layer-0 attention
