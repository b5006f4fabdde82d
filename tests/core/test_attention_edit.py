"""The attention write side against an eager reference written here (every row, loops over rows)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import eager_scores

from avisc_lib.hooks.edit import AttentionEdit, edit_attention, edited_probs
from avisc_lib.hooks.stack import DISPATCHER
from avisc_lib.models import compat
from avisc_lib.models.inputs import embed_prompt

REFERENCE = "test_reference_edited_eager"
_SPEC: list[AttentionEdit] = []


def _selection(edit: AttentionEdit, batch: int, heads: int, num_queries: int, num_keys: int) -> torch.Tensor:
    """``[batch, H, q, Lk]``: True where ``edit`` acts, built row by row."""
    prompt_length = edit.keys.shape[1]
    selected = torch.zeros(batch, heads, num_queries, num_keys, dtype=torch.bool)
    for b in range(edit.keys.shape[0]):
        for h in range(heads):
            if edit.heads is not None and h not in edit.heads:
                continue
            for i in range(num_queries):
                position = num_keys - num_queries + i
                if position >= prompt_length or edit.queries is None or bool(edit.queries[b, position]):
                    selected[b, h, i, :prompt_length] = edit.keys[b]
    return selected


def _reference(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """softmax(QK^T / sqrt(d) + mask) for all rows, with the edits of ``_SPEC`` written out per mode."""
    batch, heads, num_queries, dim = query.shape
    num_keys = key.shape[2]
    scores, values = eager_scores(query, key, value)
    if attention_mask is None:
        visible = torch.ones(num_queries, num_keys).tril(num_keys - num_queries).bool()[None, None]
    else:
        visible = attention_mask[..., :num_keys]
    edits = [e for e in _SPEC if e.layers is None or module.layer_idx in e.layers]
    selections = [(e, _selection(e, batch, heads, num_queries, num_keys) & visible) for e in edits]
    for edit, selected in selections:
        if edit.mode == "scale_logits":
            scores = torch.where(selected, scores * edit.factor, scores)
        elif edit.mode == "amplify_logits":
            scores = torch.where(selected, scores + edit.factor * scores.abs(), scores)
    probs = torch.softmax(scores.masked_fill(~visible, -1e30), dim=-1)
    for edit, selected in selections:
        if edit.mode == "scale_probs":
            probs = torch.where(selected, probs * edit.factor, probs)
            probs = probs / probs.sum(-1, keepdim=True)
        elif edit.mode == "redistribute":
            targets = _selection(
                AttentionEdit(edit.targets, "scale_probs", 2.0, heads=edit.heads, queries=edit.queries),
                batch,
                heads,
                num_queries,
                num_keys,
            )
            targets = targets & visible & ~selected
            for index in torch.nonzero(selected.any(-1)).tolist():
                row = probs[tuple(index)]
                taken = (1 - edit.factor) * row[selected[tuple(index)]].sum()
                mass = row[targets[tuple(index)]].sum()
                if mass > 0:
                    new = row.clone()
                    new[selected[tuple(index)]] *= edit.factor
                    new[targets[tuple(index)]] += taken * row[targets[tuple(index)]] / mass
                    probs[tuple(index)] = new
    return (probs @ values).transpose(1, 2).to(query.dtype), None


compat.register_attention(REFERENCE, _reference)


def _run(model, prompt, steps: int, tokens: torch.Tensor | None = None):
    """Prefill then ``steps`` cached steps; feeds ``tokens [B, steps]`` (else the argmax).

    Logits ``[B, steps+1, V]``."""
    logits, cache = compat.language_model_forward(model, prompt.embeds, prompt.attention_mask)
    mask, out, chosen = prompt.attention_mask, [logits], []
    embed = model.get_input_embeddings()
    for step in range(steps):
        token = out[-1].argmax(-1) if tokens is None else tokens[:, step]
        chosen.append(token)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        logits, cache = compat.language_model_forward(model, embed(token)[:, None], mask, cache)
        out.append(logits)
    return torch.stack(out, 1), torch.stack(chosen, 1)


def _edits(prompt, mode: str, factor: float) -> list[AttentionEdit]:
    image = prompt.image_mask
    first_image = image.float().argmax(-1, keepdim=True)
    positions = torch.arange(image.shape[1])[None]
    after_image = positions > first_image + int(image[0].sum())
    system = (positions < first_image) & prompt.attention_mask.bool()
    targets = image if mode == "redistribute" else None
    keys = system if mode == "redistribute" else image
    return [
        AttentionEdit(keys, mode, factor, layers=(0, 2), heads=(1, 3), queries=after_image, targets=targets),
        AttentionEdit(image, "scale_logits", 1.2, layers=(1,), queries=None),
    ]


MODES = [("scale_logits", 1.4), ("amplify_logits", 0.5), ("scale_probs", 3.0), ("redistribute", 0.3)]


@pytest.mark.parametrize("mode,factor", MODES)
@pytest.mark.parametrize("name", ["llava_gqa", "embedded"])
def test_edits_equal_eager_reference(request, name, mode, factor):
    case = request.getfixturevalue(f"{name}_case")
    prompt = embed_prompt(case.model, case.batch(3))
    assert not bool(prompt.attention_mask.all()), "the batch must be left-padded"
    edits = _edits(prompt, mode, factor)
    with torch.no_grad():
        plain, _ = _run(case.model, prompt, 3)
        _SPEC[:] = edits
        with compat.text_attention(case.model, REFERENCE):
            expected, tokens = _run(case.model, prompt, 3)
        with edit_attention(case.model, edits):
            got, _ = _run(case.model, prompt, 3, tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3, "the edit must change the logits"


def test_extra_rows_are_untouched(llava_case):
    prompt = embed_prompt(llava_case.model, llava_case.batch(3))
    embeds, mask = torch.cat([prompt.embeds] * 2), torch.cat([prompt.attention_mask] * 2)
    with torch.no_grad():
        plain, _ = compat.language_model_forward(llava_case.model, embeds, mask)
        with edit_attention(llava_case.model, [AttentionEdit(prompt.image_mask, "scale_logits", 2.0)]):
            edited, _ = compat.language_model_forward(llava_case.model, embeds, mask)
    assert torch.equal(edited[3:], plain[3:])
    assert (edited[:3] - plain[:3]).abs().max() > 1e-3


@pytest.mark.parametrize("mode,neutral", [("scale_logits", 1.0), ("amplify_logits", 0.0), ("scale_probs", 1.0)])
def test_neutral_factor_is_the_unedited_model(embedded_case, mode, neutral):
    model = embedded_case.model
    prompt = embed_prompt(model, embedded_case.batch(3))
    before = model.config.get_text_config()._attn_implementation
    with torch.no_grad():
        plain, plain_tokens = _run(model, prompt, 4)
        with edit_attention(model, [AttentionEdit(prompt.image_mask, mode, neutral)]):
            assert model.config.get_text_config()._attn_implementation == before
            got, tokens = _run(model, prompt, 4)
    assert torch.equal(got, plain) and torch.equal(tokens, plain_tokens)


def test_block_restores_the_implementation_on_error(llava_case):
    model = llava_case.model
    prompt = embed_prompt(model, llava_case.batch(2))
    before = model.config.get_text_config()._attn_implementation
    edit = AttentionEdit(prompt.image_mask, "scale_logits", 2.0)
    with pytest.raises(RuntimeError, match="boom"), edit_attention(model, [edit]):
        assert model.config.get_text_config()._attn_implementation == DISPATCHER
        raise RuntimeError("boom")
    assert model.config.get_text_config()._attn_implementation == before


def test_redistribute_moves_mass_and_keeps_rows_normalised():
    scores = torch.tensor([[[[0.0, 1.0, 2.0, 3.0]]]])
    visible = torch.ones(1, 1, 1, 4, dtype=torch.bool)
    sink = torch.tensor([[True, False, False, False]])
    image = torch.tensor([[False, True, True, False]])
    edit = AttentionEdit(sink, "redistribute", 0.25, targets=image)
    probs = edited_probs(scores, visible, [edit], [torch.ones(1, 1, dtype=torch.bool)])[0, 0, 0]
    p = torch.tensor([1.0, math.e, math.e**2, math.e**3]) / sum(math.e**k for k in range(4))
    taken = 0.75 * p[0]
    expected = torch.stack(
        [0.25 * p[0], p[1] + taken * p[1] / (p[1] + p[2]), p[2] + taken * p[2] / (p[1] + p[2]), p[3]]
    )
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mode": "boost"}, "unknown attention-edit mode 'boost'"),
        ({"factor": -1.0}, "factor for mode 'scale_logits' must be a finite number >= 0"),
        ({"factor": float("nan")}, "must be a finite number"),
        ({"mode": "redistribute", "factor": 1.5, "targets": torch.ones(2, 5, dtype=torch.bool)}, r"in \[0, 1\]"),
        ({"mode": "redistribute", "factor": 0.5}, "needs targets"),
        ({"targets": torch.ones(2, 5, dtype=torch.bool)}, "takes no targets"),
        ({"keys": torch.ones(2, 5)}, "keys must be a bool"),
        ({"queries": torch.ones(2, 4, dtype=torch.bool)}, "queries must be a bool mask shaped like keys"),
    ],
)
def test_bad_edits_raise(kwargs, message):
    arguments = {"keys": torch.ones(2, 5, dtype=torch.bool), "mode": "scale_logits", "factor": 2.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        AttentionEdit(**arguments)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"layers": (0, 9)}, r"layers \[9\] out of range: the language model has 3"),
        ({"heads": (-1,)}, r"heads \[-1\] out of range: the language model has 4"),
    ],
)
def test_layers_and_heads_are_checked_against_the_model(llava_case, kwargs, message):
    edit = AttentionEdit(torch.ones(1, 5, dtype=torch.bool), "scale_logits", 2.0, **kwargs)
    with pytest.raises(ValueError, match=message), edit_attention(llava_case.model, [edit]):
        pass


def test_edit_wider_than_the_forward_is_refused(llava_case):
    prompt = embed_prompt(llava_case.model, llava_case.batch(3))
    edit = AttentionEdit(prompt.image_mask, "scale_logits", 2.0)
    with pytest.raises(ValueError, match="attention edits cover batch sizes"), edit_attention(llava_case.model, [edit]):
        compat.language_model_forward(llava_case.model, prompt.embeds[:2], prompt.attention_mask[:2])
