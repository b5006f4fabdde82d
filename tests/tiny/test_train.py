"""The staged trainer runs end to end, checkpoints, resumes, and is deterministic for a seed."""

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from avisc_lib.tiny import train

TINY_RUN = ["--steps0", "3", "--steps1", "2", "--steps2", "3", "--bs0", "4", "--bs", "4", "--threads", "1"]


@pytest.mark.slow  # trains three times: about 35-50 s
def test_training_is_deterministic_and_resumable(tmp_path):
    train.main(["--out", str(tmp_path / "a"), *TINY_RUN])
    train.main(["--out", str(tmp_path / "b"), *TINY_RUN])
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert sorted(log["stages"]) == ["0", "1", "2"]
    assert {"accuracy", "yes_ratio", "adversarial"} <= set(log["stages"]["2"]["history"][-1])

    (tmp_path / "a" / "stage2.pt").unlink()  # as if killed during stage 2
    train.main(["--out", str(tmp_path / "a"), *TINY_RUN])
    again = load_file(tmp_path / "a" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], again[k]) for k in a)


def test_optimise_resumes_a_killed_run_to_the_weights_of_an_uninterrupted_one(tmp_path):
    def run(path, kill_at=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))

        def batch(step):
            if step == kill_at:
                raise KeyboardInterrupt
            return torch.randn(3, 4, generator=torch.Generator().manual_seed(step))

        def loss(x):
            return model(x).pow(2).mean()

        checkpoint = train.Checkpoint(path, model, every=2)
        history = train.optimise(
            model.parameters(), 6, 1e-2, batch, loss, "t", lambda: {}, every=2, checkpoint=checkpoint
        )
        return model, history

    whole, whole_history = run(tmp_path / "whole.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed.pt", kill_at=3)  # the checkpoint holds step 2
    assert torch.load(tmp_path / "killed.pt", weights_only=True)["step"] == 2
    resumed, history = run(tmp_path / "killed.pt")
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.parameters()))  # dropout's RNG too
    assert [(h["step"], h["loss"]) for h in history] == [(h["step"], h["loss"]) for h in whole_history]
    assert [h["step"] for h in history] == [2, 4, 6] and all(h["seconds"] >= 0 for h in history)
    assert not list(tmp_path.glob("*.partial"))


def test_lr_schedule_warms_up_then_decays():
    assert train.lr_schedule(0, 1000) == 0.01
    assert train.lr_schedule(99, 1000) == 1.0
    assert train.lr_schedule(999, 1000) < 0.01
    assert train.lr_schedule(0, 1000, decay=False) == 0.01
    assert train.lr_schedule(999, 1000, decay=False) == 1.0


def test_text_documents_answer_from_their_caption():
    import numpy as np

    from avisc_lib.tiny.build import build_tokenizer
    from avisc_lib.world import questions as Q
    from avisc_lib.world.scenes import make_scene

    scene = make_scene("train", 5)
    text = train.text_document(scene, np.random.default_rng(0))
    assert text.startswith(f"USER: {Q.caption(scene)}\n") and text.count("ASSISTANT:") == text.count("</s>") >= 1
    tokenizer = build_tokenizer()
    batch = train.text_batch(tokenizer, 0, 4, seed=0)
    ids, labels = batch["input_ids"], batch["labels"]
    assert (ids[:, 0] == tokenizer.bos_token_id).all() and tokenizer.unk_token_id not in ids
    assert ((labels == -100) == (batch["attention_mask"] == 0)).all()  # every real token is a target
    assert ((ids == tokenizer.eos_token_id).sum(1) >= 1).all()


