"""The Bigram-Backcopy check of the organism's language model: the task, the probe, the CLI."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from avisc_lib.tiny import backcopy, bigram
from avisc_lib.tiny.build import LMSize, build_model, build_tokenizer, text_config


@pytest.fixture(scope="module")
def chain():
    return bigram.make_chain(np.arange(10, 40), seed=3)


def test_sequences_copy_after_triggers_and_follow_the_chain_elsewhere(chain):
    row_of = {int(t): i for i, t in enumerate(chain.tokens)}
    rows = [row_of[int(t)] for t in chain.sample(np.random.default_rng(0), 2000)]
    copies = 0
    for i in range(2, len(rows)):
        if rows[i - 1] in chain.triggers:
            assert rows[i] == rows[i - 2]
            copies += 1
        else:
            assert rows[i] in chain.successors[rows[i - 1]]
    assert copies > 100  # the triggers are the chain's most frequent tokens


def test_triggers_are_the_bigram_chains_most_frequent_tokens(chain):
    bigram = dataclasses.replace(chain, triggers=frozenset())
    rows = np.searchsorted(chain.tokens, bigram.sample(np.random.default_rng(1), 50000))
    counts = np.bincount(rows, minlength=len(chain.tokens))
    assert set(np.argsort(-counts)[:3]) == set(chain.triggers)


def ideal(chain: bigram.Chain) -> float:
    return bigram.ideal_loss(chain, bigram.bb_batch(chain, bos=1, step=0, bs=3, length=17, seed=0)["input_ids"])


def test_ideal_loss_counts_the_first_token_and_each_choice():
    tokens, rows = np.arange(5, 13), np.arange(8)
    cycle = bigram.Chain(tokens, np.roll(rows, -1)[:, None], np.ones((8, 1)), frozenset({2}))
    assert ideal(cycle) == pytest.approx(np.log(8) / 16)  # only the first token is uncertain
    coin = bigram.Chain(tokens, np.stack([rows, np.roll(rows, -1)], 1), np.full((8, 2), 0.5), frozenset())
    assert ideal(coin) == pytest.approx((np.log(8) + 15 * np.log(2)) / 16)


def test_copy_positions_are_the_triggers_from_position_two(chain):
    ids = bigram.bb_batch(chain, bos=1, step=0, bs=4, length=64, seed=0)["input_ids"]
    copy = chain.copy_positions(ids)
    assert not copy[:, :2].any() and copy.any()
    for b, t in copy.nonzero().tolist():
        assert t + 1 == ids.shape[1] or ids[b, t + 1] == ids[b, t - 1]  # the next token copies
    triggers = set(chain.tokens[sorted(chain.triggers)].tolist())
    assert all(ids[b, t].item() not in triggers for b, t in (~copy[:, 2:]).nonzero().add(torch.tensor([0, 2])).tolist())


def test_batch_starts_with_bos_and_labels_every_token(chain):
    batch = bigram.bb_batch(chain, bos=1, step=4, bs=3, length=16, seed=0)
    assert batch["input_ids"].shape == (3, 16) and (batch["input_ids"][:, 0] == 1).all()
    assert torch.equal(batch["labels"], batch["input_ids"])
    again = bigram.bb_batch(chain, bos=1, step=4, bs=3, length=16, seed=0)
    assert torch.equal(again["input_ids"], batch["input_ids"])


def test_build_model_sets_the_number_of_heads_and_the_rotary_base():
    text = build_model(build_tokenizer(), lm=LMSize(1, 64, 2, rope_theta=1e6)).config.text_config
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (2, 2, 32)
    assert text.rope_parameters["rope_theta"] == 1e6
    assert build_model(build_tokenizer()).config.text_config.rope_parameters["rope_theta"] == 10000.0
    with pytest.raises(ValueError, match="width 64 does not split into 3 heads"):
        LMSize(1, 64, 3)
    with pytest.raises(ValueError, match="GPT-2 learns absolute positions"):
        LMSize(family="gpt2", rope_theta=1e6)
    with pytest.raises(ValueError, match="gpt2 always has attention biases"):
        LMSize(family="gpt2", attention_bias=True)
    biased = build_model(build_tokenizer(), lm=LMSize(1, 64, 2, attention_bias=True)).model.language_model
    assert biased.layers[0].self_attn.q_proj.bias is not None
    sizes = [LMSize(), LMSize(2, 64, 1), LMSize(family="gpt2"), LMSize(rope_theta=1e6), LMSize(attention_bias=True)]
    assert [lm.name for lm in sizes] == ["", "lm2x64h1", "lm4x128-gpt2", "lm4x128-rope1e+06", "lm4x128-bias"]


def test_text_config_builds_each_family_at_the_asked_size():
    tokenizer = build_tokenizer()
    for family, lm_class, blocks in (
        ("llama", "LlamaModel", "layers"),
        ("gpt_neox", "GPTNeoXModel", "layers"),
        ("gpt2", "GPT2Model", "h"),
    ):
        lm = build_model(tokenizer, lm=LMSize(3, 64, 2, family)).model.language_model
        assert type(lm).__name__ == lm_class and len(getattr(lm, blocks)) == 3
        config = lm.config
        assert (config.hidden_size, config.num_attention_heads, config.vocab_size) == (64, 2, len(tokenizer))
    neox = text_config(tokenizer, LMSize(1, 64, 2, "gpt_neox"))
    assert (
        neox.rope_parameters["partial_rotary_factor"] == 1.0
        and not neox.use_parallel_residual
        and neox.intermediate_size == 128
    )
    assert text_config(tokenizer, LMSize(1, 64, 2, "gpt2")).n_inner == 128
    with pytest.raises(ValueError, match="unknown language-model family 'mamba'; choose one of llama, gpt_neox, gpt2"):
        LMSize(family="mamba")


def test_dropout_sets_every_dropout_of_each_family_and_names_itself():
    tokenizer = build_tokenizer()
    gpt2 = text_config(tokenizer, LMSize(1, 64, 2, "gpt2"))
    assert (gpt2.embd_pdrop, gpt2.attn_pdrop, gpt2.resid_pdrop) == (0.1, 0.1, 0.1)  # the family's default
    gpt2 = text_config(tokenizer, LMSize(1, 64, 2, "gpt2", dropout=0.0))
    assert (gpt2.embd_pdrop, gpt2.attn_pdrop, gpt2.resid_pdrop) == (0.0, 0.0, 0.0)
    neox = text_config(tokenizer, LMSize(1, 64, 2, "gpt_neox", dropout=0.2))
    assert (neox.attention_dropout, neox.hidden_dropout) == (0.2, 0.2)
    assert text_config(tokenizer, LMSize(1, 64, 2, dropout=0.2)).attention_dropout == 0.2
    assert text_config(tokenizer, LMSize(1, 64, 2)).attention_dropout == 0.0
    assert LMSize(family="gpt2", dropout=0.0).name == "lm4x128-gpt2-drop0"
    assert LMSize(family="gpt2", dropout=0.0).architecture == ", gpt2, dropout 0"
    with pytest.raises(ValueError, match="dropout is a probability below 1, not 1.5"):
        LMSize(dropout=1.5)


def zero_first_queries(lm, family: str) -> None:
    """Zero layer 0's queries (weights and biases), so that its heads attend uniformly over the causal prefix."""
    if family == "llama":
        lm.layers[0].self_attn.q_proj.weight.zero_()
    elif family == "gpt2":  # c_attn: a Conv1D over [q | k | v]
        width = lm.config.hidden_size
        lm.h[0].attn.c_attn.weight[:, :width].zero_()
        lm.h[0].attn.c_attn.bias[:width].zero_()
    else:  # query_key_value: per head [q, k, v]
        qkv = lm.layers[0].attention.query_key_value
        heads = lm.config.num_attention_heads
        qkv.weight.view(heads, 3, -1, qkv.in_features)[:, 0].zero_()
        qkv.bias.view(heads, 3, -1)[:, 0].zero_()


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gpt2"])
def test_head_probe_measures_uniform_attention_exactly(chain, family):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, lm=LMSize(2, 64, 2, family)).eval()
    lm = model.model.language_model
    with torch.no_grad():
        zero_first_queries(lm, family)
    ids = bigram.bb_batch(chain, tokenizer.bos_token_id, 0, 2, 24, 0)["input_ids"]
    copy = chain.copy_positions(ids)
    probe = backcopy.head_probe(model, ids, copy)
    uniform = np.mean([1 / (t + 1) for t in range(2, 24)])  # query t sees t + 1 keys
    assert backcopy.even_share(24) == pytest.approx(uniform)
    for key in ("bos", "self", "previous"):
        assert len(probe[key]) == 2 and len(probe[key][0]) == 2
        assert probe[key][0] == pytest.approx([uniform] * 2, abs=1e-4)
    assert len(probe["phi_bos"]) == len(probe["phi_other"]) == 2
    t = torch.arange(24).expand(2, 24)[:, 2:]
    for key, where in (("bos_copy", copy[:, 2:]), ("bos_other", ~copy[:, 2:])):
        expected = (1 / (t[where] + 1)).mean().item()
        assert probe[key][0] == pytest.approx([expected] * 2, abs=1e-4)
    assert lm.config._attn_implementation == "sdpa"  # restored after the eager pass


