"""The proxy speed measurement (scripts/speed_proxy.py): the proxy's widths, the step clock, the
roofline limits and the verdicts with their spread."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from avisc_lib.decoding import eos_disabled
from avisc_lib.models import replicas

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("speed_proxy", ROOT / "scripts" / "speed_proxy.py")
speed_proxy = sys.modules["speed_proxy"] = importlib.util.module_from_spec(spec)  # its dataclass needs the entry
spec.loader.exec_module(speed_proxy)


def test_the_proxy_has_llava_1_5_widths_and_few_layers():
    with torch.device("meta"):  # 0.7 B parameters: built on the meta device, no memory
        model, processor = replicas.proxy()
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


def test_the_step_clock_times_every_generated_token(embedded_case):
    batch = embedded_case.batch(2)
    with eos_disabled(embedded_case.model):
        prefill, steps = speed_proxy.timed_decode(embedded_case.model, batch, "avisc", {}, steps=4)
    assert prefill > 0 and len(steps) == 4 and all(s > 0 for s in steps)


def test_a_verdict_reads_the_spread_not_the_median():
    assert speed_proxy.verdict([1.1, 1.2, 1.3], 1.35) == "met"
    assert speed_proxy.verdict([1.4, 1.5], 1.35) == "missed"
    assert speed_proxy.verdict([1.2, 1.3, 1.4], 1.35) == "within noise of the goal"
    assert speed_proxy.verdict([1.0], None) == ""


def test_limits_count_a_second_branch_and_a_second_prefill():
    with torch.device("meta"):
        model, _ = replicas.proxy()
    size = speed_proxy.proxy_spec(model)
    bandwidth, flops = 20e9, 200e9
    greedy = speed_proxy.limits(size, "greedy", 8, 640, bandwidth, flops)
    avisc = speed_proxy.limits(size, "avisc", 8, 640, bandwidth, flops)
    clearsight = speed_proxy.limits(size, "clearsight", 8, 640, bandwidth, flops)
    assert clearsight == greedy  # one pass: the same bytes and FLOPs
    assert 1.9 < avisc[0] / greedy[0] < 2.0  # two prefills, one vision pass
    assert 1.0 < avisc[1] / greedy[1] < 1.2  # 16 rows read the weights once: the step stays bandwidth-bound
    step_bytes = size.lm_params * 4.0
    assert greedy[1] >= step_bytes / bandwidth