def test_text_stage_names_its_settings_off_their_defaults():
    assert train.TextStage(8000).name == "text8000"
    assert train.TextStage(3000, pack=256, weight_decay=0.1).name == "text3000-pack256-wd0.1"
    assert train.TextStage(1, lr=1e-5).settings == ["lr1e-05"]
    assert train.TextStage(1, pack=64, noise=16).name == "text1-pack64-noise16"
    assert train.TextStage(1, pack=64, backcopy=0.25).name == "text1-pack64-bb0.25"
    assert train.TextStage(1, lr=3e-3, decay=False).name == "text1-lr0.003-constant"
    assert train.TextStage(9, pack=64, backcopy_first=4).name == "text9-pack64-bbfirst4"
    assert train.TextStage(9, pack=64, prose=0.5).name == "text9-pack64-prose0.5"
    with pytest.raises(ValueError, match="packed text"):
        train.TextStage(1, prose=0.5)
    with pytest.raises(ValueError, match="1 at most in all: 0.5 and 0.75"):
        train.TextStage(1, pack=64, backcopy=0.5, prose=0.75)
    with pytest.raises(ValueError, match="packed text"):
        train.TextStage(1, backcopy=0.25)
    with pytest.raises(ValueError, match="fractions of the rows, 1 at most in all: 1.5 and 0.0"):
        train.TextStage(1, pack=64, backcopy=1.5)
    with pytest.raises(ValueError, match="packed text"):
        train.TextStage(9, backcopy_first=4)
    with pytest.raises(ValueError, match="10 Bigram-Backcopy steps do not fit a 9-step"):
        train.TextStage(9, pack=64, backcopy_first=10)
    bytes_from_prose = train.TextStage(9, pack=64, tokens="chat-bytes", init="runs/keep/prose9000.safetensors")
    assert bytes_from_prose.name == "text9-pack64-chat-bytes-init-prose9000"
    with pytest.raises(ValueError, match="packed text"):
        train.TextStage(9, tokens="chat-bytes")
    with pytest.raises(ValueError, match="unknown text tokens 'bpe'; choose one of words, chat-bytes"):
        train.TextStage(9, pack=64, tokens="bpe")
    with pytest.raises(ValueError, match="goes with a text stage"):
        train.TextStage(0, init="prose.safetensors")


def test_text_flags_make_the_text_stage():
    ap = argparse.ArgumentParser()
    train.TextStage.add_arguments(ap)
    assert train.TextStage.from_args(ap.parse_args([])) == train.NO_TEXT
    args = ap.parse_args(
        [
            "--steps-text",
            "30",
            "--text-pack",
            "64",
            "--text-lr",
            "3e-3",
            "--text-backcopy",
            "0.25",
            "--text-constant-lr",
            "--text-backcopy-first",
            "10",
            "--text-prose",
            "0.5",
            "--text-tokens",
            "chat-bytes",
            "--text-init",
            "prose.safetensors",
        ]
    )
    expected = train.TextStage(30, 64, 0, 3e-3, 0.01, 0.25, False, 10, 0.5, "chat-bytes", "prose.safetensors")
    assert train.TextStage.from_args(args) == expected


