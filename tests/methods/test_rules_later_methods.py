"""The later methods' rules pinned on their edges, with expectations written here from the official code.

Each test sits where a one-line change of the rule would cross it: PAI's and ClearSight's default
layer ranges on a 32-layer model (on 2-4 layers, neighbouring ranges round to the same layers), VAR's
strict ``phi > tau`` with a value exactly at tau, and ONLY's L1 distance (not the total variation,
half of it) with distances between gamma and 2 gamma. Expected values are literals from the official
repositories or plain numpy, never a library helper.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import LlavaForConditionalGeneration

from avisc_lib.methods import get
from avisc_lib.methods.only import only_scores
from avisc_lib.models.inputs import embed_prompt
from avisc_lib.settings import DecodeSettings
from avisc_lib.tokens.sinks import find_sinks, massive_dimensions, massive_tokens

# ------------------------------------------------------------------------------------ PAI, ClearSight

# LALBJ/PAI README.md line 65 runs --start-layer 2 --end-layer 32; attention.py line 122 edits
# range(start_layer, end_layer).
PAI_OFFICIAL = set(range(2, 32))
# ustc-hyin/ClearSight visaug/inference/infer_pope.py line 54: layers i with 8 < i < 15.
CLEARSIGHT_OFFICIAL = {9, 10, 11, 12, 13, 14}


@pytest.fixture(scope="module")
def deep_llava(llava_case):
    """``(model, batch)``: the test LLaVA with LLaVA-1.5-7B's 32 language-model layers, random weights."""
    config = copy.deepcopy(llava_case.model.config)
    config.text_config.num_hidden_layers = 32
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    return model, llava_case.batch(2)


