"""``decode(..., compile=True)``: the decode steps under ``torch.compile`` with a static KV cache give
the tokens of the eager loop, for every method it supports, at B = 1 and left-padded B = 4; the
methods that edit attention during the steps say that they are not supported."""

import pytest
import torch

from avisc_lib import methods
from avisc_lib.decoding import decode

pytestmark = pytest.mark.slow  # compiling takes ~10-25 s per model and shape on 2 cores

COMPILED = [m.name for m in methods.registered() if m.intervention is None]
HOOKED = [m.name for m in methods.registered() if m.intervention is not None]
SEED = 3  # the same draws in both runs: sampling's, VCD's noise, random_mask's tokens


def _both(case, inputs, method, **options):
    eager = decode(case.model, inputs, method=method, return_dict=True, **options)
    compiled = decode(case.model, inputs, method=method, return_dict=True, compile=True, **options)
    return eager, compiled


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("method", COMPILED)
def test_compiled_steps_give_the_eager_tokens(embedded_case, method, rows):
    inputs = embedded_case.batch(rows)
    eager, compiled = _both(embedded_case, inputs, method, max_new_tokens=12, seed=SEED)
    assert torch.equal(eager.sequences, compiled.sequences)
    # The same scores up to rounding: fused kernels round differently, and a contrast (1 + alpha) l - alpha l'
    # magnifies it (VCD: 2e-3 on scores of ~4, found once).
    for a, b in zip(eager.scores, compiled.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=5e-3)


@pytest.mark.parametrize("case_name", ["llava_gqa_case", "instructblip_case"])
def test_compiled_steps_on_grouped_attention_and_instructblip(case_name, request):
    case = request.getfixturevalue(case_name)
    for method in ("greedy", "avisc"):
        eager, compiled = _both(case, case.batch(4), method, max_new_tokens=8)
        assert torch.equal(eager.sequences, compiled.sequences), method


def test_compiled_steps_run_again_without_recompiling_into_other_tokens(embedded_case):
    inputs = embedded_case.batch(2)
    first = decode(embedded_case.model, inputs, method="avisc", max_new_tokens=6, compile=True)
    again = decode(embedded_case.model, inputs, method="avisc", max_new_tokens=6, compile=True)
    assert torch.equal(first, again)


@pytest.mark.parametrize("method", HOOKED)
def test_methods_that_edit_attention_in_the_steps_refuse_compile(embedded_case, method):
    with pytest.raises(ValueError, match=f"compile=True does not support '{method}'"):
        decode(embedded_case.model, embedded_case.batch(1), method=method, compile=True)
