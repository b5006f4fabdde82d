"""VAR and ONLY against plain per-sample references written here from the official code's loops."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import Case, eager_scores, row
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from avisc_lib.methods.only import only, only_scores
from avisc_lib.methods.var import var
from avisc_lib.models import compat
from avisc_lib.models.inputs import embed_prompt
from avisc_lib.tiny.build import LMSize, build_model, build_processor

REFERENCE = "test_reference_var_eager"
STATE: dict = {}
TAU, DIM = 6.0, 5


def reference_phi(hidden: torch.Tensor) -> torch.Tensor:
    hidden = hidden.double()
    return hidden.abs() / (hidden.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()


def sink_model(case):
    """BOS massive in DIM; image feature DIM = 100 x one hidden unit of the projector, so that
    some image tokens are massive there (1 to 9 of 64 per scene) and others are not."""
    model = copy.deepcopy(case.model)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        bos = model.config.get_text_config().bos_token_id
        embedding[bos] = 0.0
        embedding[bos, DIM] = 1000.0
        last = compat.projector(model).linear_2
        last.weight[DIM] = 0.0
        last.weight[DIM, 7] = 100.0
        last.bias[DIM] = 0.0
    return model


def _reference_var(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Eager attention, B = 1, then logic.py's HeadFork + attn_redist loops, head by head, row by row."""
    _, heads, num_queries, dim = query.shape
    probs, values = eager_scores(query, key, value, torch.float64)
    num_keys = probs.shape[-1]
    causal = torch.arange(num_keys)[None] <= torch.arange(num_keys - num_queries, num_keys)[:, None]
    probs = probs.masked_fill(~causal, -math.inf).softmax(-1)
    sinks = STATE["sinks"].get(module.layer_idx, [])
    start, end = STATE["image"]
    visual = [i for i in sinks if start <= i < end]
    p, rho, summ = STATE["p"], STATE["rho"], STATE["summ"]
    for h in range(heads):
        for i in range(num_queries):
            if not visual or (num_queries > 1 and num_keys - num_queries + i < end):
                continue
            attn = probs[0, h, i]
            image = attn[start:end]
            portion = attn[visual].sum() / (image + 1e-6).sum()
            if not (portion <= rho and image.sum() >= summ):
                continue
            new = attn.clone()
            new[sinks] *= p
            budget = attn[sinks].sum() * (1 - p)
            copied = attn.clone()
            copied[visual] = 0
            new[start:end] += budget * copied[start:end] / copied[start:end].sum()
            probs[0, h, i] = new
    return (probs @ values).transpose(1, 2).to(query.dtype), None


compat.register_attention(REFERENCE, _reference_var)


def _find_reference_sinks(layer):
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] == STATE["length"]:
            phi = reference_phi(hidden[0])
            dims = phi[STATE["bos"]] > TAU
            STATE["sinks"][layer] = [t for t in range(phi.shape[0]) if bool((phi[t][dims] > TAU).any())]

    return hook