def edited_layers(model, batch, method: str, settings: DecodeSettings) -> set[int]:
    """The decoder layers whose attention output ``method`` changes, each tested on its own inputs.

    One prefill runs inside the method's context with every attention module's inputs and output
    recorded; each module then reruns on the same inputs outside it. ``[B, L, D]`` outputs compared.
    """
    prompt = embed_prompt(model, batch)
    layers = model.get_decoder().layers
    calls = {}

    def record(index):
        def hook(module, args, kwargs, output):
            calls[index] = (args, kwargs, output[0])

        return hook

    handles = [layer.self_attn.register_forward_hook(record(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad(), get(method).intervention(model, prompt, settings):
            model.get_decoder()(inputs_embeds=prompt.embeds, attention_mask=prompt.attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    assert sorted(calls) == list(range(len(layers)))
    with torch.no_grad():
        plain = {i: layers[i].self_attn(*args, **kwargs)[0] for i, (args, kwargs, _) in calls.items()}
    return {i for i, (_, _, edited) in calls.items() if not torch.equal(edited, plain[i])}


def test_pai_default_layers_are_2_to_31_on_32_layers(deep_llava):
    # gamma 1: PAI edits the prompt's answer row too (with its refinement on, only generated rows)
    settings = DecodeSettings(method="pai", pai_gamma=1.0)
    assert settings.pai_layers is None  # the default range, scaled to the depth: here the official one
    assert edited_layers(*deep_llava, "pai", settings) == PAI_OFFICIAL


def test_clearsight_default_layers_are_9_to_14_on_32_layers(deep_llava):
    settings = DecodeSettings(method="clearsight")
    assert settings.clearsight_layers is None
    assert edited_layers(*deep_llava, "clearsight", settings) == CLEARSIGHT_OFFICIAL


# ------------------------------------------------------------------------------------ VAR

# MICV-yonsei/VisAttnSink src/logic/logic.py line 109: sinks are where phi > tau (strictly);
# A_exps/lv1.5_7b.yml line 12: tau 20.
TAU = 20.0
ABOVE = float(np.nextafter(np.float32(TAU), np.float32(np.inf)))


def test_var_threshold_is_strict_on_given_activations():
    # phi [1, 3 tokens, 3 dims]; BOS (token 0) exactly at tau in dim 0, just above it in dim 1
    phi = torch.tensor([[[TAU, ABOVE, 0.0], [TAU, TAU, 1.0], [0.0, ABOVE, TAU]]])
    dims = massive_dimensions(phi, torch.tensor([0]), TAU)
    assert dims.tolist() == [[False, True, False]]
    # token 1 sits exactly at tau in the sink dimension, token 2 above it, BOS above it
    assert massive_tokens(phi, dims, TAU).tolist() == [[True, False, True]]


def _official_phi(hidden: torch.Tensor) -> torch.Tensor:
    """|rmsnorm(x)| in float32, DimProspector.rmsnorm (logic.py lines 98-101) written out."""
    hidden = hidden.float()
    return (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6)).abs()


@pytest.fixture(scope="module")
def bos_at_sqrt_d(llava_case):
    """``(model, batch, dim, tau)``: BOS's embedding 256 in one dimension and 0 elsewhere, so the
    input of layer 0 has phi(BOS) = sqrt(D) = 8 exactly in float32 (mean square 1024; 1e-6 vanishes)."""
    model = copy.deepcopy(llava_case.model)
    dim = 5
    bos = model.config.get_text_config().bos_token_id
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[bos] = 0.0
        embedding[bos, dim] = 256.0
        phi = _official_phi(embedding[bos])
    tau = float(np.sqrt(embedding.shape[1]))
    assert phi[dim].item() == tau == 8.0
    return model, llava_case.batch(2), dim, tau


def test_var_sink_search_leaves_bos_exactly_at_tau_out(bos_at_sqrt_d):
    model, batch, dim, tau = bos_at_sqrt_d
    is_bos = batch["input_ids"] == model.config.get_text_config().bos_token_id
    at = find_sinks(model, batch, tau=tau, layers=[0])
    assert at.dimensions() == [] and not bool(at.tokens.any())
    fixed = find_sinks(model, batch, tau=tau, dims=[dim], layers=[0])
    assert not bool(fixed.tokens.any())
    below = find_sinks(model, batch, tau=float(np.nextafter(np.float32(tau), np.float32(0))), layers=[0])
    assert below.dimensions() == [dim] and torch.equal(below.tokens[:, 0] & is_bos, is_bos)


# ------------------------------------------------------------------------------------ ONLY

# zifuwan/ONLY only_utils/only_sample.py line 200: d = sum |softmax(l) - softmax(l_only)| (the L1
# distance, though named tvd); line 220: d < js_gamma; eval_bench/scripts/pope_eval.sh lines 31-34:
# alpha_pos 3, alpha_neg 1, beta 0.1, js_gamma 0.2.
ALPHA_POS, ALPHA_NEG, GAMMA = 3.0, 1.0, 0.2


@pytest.mark.parametrize("l1", [0.18, 0.22, 0.30, 0.38])
def test_only_switches_on_the_l1_distance_at_gamma(l1):
    """Two tokens, p = (0.6, 0.4) and q moved by l1 / 2: L1 = l1, total variation l1 / 2.

    0.22, 0.30 and 0.38 lie between gamma and 2 gamma, where L1 and total variation disagree.
    """
    p = np.array([0.6, 0.4])
    q = p + np.array([-l1 / 2, l1 / 2])
    logits, branch = np.log(p), np.log(q)
    distance = np.abs(p - q).sum()
    assert distance == pytest.approx(l1) and abs(distance - GAMMA) > 0.01  # no rounding near the edge
    if distance < GAMMA:
        expected = logits + ALPHA_POS * branch
    else:
        expected = (1 + ALPHA_NEG) * logits - ALPHA_NEG * branch
    # beta = 0.1 cuts nothing: 0.4 > 0.1 x 0.6
    got = only_scores(torch.from_numpy(logits[None]).float(), torch.from_numpy(branch[None]).float())
    np.testing.assert_allclose(got[0].double().numpy(), expected, rtol=1e-5, atol=1e-6)