def test_backcopy_rows_replace_the_last_rows_of_a_packed_batch():
    from avisc_lib.tiny.bigram import world_chain
    from avisc_lib.tiny.build import build_tokenizer

    tokenizer = build_tokenizer()
    plain = train.text_batch(tokenizer, 2, 3, seed=0, pack=64)
    mixed = train.text_batch(tokenizer, 2, 4, seed=0, pack=64, backcopy=0.25)
    assert all(mixed[k].shape == (4, 64) for k in ("input_ids", "attention_mask", "labels"))
    assert torch.equal(mixed["input_ids"][:3], plain["input_ids"])  # the text rows of a 3-row batch
    assert mixed["attention_mask"].all() and torch.equal(mixed["labels"], mixed["input_ids"])
    bb = mixed["input_ids"][3]
    assert bb[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in bb  # no documents in it
    chain = world_chain(tokenizer, seed=0)
    assert chain.copy_positions(bb[None]).sum() > 5  # triggers, and the copies after them
    assert world_chain(tokenizer, seed=0) is chain  # built once, not at every training step
    assert torch.equal(train.text_batch(tokenizer, 2, 4, seed=0, pack=64, backcopy=1.0)["input_ids"][:1], bb[None])
    with pytest.raises(ValueError, match="packed text"):
        train.text_batch(tokenizer, 0, 4, seed=0, backcopy=0.5)


def test_packed_text_rows_are_full_streams_with_one_bos():
    from avisc_lib.tiny.build import build_tokenizer

    tokenizer = build_tokenizer()
    batch = train.text_batch(tokenizer, 0, 3, seed=0, pack=64)
    ids = batch["input_ids"]
    assert ids.shape == (3, 64) and batch["attention_mask"].all() and (batch["labels"] == ids).all()
    assert (ids[:, 0] == tokenizer.bos_token_id).all() and ((ids == tokenizer.bos_token_id).sum(1) == 1).all()
    assert ((ids == tokenizer.eos_token_id).sum(1) >= 2).all()  # several documents per row
    assert not torch.equal(ids[0], ids[1])
    noisy = train.text_batch(tokenizer, 0, 3, seed=0, pack=64, noise=8)["input_ids"]
    assert noisy.shape == (3, 64) and tokenizer.unk_token_id not in noisy and not torch.equal(noisy, ids)
    with pytest.raises(ValueError, match="pack"):
        train.TextStage(10, noise=8)


def test_text_probe_reads_bos_attention_and_activations():
    from avisc_lib.tiny.build import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(tokenizer).eval()
    lm = model.model.language_model
    with torch.no_grad():  # layer 0 attends uniformly; BOS's embedding is one huge dimension
        lm.layers[0].self_attn.q_proj.weight.zero_()
        lm.embed_tokens.weight[tokenizer.bos_token_id] = 0
        lm.embed_tokens.weight[tokenizer.bos_token_id, 7] = 50.0
    batch = train.text_batch(tokenizer, 0, 2, seed=0, pack=32)
    probe = train.text_probe(model, batch)
    assert all(len(v) == 4 for v in probe.values())
    uniform = sum(1 / (t + 1) for t in range(1, 32)) / 31  # query t sees t + 1 keys
    assert probe["bos_attention"][0] == pytest.approx(uniform, abs=1e-4)
    assert probe["bos_top_head"][0] == pytest.approx(uniform, abs=1e-4)
    assert all(top >= mean for top, mean in zip(probe["bos_top_head"], probe["bos_attention"]))
    assert probe["phi_bos"][0] == pytest.approx(128**0.5, rel=1e-3) and probe["phi_other"][0] < 6
    assert lm.config._attn_implementation == "sdpa"  # restored after the eager pass


@pytest.mark.slow
def test_text_stage_trains_only_the_language_model(tmp_path):
    train.main(["--out", str(tmp_path), *TINY_RUN, "--steps-text", "2"])
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert sorted(log["stages"]) == ["0", "1", "2", "text"]
    assert {"validation_loss", "bos_attention", "phi_bos"} <= set(log["stages"]["text"]["history"][-1])
    stage0, text = (torch.load(tmp_path / f"stage{s}.pt", weights_only=True) for s in (0, "text"))
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k in text if not torch.equal(text[k], stage0[k])}
    assert changed == {"model.language_model", "lm_head.weight"}