def greedy_logits(model, prompt, steps: int) -> list[torch.Tensor]:
    """Logits ``[B, V]`` of each greedy step, cached, with whatever intervention is active."""
    logits, cache = compat.language_model_forward(model, prompt.embeds, prompt.attention_mask)
    out, mask = [logits], prompt.attention_mask
    for _ in range(steps - 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        embeds = model.get_input_embeddings()(out[-1].argmax(-1, keepdim=True))
        logits, cache = compat.language_model_forward(model, embeds, mask, cache)
        out.append(logits)
    return out


def reference_var_logits(model, inputs, steps, p, rho, summ):
    prompt = embed_prompt(model, inputs)
    image = torch.nonzero(prompt.image_mask[0]).flatten()
    bos = int(torch.nonzero(prompt.input_ids[0] == model.config.get_text_config().bos_token_id)[0])
    STATE.update(
        sinks={},
        image=(int(image[0]), int(image[-1]) + 1),
        p=p,
        rho=rho,
        summ=summ,
        length=prompt.input_ids.shape[1],
        bos=bos,
    )
    layers = model.get_decoder().layers
    handles = [
        layers[i].register_forward_pre_hook(_find_reference_sinks(i), with_kwargs=True) for i in range(2, len(layers))
    ]
    try:
        with compat.text_attention(model, REFERENCE):
            return greedy_logits(model, prompt, steps)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("p,rho,summ", [(0.6, 0.5, 0.2), (0.3, 0.9, 0.0)])
def test_var_batched_equals_reference(llava_case, p, rho, summ):
    model = sink_model(llava_case)
    inputs = llava_case.batch(3)
    prompt = embed_prompt(model, inputs)
    with torch.no_grad():
        plain = greedy_logits(model, prompt, 4)
        with var(model, prompt, p=p, rho=rho, summ=summ, tau=TAU):
            batched = greedy_logits(model, prompt, 4)
        references = [reference_var_logits(model, row(inputs, b), 4, p, rho, summ) for b in range(3)]
    for b in range(3):
        for step in range(4):
            torch.testing.assert_close(batched[step][b], references[b][step][0].float(), atol=1e-5, rtol=1e-5)
    assert max(float((x - y).abs().max()) for x, y in zip(batched, plain)) > 1e-3  # VAR did act


def test_var_neutral_is_exactly_the_model(llava_case):
    model = sink_model(llava_case)
    prompt = embed_prompt(model, llava_case.batch(3))
    with torch.no_grad():
        plain = greedy_logits(model, prompt, 3)
        with var(model, prompt, p=1.0, tau=TAU):
            neutral = greedy_logits(model, prompt, 3)
    assert all(torch.equal(x, y) for x, y in zip(plain, neutral))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"p": 1.5}, "var_p must be in"),
        ({"rho": -0.1}, "var_rho must be in"),
        ({"summ": float("nan")}, "var_summ must be in"),
        ({"tau": 0.0}, "tau must be"),
    ],
)
def test_var_errors(llava_case, kwargs, message):
    prompt = embed_prompt(llava_case.model, llava_case.batch(1))
    with pytest.raises(ValueError, match=message), var(llava_case.model, prompt, **kwargs):
        pass


