"""The natural-text probe of the organism's language model: byte tokens, corpus rows, the CLI."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from avisc_lib.tiny import corpora, prose


@pytest.fixture(scope="module")
def tokenizer():
    return corpora.byte_tokenizer()


def test_byte_tokens_round_trip_any_text_and_only_bos_is_added(tokenizer):
    text = "Déjà vu: <s> and </s> are text here.\n\tß"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == 1 + len(text.encode())  # one token per byte, specials in the text split too
    assert tokenizer.bos_token_id not in ids[1:] and tokenizer.eos_token_id not in ids[1:]
    assert tokenizer.decode(ids[1:]) == text
    assert tokenizer.convert_tokens_to_ids("<image>") != tokenizer.unk_token_id  # build_model needs it


def test_rows_are_bos_then_consecutive_corpus_tokens():
    ids = np.arange(100, 400)
    rows = corpora.prose_rows(ids, 1, 8, 16, np.random.default_rng(0))
    assert rows["input_ids"].shape == (8, 16) and (rows["labels"] == rows["input_ids"]).all()
    assert (rows["input_ids"][:, 0] == 1).all() and rows["attention_mask"].all()
    assert (rows["input_ids"][:, 2:] - rows["input_ids"][:, 1:-1] == 1).all()  # one window each


def test_an_unknown_corpus_is_named_in_the_error():
    with pytest.raises(ValueError, match="unknown corpus 'wiki'.*stdlib, world"):
        prose.corpus("wiki")


def test_the_held_out_part_is_the_corpus_tail():
    train, held_out = corpora.split(np.arange(1000))
    assert len(held_out) == 50 and train[-1] + 1 == held_out[0]


def test_word_tokens_keep_the_world_tokenizers_ids_and_add_the_prose_words():
    from avisc_lib.tiny.build import build_tokenizer

    words, world = corpora.word_tokenizer(), build_tokenizer()
    assert all(words.convert_tokens_to_ids(token) == i for token, i in world.get_vocab().items())
    assert len(world) < len(words) <= len(world) + corpora.PROSE_WORDS
    ids = prose.corpus_ids("stdlib", "words")
    assert (ids == words.unk_token_id).mean() < 0.1  # the added words cover most of the prose
    assert words.decode(words("The Sequence is empty.", add_special_tokens=False).input_ids) == "the sequence is empty."


def test_chat_bytes_lower_case_and_give_each_answer_a_token_of_its_own(tokenizer):
    chat = corpora.byte_tokenizer(chat=True, split_special_tokens=False)
    assert all(chat.convert_tokens_to_ids(token) == i for token, i in tokenizer.get_vocab().items())  # bytes stay
    assert len(chat) == len(tokenizer) + len(corpora.ANSWER_MERGES)
    prompt = chat("USER: <image>\nIs there a dog? ASSISTANT:").input_ids
    assert prompt.count(chat.convert_tokens_to_ids("<image>")) == 1  # a processor finds the image placeholder
    yes, no = (chat(f"USER: <image>\nIs there a dog? ASSISTANT: {w}</s>").input_ids for w in ("Yes", "no"))
    assert yes[: len(prompt)] == no[: len(prompt)] == prompt
    assert yes[len(prompt) :] == [chat.convert_tokens_to_ids("Ġyes"), chat.eos_token_id]
    assert no[len(prompt) :] == [chat.convert_tokens_to_ids("Ġno"), chat.eos_token_id]
    assert chat.decode(chat("Not YET now").input_ids[1:]) == "not yet now"
    assert chat("<s>", add_special_tokens=False).input_ids == [chat.bos_token_id]
    prose_ids = corpora.TOKENIZERS["chat-bytes"]()("<s>", add_special_tokens=False).input_ids
    assert len(prose_ids) == 3 and chat.bos_token_id not in prose_ids  # in a corpus, "<s>" is text


@pytest.mark.parametrize(
    ("corpus", "tokens", "words"),
    [
        ("stdlib", "bytes", "the"),
        ("world", "bytes", "ASSISTANT:"),
        ("stdlib", "words", "the"),
        ("stdlib", "chat-bytes", "the"),
    ],
)
def test_cli_trains_on_either_corpus_and_logs_one_row(tmp_path, corpus, tokens, words):
    log = tmp_path / "prose.jsonl"
    command = [sys.executable, "-m", "avisc_lib.tiny.prose", "--layers", "1", "--width", "64", "--heads", "2"]
    command += ["--family", "gpt2", "--steps", "4", "--every", "2", "--batch", "4", "--length", "32", "--log", str(log)]
    command += ["--corpus", corpus, "--tokens", tokens, "--work", str(tmp_path)]
    kept = tmp_path / "kept" / "lm.safetensors"
    subprocess.run(
        command + ["--keep", str(kept)] * (tokens == "chat-bytes"), check=True, capture_output=True, text=True
    )
    assert not list(tmp_path.glob("*.pt"))  # the checkpoint goes once the row is logged
    assert kept.is_file() == (tokens == "chat-bytes")
    if kept.is_file():  # a language model a byte language side can start from
        from avisc_lib.tiny.build import LMSize, build_model
        from avisc_lib.tiny.train import load_language_model

        model = build_model(corpora.TOKENIZERS[tokens](), lm=LMSize(1, 64, heads=2, family="gpt2"))
        load_language_model(model, kept)
        assert torch.equal(model.lm_head.weight, load_file(kept)["lm_head.weight"])
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["recipe"]["family"] == "gpt2" and row["recipe"]["length"] == 32
    assert row["corpus"]["name"] == corpus and row["corpus"]["characters"] > 2_000_000
    assert row["corpus"]["tokens"] == tokens and row["corpus"]["vocabulary"] == len(corpora.TOKENIZERS[tokens]())
    assert row["corpus"]["train_tokens"] == len(corpora.split(prose.corpus_ids(corpus, tokens))[0])
    assert row["corpus"]["sha256"] == hashlib.sha256(prose.corpus(corpus).encode()).hexdigest()
    assert words in prose.corpus(corpus)
    assert [h["step"] for h in row["history"]] == [2, 4]
    assert len(row["history"][-1]["bos"]) == 1 and len(row["history"][-1]["bos"][0]) == 2
    table = subprocess.run([*command[:3], "--summary", "--log", str(log)], check=True, capture_output=True, text=True)
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith(f"| {corpus} | {tokens} | 1 x 64, 2 heads, gpt2 | 4 | 4 x 32 |")
    assert lines[2].count("|") == lines[0].count("|")