def test_prose_rows_are_the_last_rows_of_a_packed_batch_in_the_prose_words():
    from avisc_lib.tiny import corpora
    from avisc_lib.tiny.build import build_tokenizer

    tokenizer = corpora.word_tokenizer()
    plain = train.text_batch(tokenizer, 2, 2, seed=0, pack=64)
    mixed = train.text_batch(tokenizer, 2, 4, seed=0, pack=64, backcopy=0.25, prose=0.25)
    assert all(mixed[k].shape == (4, 64) for k in ("input_ids", "attention_mask", "labels"))
    assert torch.equal(mixed["input_ids"][:2], plain["input_ids"])  # the documents of a 2-row batch
    prose = mixed["input_ids"][3]
    assert prose[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in prose
    training, held_out = corpora.split(corpora.encode(corpora.stdlib_text(), "words"))
    windows = np.lib.stride_tricks.sliding_window_view(training, 63)
    assert (windows == prose[1:].numpy()).all(1).any()  # one window of the prose's training part
    validation = train.prose_batch(tokenizer, 0, 2, 64, seed=0, split="validation")["input_ids"]
    assert set(validation[:, 1:].flatten().tolist()) <= set(held_out.tolist())
    with pytest.raises(ValueError, match="word_tokenizer"):
        train.text_batch(build_tokenizer(), 0, 4, seed=0, pack=64, prose=0.5)
    with pytest.raises(ValueError, match="3 Bigram-Backcopy and 2 prose rows do not fit a batch of 4"):
        train.text_batch(tokenizer, 0, 4, seed=0, pack=64, backcopy=0.75, prose=0.5)


def test_text_stage_with_prose_rows_reads_the_prose_words_and_probes_them():
    from avisc_lib.tiny import corpora
    from avisc_lib.tiny.build import build_model

    stage = train.TextStage(2, pack=48, prose=0.5, backcopy_first=1)
    assert [stage.prose_share(step) for step in range(2)] == [0.0, 0.5]  # Bigram-Backcopy rows alone first
    processor = train.text_processor(stage)
    assert processor.tokenizer.get_vocab() == corpora.word_tokenizer().get_vocab()
    assert len(train.text_processor(train.TextStage(2, pack=48)).tokenizer) < len(processor.tokenizer)
    (last,) = train.run_text_stage(build_model(processor.tokenizer), processor, stage, bs=4, seed=0)
    assert len(last["prose_bos_attention"]) == len(last["bos_attention"]) == 4
    assert last["prose_bos_attention"] != last["bos_attention"]  # measured on other rows


def test_a_byte_language_side_reads_prose_and_chats_in_bytes_and_answers_with_its_own_tokens():
    from avisc_lib.generation import answer_token_ids
    from avisc_lib.tiny import corpora
    from avisc_lib.tiny.build import build_model, build_processor
    from avisc_lib.tiny.data import yes_no_margin
    from avisc_lib.world import questions as Q

    processor = train.text_processor(train.TextStage(2, pack=64, prose=0.5, tokens="chat-bytes"))
    tokenizer = processor.tokenizer
    assert train.prose_tokens(tokenizer) == "chat-bytes" and train.prose_tokens(corpora.word_tokenizer()) == "words"
    with pytest.raises(ValueError, match="word_tokenizer"):
        train.prose_tokens(build_processor().tokenizer)  # the world's words without the prose's
    batch = train.text_batch(tokenizer, 0, 4, seed=0, pack=64, prose=0.5)
    assert tokenizer.decode(batch["input_ids"][0]).startswith("<s>user: ")  # the world's chats, lower-cased bytes
    training, _ = corpora.split(corpora.encode(corpora.stdlib_text(), "chat-bytes"))
    windows = np.lib.stride_tricks.sliding_window_view(training, 63)
    assert all((windows == row[1:].numpy()).all(1).any() for row in batch["input_ids"][2:])  # prose windows
    model = build_model(tokenizer)
    assert answer_token_ids(model, processor, ["Yes", "No"]) == tokenizer.convert_tokens_to_ids(["Ġyes", "Ġno"])
    items = Q.existence_set("validation", 4)
    with torch.no_grad():
        margins = yes_no_margin(model, processor, items)
    assert margins.shape == (len(items),) and margins.abs().min() > 0  # the merged tokens' logits, not a tie


def test_a_language_model_starts_from_a_saved_one_and_its_new_tokens_from_the_mean_row(tmp_path):
    from avisc_lib.tiny import corpora
    from avisc_lib.tiny.build import LMSize, build_model

    lm = LMSize(1, 32, heads=2, family="gpt2")
    prose_model = build_model(corpora.byte_tokenizer(), seed=1, lm=lm)
    path = tmp_path / "prose.safetensors"
    train.save_language_model(prose_model.state_dict(), path)
    assert not any("vision_tower" in key for key in load_file(path))  # the language model and head alone
    chat = corpora.byte_tokenizer(chat=True, split_special_tokens=False)
    model = build_model(chat, seed=2, lm=lm)
    tower = {k: v.clone() for k, v in model.state_dict().items() if "vision_tower" in k}
    train.load_language_model(model, path)
    saved, loaded = prose_model.state_dict(), model.state_dict()
    old = len(corpora.byte_tokenizer())
    for key in ("model.language_model.wte.weight", "lm_head.weight"):
        assert torch.equal(loaded[key][:old], saved[key])
        assert torch.allclose(loaded[key][old:], saved[key].mean(0).expand(len(chat) - old, -1))
    attention = "model.language_model.h.0.attn.c_attn.weight"
    assert torch.equal(loaded[attention], saved[attention])
    assert all(torch.equal(loaded[k], v) for k, v in tower.items())  # the vision tower is the model's own
    torch.save(prose_model.state_dict(), tmp_path / "prose.pt")  # weights, but not in safetensors
    for missing in (tmp_path / "missing.safetensors", tmp_path / "prose.pt"):
        with pytest.raises(FileNotFoundError, match="no safetensors file to start the language model from at"):
            train.load_language_model(model, missing)
    train.save_language_model(build_model(chat, lm=LMSize(1, 64, heads=2, family="gpt2")).state_dict(), path)
    with pytest.raises(ValueError, match=r"is \(\d+, 64\) in .* and \(\d+, 32\) here"):
        train.load_language_model(model, path)
    train.save_language_model(build_model(chat, lm=LMSize(1, 32, heads=2)).state_dict(), path)  # a Llama
    with pytest.raises(ValueError, match="holds no model.language_model.wte.weight"):
        train.load_language_model(model, path)


def test_text_stage_with_backcopy_rows_probes_both_kinds_of_row():
    from avisc_lib.tiny.build import build_model, build_processor

    processor = build_processor()
    model = build_model(processor.tokenizer)
    stage = train.TextStage(2, pack=48, backcopy=0.5)
    (last,) = train.run_text_stage(model, processor, stage, bs=4, seed=0)
    assert last["step"] == 2 and len(last["bos_attention"]) == len(last["bb_bos_attention"]) == 4
    assert last["bb_phi_bos"] == last["phi_bos"]  # BOS sees only itself, whatever follows it
    assert last["bb_bos_attention"] != last["bos_attention"]  # measured on other rows
    (plain,) = train.run_text_stage(build_model(processor.tokenizer), processor, train.TextStage(2, pack=48), 4, 0)
    assert not any(key.startswith("bb_") for key in plain)


def test_text_stage_hands_its_schedule_and_weight_decay_to_the_optimiser(monkeypatch):
    from avisc_lib.tiny.build import build_model, build_processor

    seen = {}
    monkeypatch.setattr(train, "optimise", lambda *args, **kwargs: seen.update(kwargs) or [])
    processor = build_processor()
    stage = train.TextStage(2, pack=48, weight_decay=0.1, decay=False)
    train.run_text_stage(build_model(processor.tokenizer), processor, stage, bs=4, seed=0)
    assert seen["decay"] is False and seen["weight_decay"] == 0.1


def test_backcopy_first_steps_train_on_backcopy_rows_alone(monkeypatch):
    from avisc_lib.tiny.build import build_model, build_processor

    seen = {}
    monkeypatch.setattr(train, "optimise", lambda params, steps, lr, batch_fn, *a, **k: seen.update(batch=batch_fn))
    processor = build_processor()
    stage = train.TextStage(4, pack=48, backcopy=0.25, backcopy_first=2)
    assert [stage.backcopy_share(step) for step in range(4)] == [1.0, 1.0, 0.25, 0.25]
    train.run_text_stage(build_model(processor.tokenizer), processor, stage, bs=4, seed=0)
    eos = processor.tokenizer.eos_token_id
    documents = [int((seen["batch"](step)["input_ids"] == eos).any(1).sum()) for step in range(4)]
    assert documents == [0, 0, 3, 3]  # rows holding text documents: none, then all but the BB row
