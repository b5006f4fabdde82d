"""decode against a plain reference written from the spec (AVISC.md §1.7, §4), batching, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import row

from avisc_lib.decoding import decode, next_token_scores
from avisc_lib.settings import DecodeSettings

STEPS = 8
# (method, decode keyword arguments) covering every method, argmax and sampling.
VARIANTS = [
    ("greedy", {}),
    ("sample", {"seed": 3}),
    ("avisc", {"alpha": 2.5}),
    ("avisc", {"alpha": 2.5, "do_sample": True, "seed": 4, "lam": 0.5, "layer_gamma": 0.8}),
    ("vcd", {"alpha": 1.0, "seed": 5, "beta": 0.2}),
    ("m3id", {"gamma_decay": 0.5}),
    ("random_mask", {"alpha": 2.5, "seed": 6, "lam": 0.5}),
    ("random_mask", {"alpha": 1.0, "do_sample": True, "seed": 7}),
    ("zero_image", {"alpha": 1.5}),
]
IDS = [f"{m}-{i}" for i, (m, _) in enumerate(VARIANTS)]
# Sampled rows draw from one generator, so they depend on their batch by design.
ARGMAX = [(v, i) for v, i in zip(VARIANTS, IDS) if v[0] != "sample" and not v[1].get("do_sample")]


# ------------------------------------------------------------------------------------ the reference
# B = 1, eager attention, no KV cache: the whole sequence (prompt + tokens so far) is embedded and
# re-run at every step. Image features are scattered into the prompt's image positions only (a
# random model may well generate the image token id itself).


def _image_features(model, inputs, pixel_values):
    if model.config.model_type == "instructblip":
        out = model.get_image_features(
            pixel_values,
            qformer_input_ids=inputs["qformer_input_ids"],
            qformer_attention_mask=inputs["qformer_attention_mask"],
            return_dict=True,
        )
        return out.pooler_output[0]
    return model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output[0]


def _run(model, embeds, attentions=False):
    lm = model.language_model if model.config.model_type == "instructblip" else model
    return lm(inputs_embeds=embeds, use_cache=False, output_attentions=attentions)


def _embed(model, ids, image_positions, features):
    """Embeddings of ``ids [1, L]`` with ``features [N, D]`` at ``image_positions`` (prompt only)."""
    embeds = model.get_input_embeddings()(ids).clone()
    positions = torch.nonzero(image_positions).flatten()
    embeds[0, positions] = features
    return embeds


def _nonblind(attentions, image_positions, layer_gamma, lam):
    """AVISC.md §1.3 with plain loops: the image tokens that are NOT blind, as a bool [N]."""
    rows = [layer[0, :, -1, image_positions].float().mean(0) for layer in attentions]
    share = torch.stack([r.sum() for r in rows])
    share = share / share.sum()
    ranked = sorted(range(len(rows)), key=lambda i: -share[i].item())
    k, total = 0, 0.0
    for i in ranked:
        k += 1
        total += share[i].item()
        if total >= layer_gamma:
            break
    a = torch.stack([rows[i] for i in ranked[:k]]).mean(0)
    return a < a.mean() + lam * a.std()


def _random_nonblind(nonblind, seed):
    """The random_mask control: as many tokens kept as are blind, chosen by one seeded uniform draw."""
    draw = torch.rand(1, len(nonblind), generator=torch.Generator().manual_seed(seed))[0]
    kept = torch.zeros(len(nonblind), dtype=torch.bool)
    kept[draw.argsort()[: int((~nonblind).sum())]] = True
    return ~kept


def _noised(pixel_values, step, seed):
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, 0)[step]
    eps = torch.randn(pixel_values.shape[1:], generator=torch.Generator().manual_seed(seed))
    return abar.sqrt() * pixel_values + (1 - abar).sqrt() * eps


def reference_decode(
    model,
    inputs,
    method,
    alpha=1.0,
    beta=0.1,
    lam=1.0,
    layer_gamma=0.5,
    do_sample=False,
    seed=None,
    noise_step=500,
    gamma_decay=0.02,
    max_new_tokens=STEPS,
):
    """Token ids generated for one unpadded sample."""
    prompt = inputs["input_ids"]
    image_positions = prompt[0] == model.config.image_token_id
    eos = model.config.get_text_config().eos_token_id
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if method == "random_mask":
        torch.rand(1, int(image_positions.sum()), generator=generator)  # the control's draw comes first
    sampling = method == "sample" or do_sample
    reads_attention = method in ("avisc", "random_mask")
    out = []
    with torch.no_grad():
        features = _image_features(model, inputs, inputs["pixel_values"])
        if method == "vcd":
            noised_features = _image_features(model, inputs, _noised(inputs["pixel_values"], noise_step, seed))
        for t in range(1, max_new_tokens + 1):
            ids = torch.cat([prompt, torch.tensor([out], dtype=torch.long)], dim=1)
            positions = torch.cat([image_positions, torch.zeros(len(out), dtype=torch.bool)])
            embeds = _embed(model, ids, positions, features)
            first = _run(model, embeds, attentions=reads_attention and t == 1)
            last = first.logits[0, -1].float()
            if reads_attention and t == 1:
                zeroed = _nonblind(first.attentions, positions, layer_gamma, lam)
                zeroed = _random_nonblind(zeroed, seed) if method == "random_mask" else zeroed
                nonblind = torch.nonzero(positions).flatten()[zeroed]
            if method in ("greedy", "sample"):
                z = last
            else:
                if method in ("avisc", "random_mask", "zero_image"):
                    zeroed = nonblind if method != "zero_image" else torch.nonzero(positions).flatten()
                    embeds[0, zeroed] = 0.0  # the official code's in-place zeroing
                    other = _run(model, embeds).logits[0, -1].float()
                elif method == "vcd":
                    other = _run(model, _embed(model, ids, positions, noised_features)).logits[0, -1].float()
                else:
                    other = _run(model, model.get_input_embeddings()(ids[:, ~positions])).logits[0, -1].float()
                if method == "m3id":
                    g = math.exp(-gamma_decay * t)
                    lc, lu = torch.log_softmax(last, -1), torch.log_softmax(other, -1)
                    z = lc + (1 - g) / g * (lc - lu)
                else:
                    z = (1 + alpha) * last - alpha * other
                z[last < math.log(beta) + last.max()] = -float("inf")
            token = torch.multinomial(torch.softmax(z, -1), 1, generator=generator)[0] if sampling else z.argmax()
            out.append(int(token))
            if int(token) == eos:
                break
    return out


def _tokens(row_ids: torch.Tensor, eos: int) -> list[int]:
    """A decode row up to and including its EOS."""
    ids = row_ids.tolist()
    return ids[: ids.index(eos) + 1] if eos in ids else ids


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("method,kwargs", VARIANTS, ids=IDS)
def test_single_sample_matches_reference(case, method, kwargs):
    inputs = row(case.batch(2), 1)
    eos = case.model.config.get_text_config().eos_token_id
    got = decode(case.model, inputs, method=method, max_new_tokens=STEPS, **kwargs)
    assert got.shape[0] == 1 and got.dtype == torch.long
    assert _tokens(got[0], eos) == reference_decode(case.eager, inputs, method, **kwargs)


@pytest.mark.parametrize("method,kwargs", [v for v, _ in ARGMAX], ids=[i for _, i in ARGMAX])
def test_left_padded_batch_rows_equal_single_samples(case, method, kwargs):
    inputs = case.batch(4)
    assert (inputs["attention_mask"] == 0).any(), "the batch must contain padding"
    batched = decode(case.model, inputs, method=method, max_new_tokens=STEPS, **kwargs)
    eos = case.model.config.get_text_config().eos_token_id
    for b in range(4):
        alone = decode(case.model, row(inputs, b), method=method, max_new_tokens=STEPS, **kwargs)
        assert _tokens(batched[b], eos) == _tokens(alone[0], eos), f"row {b}"


@pytest.mark.parametrize("method", ["avisc", "vcd", "m3id", "random_mask", "zero_image"])
def test_contrast_changes_the_answer_somewhere(llava_case, instructblip_case, method):
    """Guards the equality tests above against a contrast that silently does nothing."""
    kwargs = {"alpha": 3.0, "seed": 0, "gamma_decay": 1.0}
    changed = False
    for case in (llava_case, instructblip_case):
        inputs = case.batch(4)
        greedy = decode(case.model, inputs, method="greedy", max_new_tokens=STEPS)
        changed |= not torch.equal(decode(case.model, inputs, method=method, max_new_tokens=STEPS, **kwargs), greedy)
    assert changed


def test_avisc_with_alpha_zero_is_greedy(case):
    inputs = case.batch(3)
    greedy = decode(case.model, inputs, method="greedy", max_new_tokens=STEPS)
    assert torch.equal(decode(case.model, inputs, method="avisc", alpha=0.0, max_new_tokens=STEPS), greedy)


def test_seeded_sampling_is_reproducible(llava_case):
    inputs = llava_case.batch(2)
    kwargs = {"method": "avisc", "do_sample": True, "max_new_tokens": STEPS, "temperature": 1.5}
    first = decode(llava_case.model, inputs, seed=11, **kwargs)
    assert torch.equal(first, decode(llava_case.model, inputs, seed=11, **kwargs))
    assert not torch.equal(first, decode(llava_case.model, inputs, seed=12, **kwargs))


def test_each_row_stops_at_its_own_eos(llava_case, monkeypatch):
    model, inputs = llava_case.model, llava_case.batch(4)
    free = decode(model, inputs, method="greedy", max_new_tokens=STEPS)
    stop = int(free[0, 2])  # make row 0's third token the end of sequence
    monkeypatch.setattr(model.generation_config, "eos_token_id", stop)
    monkeypatch.setattr(model.generation_config, "pad_token_id", 0)
    out = decode(model, inputs, method="greedy", max_new_tokens=STEPS)
    ends = [ids.index(stop) + 1 if stop in ids else STEPS for ids in free.tolist()]
    assert out.shape[1] == max(ends)
    for b, end in enumerate(ends):
        assert torch.equal(out[b, :end], free[b, :end])
        assert (out[b, end:] == 0).all()


def test_contrast_is_float32_and_nan_falls_back_to_the_original():
    # row 0 original, row 1 the contrast branch: all NaN, so it is replaced and z = l
    logits = torch.tensor([[3.0, 1.0, 0.0], [float("nan"), 0.0, 0.0]], dtype=torch.bfloat16)
    scores = next_token_scores(logits, 1, 1, DecodeSettings("avisc", alpha=1.0))
    assert scores.dtype == torch.float32
    # p / p_max: 1, e^-2 = 0.14 (kept at beta = 0.1), e^-3 = 0.05 (cut)
    assert scores.tolist() == [[3.0, 1.0, -float("inf")]]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs(llava_case, dtype):
    model = copy.deepcopy(llava_case.model).to(dtype)
    out = decode(model, llava_case.batch(2), method="avisc", max_new_tokens=3)
    assert out.shape == (2, 3) and out.dtype == torch.long


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "beam"}, "unknown method 'beam'"),
        ({"method": "avisc", "beta": 0.0}, "beta must be in"),
        ({"method": "avisc", "beta": 1.5}, "beta must be in"),
        ({"method": "avisc", "alpha": -1.0}, "alpha must be"),
        ({"method": "avisc", "layer_gamma": 0.0}, "layer_gamma must be in"),
        ({"method": "avisc", "top_p": 0.0}, "top_p must be in"),
        ({"method": "sample", "temperature": 0.0}, "temperature must be"),
        ({"method": "avisc", "max_new_tokens": 0}, "max_new_tokens must be"),
        ({"method": "vcd", "noise_step": 1000}, "noise_step must be"),
        ({"method": "greedy", "do_sample": True}, "use method='sample'"),
        ({"method": "sample", "do_sample": False}, "use method='greedy'"),
        ({"method": "avisc", "do_sample": 1}, "do_sample must be True, False or None"),
        ({"method": "avisc", "cd_alpha": 1.0}, "unknown keyword argument.*cd_alpha"),
    ],
)
def test_invalid_settings_are_named(llava_case, kwargs, message):
    with pytest.raises(ValueError, match=message):
        decode(llava_case.model, llava_case.batch(1), **kwargs)


def test_bad_inputs_are_clear_errors(llava_case):
    model, inputs = llava_case.model, llava_case.batch(2)
    image_id = model.config.image_token_id
    no_image = {**inputs, "input_ids": inputs["input_ids"].masked_fill(inputs["input_ids"] == image_id, 5)}
    with pytest.raises(ValueError, match="no image tokens in the prompt"):
        decode(model, no_image, method="greedy")
    one = row(inputs, 0)
    keep = torch.ones(one["input_ids"].shape[1], dtype=torch.bool)
    keep[int((one["input_ids"][0] == image_id).nonzero()[0])] = False
    short = {**one, "input_ids": one["input_ids"][:, keep], "attention_mask": one["attention_mask"][:, keep]}
    with pytest.raises(ValueError, match="image/token count mismatch: the prompt has 63 image tokens"):
        decode(model, short, method="greedy")
    with pytest.raises(ValueError, match="got 2 images for 1 prompts"):
        decode(model, {**one, "pixel_values": inputs["pixel_values"]}, method="greedy")
    with pytest.raises(ValueError, match=r"inputs lack \['pixel_values'\]"):
        decode(model, {k: v for k, v in inputs.items() if k != "pixel_values"}, method="greedy")
    right = {**inputs, "attention_mask": inputs["attention_mask"].flip(-1)}
    with pytest.raises(ValueError, match="left-padded"):
        decode(model, right, method="greedy")


@pytest.mark.parametrize(
    "method, options",
    [
        ("clearsight", {}),
        ("var", {}),
        ("pai", {"pai_gamma": 1.0}),
        ("avisc", {}),
    ],
)
def test_do_sample_draws_the_token_for_every_method(llava_case, method, options):
    """do_sample=True draws each token from the method's final scores (one-pass methods included),
    and ``decoding`` says so; before, one-pass methods took the argmax whatever do_sample said."""
    model, inputs = llava_case.model, llava_case.batch(2)
    assert DecodeSettings(method=method, do_sample=True, **options).decoding == "sampling"
    sampled = dict(method=method, do_sample=True, temperature=3.0, max_new_tokens=1, **options)
    out = decode(model, inputs, seed=11, return_dict=True, **sampled)
    draw = torch.multinomial(out.scores[0].softmax(-1), 1, generator=torch.Generator().manual_seed(11))
    assert torch.equal(out.sequences[:, 0], draw.squeeze(-1))
    argmax = decode(model, inputs, method=method, max_new_tokens=1, **options)[:, 0]
    assert any((decode(model, inputs, seed=s, **sampled)[:, 0] != argmax).any() for s in range(6))


def test_do_sample_default_is_the_methods_own_choice():
    assert (DecodeSettings(method="sample").do_sample, DecodeSettings(method="sample").decoding) == (True, "sampling")
    assert (DecodeSettings(method="greedy").do_sample, DecodeSettings(method="greedy").decoding) == (False, "argmax")
    assert DecodeSettings(method="clearsight").do_sample is False