@pytest.mark.parametrize(
    ("architecture", "named"),
    [(["--rope-theta", "1e6", "--attention-bias"], ", rope 1e+06, attention bias"), (["--family", "gpt2"], ", gpt2")],
)
def test_cli_trains_and_logs_one_row(tmp_path, architecture, named):
    log = tmp_path / "bb.jsonl"
    command = [sys.executable, "-m", "avisc_lib.tiny.backcopy", "--layers", "1", "--width", "64", "--heads", "2"]
    command += ["--steps", "4", "--every", "2", "--batch", "4", "--length", "16", "--log", str(log), *architecture]
    subprocess.run([*command, "--work", str(tmp_path / "work")], check=True, capture_output=True, text=True)
    assert not any((tmp_path / "work").iterdir())  # the checkpoint goes once the row is logged
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["recipe"]["heads"] == 2 and row["recipe"]["batch"] == 4
    assert LMSize(**{k: row["recipe"][k] for k in backcopy.LM_FIELDS}).architecture == named
    assert [h["step"] for h in row["history"]] == [2, 4]
    assert len(row["history"][-1]["bos"]) == 1 and len(row["history"][-1]["bos"][0]) == 2
    table = subprocess.run([*command[:3], "--summary", "--log", str(log)], check=True, capture_output=True, text=True)
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith(f"| 1 x 64, 2 heads{named} | 4 | 4 x 16 |")
    assert lines[2].count("|") == lines[0].count("|") and " / " in lines[2].split("|")[8]


def test_a_probe_resumes_from_its_checkpoint_instead_of_training_again(tmp_path, chain):
    tokenizer = build_tokenizer()
    rows = bigram.bb_batch(chain, tokenizer.bos_token_id, 0, 2, 16, 0)
    checkpoint = tmp_path / "probe.pt"

    def train(batch_fn):
        model = build_model(tokenizer, lm=LMSize(1, 32, 2, "gpt2"))
        recipe = {"steps": 4, "lr": 1e-3, "wd": 0.0, "seed": 0}
        return backcopy.train_and_probe(model, rows, batch_fn, "probe", recipe, 2, checkpoint)

    history = train(lambda step: bigram.bb_batch(chain, tokenizer.bos_token_id, step, 2, 16, 0))
    assert checkpoint.exists() and [h["step"] for h in history] == [2, 4]

    def no_more_batches(step):
        raise AssertionError(f"step {step} trained again")

    assert train(no_more_batches) == history
