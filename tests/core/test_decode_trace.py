"""``decode(..., return_dict=True)``, the branches as parts, your own branch, and options derived from
DecodeSettings."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import row as row_inputs

from avisc_lib import answer_logits, decode, image_attention, select_blind_tokens
from avisc_lib.benchmarks import run_benchmark
from avisc_lib.benchmarks.cli import build_parser
from avisc_lib.decoding import METHODS
from avisc_lib.settings import DecodeSettings, decode_options

STEPS = 6
ONE_PASS = ("greedy", "sample", "clearsight", "var")  # no second set of logits (PAI refines by default)
OPTIONS = {"avisc": {"alpha": 2.0}, "random_mask": {"seed": 1, "lam": 0.5}, "vcd": {"seed": 2}}


@pytest.mark.parametrize("method", METHODS)
def test_trace_sequences_equal_the_tensor_and_tokens_are_the_argmax_of_scores(llava_case, method):
    inputs = llava_case.batch(3)
    kwargs = {"max_new_tokens": STEPS, "seed": 9, **OPTIONS.get(method, {})}
    tensor = decode(llava_case.model, inputs, method=method, **kwargs)
    out = decode(llava_case.model, inputs, method=method, return_dict=True, **kwargs)
    assert torch.equal(out.sequences, tensor)
    assert len(out.scores) == len(out.logits) == tensor.shape[1]
    assert (out.branch_logits is None) == (method in ONE_PASS)
    if method != "sample":
        eos = llava_case.model.generation_config.eos_token_id
        for t, scores in enumerate(out.scores):
            running = ~(tensor[:, :t] == eos).any(1)  # rows not finished before step t
            assert torch.equal(scores.argmax(-1)[running], tensor[running, t])


def test_avisc_scores_are_the_contrast_and_cut_of_the_traced_logits(llava_case):
    alpha, beta = 2.0, 0.2
    out = decode(
        llava_case.model,
        llava_case.batch(3),
        method="avisc",
        alpha=alpha,
        beta=beta,
        max_new_tokens=STEPS,
        return_dict=True,
    )
    for scores, logits, other in zip(out.scores, out.logits, out.branch_logits):
        for b in range(logits.shape[0]):
            expected = [
                (1 + alpha) * x - alpha * y if x >= math.log(beta) + max(logits[b].tolist()) else -math.inf
                for x, y in zip(logits[b].tolist(), other[b].tolist())
            ]
            assert scores[b].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_kept_masks_of_avisc_and_its_controls(llava_case):
    model, inputs = llava_case.model, llava_case.batch(3)
    blind = select_blind_tokens(image_attention(model, inputs), 0.5, 0.5)
    avisc = decode(model, inputs, method="avisc", lam=0.5, max_new_tokens=1, return_dict=True)
    assert torch.equal(avisc.kept, blind)
    assert avisc.layers.dtype == torch.bool and avisc.layers.any(-1).all()
    controls = [
        decode(model, inputs, method="random_mask", lam=0.5, seed=s, max_new_tokens=1, return_dict=True)
        for s in (0, 0, 1)
    ]
    assert torch.equal(controls[0].kept, controls[1].kept)  # seeded
    assert not torch.equal(controls[0].kept, controls[2].kept)
    assert not torch.equal(controls[0].kept, blind)
    assert torch.equal(controls[0].kept.sum(-1), blind.sum(-1))  # same size per row
    zero = decode(model, inputs, method="zero_image", max_new_tokens=1, return_dict=True)
    assert not zero.kept.any() and zero.layers is None


@pytest.mark.parametrize("method", ["avisc", "random_mask", "zero_image"])
def test_second_branch_logits_are_the_model_on_the_kept_tokens_only(embedded_case, method):
    model, inputs = embedded_case.model, embedded_case.batch(2)
    out = decode(model, inputs, method=method, seed=3, max_new_tokens=1, return_dict=True)
    vocab = range(out.logits[0].shape[-1])
    expected = answer_logits(model, inputs, vocab, replace=~out.kept)
    torch.testing.assert_close(out.branch_logits[0], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.logits[0], answer_logits(model, inputs, vocab), rtol=1e-4, atol=1e-4)


def test_random_mask_rows_do_not_depend_on_their_batch(llava_case):
    inputs = llava_case.batch(3)
    batched = decode(llava_case.model, inputs, method="random_mask", seed=5, max_new_tokens=1, return_dict=True)
    alone = decode(
        llava_case.model,
        {k: v[1:2] for k, v in inputs.items()},
        method="random_mask",
        seed=5,
        max_new_tokens=1,
        return_dict=True,
    )
    assert torch.equal(batched.kept[1], alone.kept[0])


def test_your_own_branch(llava_case):
    model, inputs = llava_case.model, llava_case.batch(2)
    seen = {}

    def keep_blind(features, attention):
        seen["shapes"] = (tuple(features.shape), tuple(attention.shape))
        blind = select_blind_tokens(attention, 0.5, 1.0)
        return features * blind[..., None]

    mine = decode(model, inputs, method=keep_blind, alpha=2.0, max_new_tokens=STEPS)
    assert torch.equal(mine, decode(model, inputs, method="avisc", alpha=2.0, max_new_tokens=STEPS))
    batch, tokens = inputs["input_ids"].shape[0], int((inputs["input_ids"][0] == model.config.image_token_id).sum())
    assert seen["shapes"][0][:2] == (batch, tokens) and seen["shapes"][1][0] == batch
    with pytest.raises(ValueError, match="returned"):
        decode(model, inputs, method=lambda features, attention: features[:, :3], max_new_tokens=1)


def test_unknown_methods_and_options_are_named(llava_case):
    inputs = llava_case.batch(1)
    with pytest.raises(ValueError, match="unknown method 'avsic'"):
        decode(llava_case.model, inputs, method="avsic")
    with pytest.raises(ValueError, match="alhpa"):
        decode(llava_case.model, inputs, method="avisc", alhpa=1.0)
    with pytest.raises(ValueError, match="method must be"):
        decode(llava_case.model, inputs, method=3)


def test_every_decode_setting_is_a_flag_of_avisc_eval_run():
    parser = build_parser()
    run = next(a for a in parser._subparsers._group_actions[0].choices["run"]._subparsers._group_actions)
    help_text = run.choices["pope"].format_help()
    for option in decode_options():
        if option.name != "seed":  # a run-level flag: it also draws synthetic questions
            flag = "--" + option.name.replace("_", "-")
            assert flag in help_text, flag
            assert option.help.split()[0] in help_text  # its help text is shown


@pytest.mark.parametrize("benchmark", ["pope", "mme", "amber"])
@pytest.mark.parametrize("method", ["random_mask", "zero_image"])
def test_controls_run_as_benchmark_methods(embedded_case, tmp_path, benchmark, method):
    metrics = run_benchmark(
        benchmark,
        model_name="tiny",
        model=embedded_case.model,
        processor=embedded_case.processor,
        method=method,
        out_dir=tmp_path,
        limit=2,
        batch_size=4,
        max_new_tokens=8,
        progress=False,
    )
    assert metrics
    records = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert records and all(f'"method": "{method}"' in line for line in records)


def test_a_branch_function_is_refused_by_the_runner(embedded_case, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        run_benchmark(
            "pope",
            model_name="tiny",
            model=embedded_case.model,
            processor=embedded_case.processor,
            method=lambda f, a: f,
            out_dir=tmp_path,
            limit=2,
        )


NEUTRAL = {
    "pai": {"pai_alpha": 0.0, "pai_gamma": 1.0},
    "clearsight": {"clearsight_enhance": 1.0, "clearsight_suppress": 1.0},
    "var": {"var_p": 1.0},
    "only": {"only_alpha_pos": 0.0, "only_alpha_neg": 0.0},
}


@pytest.mark.parametrize("method", NEUTRAL)
def test_attention_methods_at_their_neutral_values_are_greedy(case, method):
    inputs = case.batch(3)
    greedy = decode(case.model, inputs, method="greedy", max_new_tokens=STEPS, return_dict=True)
    out = decode(case.model, inputs, method=method, max_new_tokens=STEPS, return_dict=True, **NEUTRAL[method])
    assert torch.equal(out.sequences, greedy.sequences)
    for mine, theirs in zip(out.logits, greedy.logits):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["pai", "clearsight", "var", "only"])
def test_attention_methods_batched_rows_equal_single_samples(case, method):
    inputs = case.batch(4)
    batched = decode(case.model, inputs, method=method, max_new_tokens=STEPS, return_dict=True)
    for b in range(4):
        alone = decode(case.model, row_inputs(inputs, b), method=method, max_new_tokens=STEPS, return_dict=True)
        torch.testing.assert_close(batched.logits[0][b], alone.logits[0][0], rtol=1e-4, atol=1e-4)
        eos = case.model.generation_config.eos_token_id
        mine, theirs = batched.sequences[b].tolist(), alone.sequences[0].tolist()
        end = (mine.index(eos) + 1) if eos in mine else len(mine)
        assert mine[:end] == theirs[:end], f"row {b}"


@pytest.mark.parametrize("method", ["pai", "clearsight", "only"])
def test_attention_methods_change_the_logits(llava_case, method):
    inputs = llava_case.batch(2)
    greedy = decode(llava_case.model, inputs, method="greedy", max_new_tokens=2, return_dict=True)
    out = decode(
        llava_case.model,
        inputs,
        method=method,
        max_new_tokens=2,
        return_dict=True,
        **({"pai_alpha": 2.0, "pai_gamma": 1.0} if method == "pai" else {}),
    )
    assert not torch.allclose(out.scores[-1].log_softmax(-1), greedy.scores[-1].log_softmax(-1), atol=1e-3)


@pytest.mark.parametrize("method", ["pai", "clearsight", "var", "only"])
def test_attention_methods_run_as_benchmark_methods(embedded_case, tmp_path, method):
    metrics = run_benchmark(
        "pope",
        model_name="tiny",
        model=embedded_case.model,
        processor=embedded_case.processor,
        method=method,
        out_dir=tmp_path,
        limit=3,
        batch_size=4,
        progress=False,
    )
    assert set(metrics) >= {"accuracy", "f1"}


def test_bad_attention_hyper_parameters_are_named(llava_case):
    inputs = llava_case.batch(1)
    for method, bad, match in [
        ("pai", {"pai_alpha": -1.0}, "pai_alpha"),
        ("clearsight", {"clearsight_enhance": 0.0}, "clearsight_enhance"),
        ("var", {"var_p": 1.5}, "var_p"),
        ("only", {"only_layer": 99}, "only_layer"),
        ("pai", {"pai_layers": (3, 2)}, "pai_layers"),
    ]:
        with pytest.raises(ValueError, match=match):
            decode(llava_case.model, inputs, method=method, max_new_tokens=1, **bad)


def test_used_options_follow_the_method():
    assert "alpha" not in DecodeSettings("greedy").used_options()
    assert {"alpha", "beta", "lam", "layer_gamma"} <= set(DecodeSettings("random_mask").used_options())
    assert "lam" not in DecodeSettings("vcd").used_options() and "noise_step" in DecodeSettings("vcd").used_options()
    assert {k for k in DecodeSettings("pai").used_options() if k.startswith(("pai", "var", "only", "clearsight"))} == {
        "pai_alpha",
        "pai_gamma",
        "pai_layers",
    }


def test_a_run_folder_records_only_the_options_its_method_reads(embedded_case, tmp_path):
    import json

    from avisc_lib.benchmarks.store import ConfigMismatch

    run = dict(
        model_name="tiny",
        model=embedded_case.model,
        processor=embedded_case.processor,
        limit=2,
        batch_size=4,
        max_new_tokens=4,
        progress=False,
    )
    run_benchmark("pope", method="greedy", out_dir=tmp_path / "g", **run)
    assert "pai_alpha" not in json.loads((tmp_path / "g" / "config.json").read_text())["decode"]
    run_benchmark("pope", method="greedy", out_dir=tmp_path / "g", pai_alpha=0.5, **run)  # unused: resumes
    run_benchmark("pope", method="pai", out_dir=tmp_path / "p", **run)
    with pytest.raises(ConfigMismatch, match="pai_alpha"):
        run_benchmark("pope", method="pai", out_dir=tmp_path / "p", pai_alpha=0.5, **run)


@pytest.mark.parametrize("method", ["random_mask", "zero_image", "only"])
def test_avisc_eval_run_takes_the_new_methods(tmp_path, capsys, method):
    from avisc_lib.benchmarks.cli import main

    out = tmp_path / method
    assert (
        main(
            [
                "run",
                "pope",
                "--model",
                "tiny",
                "--method",
                method,
                "--limit",
                "3",
                "--batch-size",
                "3",
                "--max-new-tokens",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert f"tiny, {method}, protocol argmax" in capsys.readouterr().out
    assert (out / "metrics.json").is_file()
