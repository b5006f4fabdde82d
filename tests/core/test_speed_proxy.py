"""The proxy speed measurement (scripts/speed_proxy.py): the proxy's widths, the step clock, the
roofline limits and the verdicts with their spread."""

import pytest
import torch
from conftest import load_script

from avisc_lib.course import budget
from avisc_lib.decoding import eos_disabled
from avisc_lib.models import replicas

speed_proxy = load_script("speed_proxy")


def test_the_proxy_has_llava_1_5_widths_and_few_layers():
    model, processor = replicas.proxy(device="meta")  # 0.7 B parameters: on the meta device, no memory
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_attention_heads, text.vocab_size) == (
        4096,
        11008,
        32,
        32064,
    )
    assert (vision.hidden_size, vision.intermediate_size, vision.image_size, vision.patch_size) == (1024, 4096, 336, 14)
    assert text.num_hidden_layers == 2 and vision.num_hidden_layers == 2
    size = speed_proxy.proxy_spec(model)
    assert size.image_tokens == 576 and 0.6e9 < size.total_params < 0.8e9
    assert size.lm_params == pytest.approx(2 * 202.4e6 + 32064 * 4096 + 4096, rel=0.01)  # layers + head + norm
    assert size.head_params == 32064 * 4096


def test_the_proxy_at_full_depth_has_llava_1_5_7b_parameters_in_the_asked_precision():
    model, _ = replicas.proxy(32, 24, device="meta", dtype=torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(7.06e9, rel=0.005)


def test_the_clock_sees_every_forward_and_times_every_generated_token(embedded_case):
    batch = embedded_case.batch(2)
    positions = batch["input_ids"].shape[1]
    with eos_disabled(embedded_case.model):
        avisc = speed_proxy.timed_decode(embedded_case.model, batch, "avisc", {}, steps=4)
        greedy = speed_proxy.timed_decode(embedded_case.model, batch, "greedy", {}, steps=3)
    assert avisc.prefill > 0 and len(avisc.steps) == 4 and all(s > 0 for s in avisc.steps)
    assert avisc.prefills == [(2, positions)] * 2 and avisc.rows == 4  # two prefills, then steps of 2 branches
    assert greedy.prefills == [(2, positions)] and greedy.rows == 2 and len(greedy.steps) == 3


def test_one_pass_pai_is_charged_one_branch(embedded_case):
    batch = embedded_case.batch(2)
    with eos_disabled(embedded_case.model):
        one_pass = speed_proxy.timed_decode(embedded_case.model, batch, "pai", {"pai_gamma": 1.0}, steps=2)
        refined = speed_proxy.timed_decode(embedded_case.model, batch, "pai", {}, steps=2)
    assert (len(one_pass.prefills), one_pass.rows) == (1, 2)
    assert (len(refined.prefills), refined.rows) == (2, 4)


def test_a_verdict_reads_the_spread_not_the_median():
    assert speed_proxy.verdict([1.1, 1.2, 1.3], 1.35) == "met"
    assert speed_proxy.verdict([1.4, 1.5], 1.35) == "missed"
    assert speed_proxy.verdict([1.2, 1.3, 1.4], 1.35) == "within noise of the goal"
    assert speed_proxy.verdict([1.0], None) == ""


def test_limits_count_a_second_branch_and_a_second_prefill():
    model, _ = replicas.proxy(device="meta")
    size = speed_proxy.proxy_spec(model)
    bandwidth, flops = 20e9, 200e9

    def limits(method, prefills, rows):
        timing = speed_proxy.Timing(1.0, [0.1], [(8, 640)] * prefills, rows)
        return speed_proxy.limits(size, method, timing, bandwidth, flops, 4)

    greedy, avisc, clearsight = limits("greedy", 1, 8), limits("avisc", 2, 16), limits("clearsight", 1, 8)
    assert clearsight == greedy  # one pass: the same bytes and FLOPs
    assert 1.9 < avisc[0] / greedy[0] < 2.0  # two prefills, one vision pass
    assert 1.0 < avisc[1] / greedy[1] < 1.2  # 16 rows read the weights once: the step stays bandwidth-bound
    step_bytes = size.lm_params * 4.0
    assert greedy[1] >= step_bytes / bandwidth
    half = speed_proxy.limits(size, "greedy", speed_proxy.Timing(1.0, [0.1], [(8, 640)], 8), bandwidth, flops, 2)
    assert 0.45 < half[1] / greedy[1] < 0.55  # fp16 weights: half the bytes


def test_the_head_runs_on_the_last_prefill_position_only():
    model, _ = replicas.proxy(device="meta")
    size = speed_proxy.proxy_spec(model)
    weights = budget.Weights(4.0, 1.0)
    flops, _ = budget.forward_work(size, weights, 1, 100, 0)
    body = size.lm_params - size.head_params
    assert flops == pytest.approx(2 * body * 100 + 2 * size.head_params + 4 * size.layers * size.hidden * 100 * 100)


def test_the_clock_times_compiled_steps_without_a_hook_inside_them(embedded_case):
    batch = embedded_case.batch(2)
    with eos_disabled(embedded_case.model):
        timing = speed_proxy.timed_decode(embedded_case.model, batch, "greedy", {"compile": True}, steps=3)
        again = speed_proxy.timed_decode(embedded_case.model, batch, "avisc", {"compile": True}, steps=3)
    assert (len(timing.prefills), timing.rows, len(timing.steps)) == (1, 2, 3)
    assert (len(again.prefills), again.rows, len(again.steps)) == (2, 4, 3)


def test_paired_rounds_put_every_method_beside_a_greedy_run_and_rotate_them():
    calls = []
    results = {"greedy": (1.0, 0.1, None), "a": (2.0, 0.2, None), "b": (3.0, 0.15, None)}

    def measure(label):
        calls.append(label)
        return results[label]

    costs = speed_proxy.paired_rounds(["greedy", "a", "b"], 2, measure)
    assert calls == ["greedy", "a", "greedy", "b", "b", "greedy", "a", "greedy"]
    assert costs["a"].step_ratio == [2.0, 2.0] and costs["b"].prefill_ratio == [3.0, 3.0]
    assert costs["greedy"].step_ratio == [1.0] * 4 and len(costs["b"].step) == 2