def reference_only_logits(model, inputs, layer: int) -> torch.Tensor:
    """ONLY's branch logits for B = 1 at the prompt's last position, from transformers' hidden
    states and the layer's own projections, with the official code's statistics written out."""
    decoder = model.get_decoder()
    prompt = embed_prompt(model, inputs)
    with torch.no_grad():
        hidden = decoder(inputs_embeds=prompt.embeds, output_hidden_states=True).hidden_states
        attention = decoder.layers[layer].self_attn
        x = decoder.layers[layer].input_layernorm(hidden[layer])
        length, heads, dim = x.shape[1], attention.config.num_attention_heads, attention.head_dim
        shape = (1, length, -1, dim)
        q = attention.q_proj(x).view(shape).transpose(1, 2)
        k = attention.k_proj(x).view(shape).transpose(1, 2)
        v = attention.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = decoder.rotary_emb(x, torch.arange(length)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = (t.repeat_interleave(heads // t.shape[1], 1) for t in (k, v))
        probs = (torch.einsum("hd,hld->hl", q[0, :, -1], k[0]) / math.sqrt(dim)).softmax(-1)  # [H, L]
        image = prompt.image_mask[0]
        bos = prompt.input_ids[0] == model.config.get_text_config().bos_token_id
        instructblip = model.config.model_type == "instructblip"
        text = ~image if instructblip else ~image & ~bos
        edited = probs.clone()
        ratios = []
        for h in range(heads):
            t, i = probs[h, text], probs[h, image]
            t = torch.where(t > t.mean() + t.std(), 0.0, t)
            i = torch.where(i > i.mean() + i.std(), 0.0, i)
            edited[h, text], edited[h, image] = t, i
            tn, im = t / t.sum(), i / i.sum()
            et = torch.nan_to_num(-(tn * torch.log(tn + 1e-6)).sum(), nan=0.0)
            ei = torch.nan_to_num(-(im * torch.log(im + 1e-6)).sum(), nan=float("inf"))
            ratios.append(et / ei)
        ratios = torch.stack(ratios)
        edited[ratios < ratios.mean()] = 0
        a = attention.o_proj(torch.einsum("hl,hld->hd", edited, v[0]).reshape(1, -1))
        last = decoder.layers[-1]
        h = 0.2 * hidden[-2][:, -1] + (a if instructblip else last.input_layernorm(a))
        h = h + last.mlp(last.post_attention_layernorm(h))
        return model.get_output_embeddings()(decoder.norm(h) + 0.5 * hidden[-1][:, -1])


@pytest.mark.parametrize("name", ["llava_case", "instructblip_case", "embedded_case"])
def test_only_branch_batched_equals_reference(request, name):
    case = request.getfixturevalue(name)
    inputs = case.batch(3)
    prompt = embed_prompt(case.model, inputs)
    with torch.no_grad():
        plain, _ = compat.language_model_forward(case.model, prompt.embeds, prompt.attention_mask)
        with only(case.model, prompt) as branch:
            logits, _ = compat.language_model_forward(case.model, prompt.embeds, prompt.attention_mask)
    assert torch.equal(logits, plain)  # the model's own forward is untouched
    for b in range(3):
        expected = reference_only_logits(case.model, row(inputs, b), 0)
        torch.testing.assert_close(branch.logits[b], expected[0], atol=1e-4, rtol=1e-4)


def test_only_branch_follows_decode_steps(llava_case):
    prompt = embed_prompt(llava_case.model, llava_case.batch(2))
    seen = []
    with torch.no_grad(), only(llava_case.model, prompt) as branch:
        logits, cache = compat.language_model_forward(llava_case.model, prompt.embeds, prompt.attention_mask)
        seen.append(branch.logits)
        mask = torch.cat([prompt.attention_mask, torch.ones_like(prompt.attention_mask[:, :1])], 1)
        embeds = llava_case.model.get_input_embeddings()(logits.argmax(-1, keepdim=True))
        compat.language_model_forward(llava_case.model, embeds, mask, cache)
        seen.append(branch.logits)
    assert seen[1].shape == seen[0].shape and not torch.equal(seen[0], seen[1])


def test_only_scores_formula():
    logits = torch.tensor([[2.0, 1.0, -3.0], [0.0, 0.0, 0.0]])
    branch = torch.tensor([[2.0, 1.0, -3.0], [5.0, -5.0, 0.0]])
    scores = only_scores(logits, branch, alpha_pos=3.0, alpha_neg=1.0, gamma=0.2, beta=0.1)
    # row 0: identical distributions (distance 0 < 0.2) -> l + 3 l'; exp(-3 - 2) < 0.1 -> token 2 cut
    assert scores[0].tolist() == [8.0, 4.0, -math.inf]
    # row 1: distance > 0.2 -> 2 l - l'; all logits equal, none cut
    assert scores[1].tolist() == [-5.0, 5.0, 0.0]


def test_only_neutral_scores_keep_greedy():
    torch.manual_seed(0)
    logits, branch = torch.randn(4, 50), torch.randn(4, 50)
    scores = only_scores(logits, branch, alpha_pos=0.0, alpha_neg=0.0)
    assert torch.equal(scores.argmax(-1), logits.argmax(-1))
    kept = scores > -math.inf
    assert torch.equal(scores[kept], logits[kept])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha_pos": -1.0}, "only_alpha_pos must be"),
        ({"alpha_neg": float("inf")}, "only_alpha_neg must be"),
        ({"gamma": float("nan")}, "only_gamma must be"),
        ({"beta": 0.0}, "beta must be in"),
    ],
)
def test_only_score_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        only_scores(torch.zeros(1, 3), torch.zeros(1, 3), **kwargs)


def test_only_names_the_layers_it_cannot_read():
    """A GPT-2 language model (the organism search's other family) has no o_proj or input_layernorm."""
    processor = build_processor()
    model = build_model(processor.tokenizer, lm=LMSize(2, 64, 2, "gpt2")).eval()
    prompt = embed_prompt(model, Case("gpt2", model, processor).batch(1))
    with pytest.raises(ValueError, match="Llama-style decoder layers .* GPT2Block"), only(model, prompt):
        pass


def test_only_layer_error(llava_case):
    prompt = embed_prompt(llava_case.model, llava_case.batch(1))
    with pytest.raises(ValueError, match=r"only_layer must be in \[0, 1\]"), only(llava_case.model, prompt, layer=2):
        pass
