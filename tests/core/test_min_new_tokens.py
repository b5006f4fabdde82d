"""``decode(min_new_tokens=...)``: EOS banned for the first steps, as HF's ``min_new_tokens``.

The model is the seeded tiny LLaVA of conftest with its EOS id moved to the token it would say
first, so without the ban the answer ends at once.
"""

import copy

import pytest
import torch

from avisc_lib.decoding import decode
from avisc_lib.scores import ban_tokens

NEG = float("-inf")


def with_eos(model, eos: int):
    """A copy of ``model`` whose EOS id is ``eos``."""
    model = copy.deepcopy(model)
    model.generation_config.eos_token_id = eos
    model.config.text_config.eos_token_id = eos
    return model


@pytest.fixture(scope="module")
def eos_first(llava_case):
    """``(model whose first greedy token for sample 0 is its EOS, inputs of 2 samples, EOS id)``."""
    inputs = llava_case.batch(2)
    with torch.no_grad():
        eos = int(llava_case.model(**inputs).logits[0, -1].argmax())
    return with_eos(llava_case.model, eos), inputs, eos


def test_without_the_ban_the_answer_is_eos_alone(eos_first):
    model, inputs, eos = eos_first
    tokens = decode(model, {k: v[:1] for k, v in inputs.items()}, method="greedy", max_new_tokens=4)
    assert tokens.tolist() == [[eos]]


@pytest.mark.parametrize("min_new_tokens", [1, 2])
def test_greedy_matches_hf_generate(eos_first, min_new_tokens):
    model, inputs, eos = eos_first
    ours = decode(model, inputs, method="greedy", max_new_tokens=3, min_new_tokens=min_new_tokens)
    hf = model.generate(
        **inputs,
        do_sample=False,
        max_new_tokens=3,
        min_new_tokens=min_new_tokens,
        eos_token_id=eos,
        pad_token_id=model.generation_config.pad_token_id,
    )
    hf = hf[:, inputs["input_ids"].shape[1] :]
    assert ours.shape[1] >= min_new_tokens + 1
    assert (ours[:, :min_new_tokens] != eos).all()
    assert ours[:, :3].tolist() == hf[:, : ours.shape[1]].tolist()


def test_first_token_is_the_best_other_token(eos_first):
    model, inputs, eos = eos_first
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
    expected = logits.index_fill(-1, torch.tensor([eos]), NEG).argmax(-1)
    tokens = decode(model, inputs, method="greedy", max_new_tokens=1, min_new_tokens=1)
    assert tokens[:, 0].tolist() == expected.tolist()


@pytest.mark.parametrize("method", ["sample", "avisc", "vcd", "m3id"])
def test_sampled_first_tokens_are_never_eos(llava_case, method):
    inputs = llava_case.batch(2)
    argmax = "greedy" if method == "sample" else method
    eos = int(decode(llava_case.model, inputs, method=argmax, max_new_tokens=1, seed=0)[0, 0])  # its argmax
    model = with_eos(llava_case.model, eos)
    # T = 0.2 makes EOS the likely draw for sample 0; a loose beta cut keeps other tokens plausible
    options = dict(method=method, do_sample=True, temperature=0.2, beta=1e-6, max_new_tokens=1)
    free = torch.cat([decode(model, inputs, seed=s, **options) for s in range(4)])
    banned = torch.cat([decode(model, inputs, seed=s, min_new_tokens=1, **options) for s in range(4)])
    assert (free == eos).any() and (banned != eos).all()


def test_ban_keeps_a_row_that_would_be_left_empty():
    scores = torch.tensor([[0.0, 1.0, NEG], [NEG, 2.0, NEG]])
    banned = ban_tokens(scores, torch.tensor([1]))
    assert banned.tolist() == [[0.0, NEG, NEG], [NEG, 2.0, NEG]]


@pytest.mark.parametrize("value", [-1, 1.5, None])
def test_bad_values_are_named(llava_case, value):
    with pytest.raises(ValueError, match="min_new_tokens must be an int >= 0"):
        decode(llava_case.model, llava_case.batch(1), method="greedy", min_new_tokens=value)
