"""Replacing image-token embeddings: exactly the chosen rows, hooks removed, both paths agree."""

from __future__ import annotations

import pytest
import torch

from avisc_lib.generation import answer_logits
from avisc_lib.models import compat
from avisc_lib.models.inputs import embed_prompt
from avisc_lib.tokens.masking import mask_image_tokens, replace_image_tokens


def _which(batch: int, tokens: int) -> torch.Tensor:
    which = torch.zeros(batch, tokens, dtype=torch.bool)
    which[0, [0, 3]] = True
    which[-1, -1] = True
    return which


@pytest.mark.parametrize("scheme,value", [("zeros", 0.0), ("ones", 1.0)])
def test_replaces_exactly_the_chosen_rows(scheme, value):
    features = torch.randn(2, 5, 3)
    which = _which(2, 5)
    out = replace_image_tokens(features, which, scheme)
    assert (out[which] == value).all()
    assert torch.equal(out[~which], features[~which])


def test_noise_scheme_draws_fresh_values_only_in_chosen_rows():
    features = torch.zeros(2, 5, 64)
    which = _which(2, 5)
    out = replace_image_tokens(features, which, "noise")
    assert (out[~which] == 0).all() and out[which].std() > 0.5


def test_unknown_scheme_and_wrong_shape():
    with pytest.raises(ValueError, match="unknown masking scheme 'mask'"):
        replace_image_tokens(torch.zeros(1, 4, 2), torch.zeros(1, 4, dtype=torch.bool), "mask")
    with pytest.raises(ValueError, match=r"mask shape \(1, 3\) does not match image tokens \(1, 4\)"):
        replace_image_tokens(torch.zeros(1, 4, 2), torch.zeros(1, 3, dtype=torch.bool))


def _projector_hooks(model) -> int:
    return len(compat.projector(model)._forward_hooks)


def test_hook_zeroes_projector_rows_and_is_removed(case):
    model, inputs = case.model, case.batch(2)
    plain = compat.image_features(model, inputs)
    which = _which(*plain.shape[:2])
    with mask_image_tokens(model, which):
        assert _projector_hooks(model) == 1
        masked = compat.image_features(model, inputs)
    assert _projector_hooks(model) == 0
    assert (masked[which] == 0).all() and (plain[which] != 0).any()
    torch.testing.assert_close(masked[~which], plain[~which])


def test_hook_is_removed_after_an_exception(llava_case):
    model = llava_case.model
    with pytest.raises(RuntimeError, match="boom"), mask_image_tokens(model, _which(1, 64)):
        raise RuntimeError("boom")
    assert _projector_hooks(model) == 0


def test_hook_and_precomputed_features_give_the_same_logits(case):
    """The projector hook inside the model's own forward == replacing shared features (decode's path)."""
    model, inputs = case.model, case.batch(2)
    which = _which(2, embed_prompt(model, inputs).features.shape[1])
    token_ids = list(range(model.config.get_text_config().vocab_size))
    with torch.no_grad(), mask_image_tokens(model, which):
        hooked = model(**inputs, logits_to_keep=1)
    logits = getattr(hooked, "language_model_outputs", hooked).logits[:, -1]
    shared = answer_logits(model, inputs, token_ids, replace=which)
    unmasked = answer_logits(model, inputs, token_ids)
    # compare the unpadded row: the model's own forward counts positions from 0 on every row
    full = inputs["attention_mask"].bool().all(-1)
    assert full.any()
    torch.testing.assert_close(shared[full], logits[full].float(), atol=1e-5, rtol=1e-5)
    assert (shared - unmasked).abs().max() > 1e-3
