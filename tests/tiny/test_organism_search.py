"""Smoke run of the tower-recipe search (the organism search itself is not part of CI)."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from avisc_lib.tiny import search
from avisc_lib.tiny.train import TextStage, text_processor

SMALL = search.Recipe("smoke", width=64, depth=2, steps=2, batch=4)


@pytest.mark.parametrize(("tower", "registers"), [("clip", None), ("clip", 4), ("siglip", None)])
def test_measure_reports_every_layer_and_finds_a_planted_outlier(tower, registers):
    recipe = replace(SMALL, tower=tower, registers=registers)
    tower = search.build_tower(recipe)
    plain = search.measure(tower.eval(), recipe, n=8)
    assert [row["layer"] for row in plain["layers"]] == [0, 1]
    assert 0.5 < plain["background_rate"] < 1

    # The measure itself must see an outlier when one exists: a hook scales patch 0 (a corner,
    # background) after layer 0. A test of the measuring code, never part of a recipe.
    def scale_patch_0(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[:, recipe.first_patch] *= 1e3

    layers = tower.encoder.layers if registers is None else tower.encoder.layer
    layers[0].register_forward_hook(scale_patch_0)
    planted = search.measure(tower, recipe, n=8)["layers"][0]
    assert planted["max_over_median"] > 10 * plain["layers"][0]["max_over_median"]
    assert planted["top_on_background"] > 0.8 and planted["outliers_on_background"] > 0.8
    assert (plain["layers"][0]["cls_top5"] is None) == (recipe.tower == "siglip")


@pytest.mark.parametrize("objective", ["patch", "cls", "both"])
@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_every_objective_trains_every_tower_kind(objective, tower):
    recipe = replace(SMALL, objective=objective, tower=tower, texture=40)
    model, heads = search.build_tower(recipe), search.Heads(recipe.width)
    batch = search.targets([search.make_scene("train", i, recipe.world) for i in range(4)], recipe.patch)
    search.loss(recipe, model, heads, batch).backward()
    patch_used = heads.patch.weight.grad is not None
    assert patch_used == (objective != "cls")
    assert (heads.quadrant.weight.grad is not None) == (objective != "patch")


def test_training_resumes_from_its_checkpoint(tmp_path):
    first = search.train(SMALL, tmp_path, every=1, measure_n=4)
    assert [h["step"] for h in first["history"]] == [1, 2]
    resumed = search.train(replace(SMALL, steps=3), tmp_path, every=1, measure_n=4)
    assert [h["step"] for h in resumed["history"]] == [1, 2, 3]
    assert (tmp_path / "tower" / "model.safetensors").is_file()


def test_cli_logs_one_row_per_variant_and_skips_done_ones(tmp_path):
    log = tmp_path / "log.jsonl"
    command = [
        sys.executable,
        "-m",
        "avisc_lib.tiny.search",
        "--only",
        "cls-w128-d3",
        "--steps",
        "2",
        "--every",
        "1",
        "--measure-scenes",
        "4",
        "--log",
        str(log),
        "--work",
        str(tmp_path / "work"),
        "--threads",
        "1",
    ]
    subprocess.run(command, check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["recipe"]["name"] for r in rows] == ["cls-w128-d3"] and rows[0]["recipe"]["steps"] == 2
    again = subprocess.run(command, check=True, capture_output=True, text=True)
    assert "logged" not in again.stdout and len(log.read_text().splitlines()) == 1
    summary = command[:3] + ["--summary", "--log", str(log), "--lm-log", str(tmp_path / "absent.jsonl")]
    table = subprocess.run(summary, check=True, capture_output=True, text=True)
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith("| cls-w128-d3 | clip | cls | 0 | 128 x 3 | 2 |")
    assert lines[2].count("|") == lines[0].count("|")
    bad = subprocess.run(command[:3] + ["--only", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown variant" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tower", "text", "lm", "folder"),
    [
        ("clip", TextStage(), search.LMSize(), "model"),
        ("siglip", TextStage(1, 48), search.LMSize(2, 64, heads=1), "model-text1-pack48-lm2x64h1"),
        ("clip", TextStage(1, 48), search.LMSize(2, 64, family="gpt2"), "model-text1-pack48-lm2x64-gpt2"),
        ("clip", TextStage(1, 48, prose=0.5), search.LMSize(2, 64, heads=1), "model-text1-pack48-prose0.5-lm2x64h1"),
        (
            "clip",
            TextStage(1, 48, prose=0.5, tokens="chat-bytes"),
            search.LMSize(2, 64, family="gpt2"),
            "model-text1-pack48-prose0.5-chat-bytes-lm2x64-gpt2",
        ),
    ],
)
def test_language_side_trains_on_a_searched_tower(tmp_path, tower, text, lm, folder):
    search.train(replace(SMALL, tower=tower, texture=40), tmp_path / "t", every=2, measure_n=4)
    row = search.train_language_side(
        tmp_path / "t" / "tower",
        tmp_path / "t",
        steps1=1,
        steps2=1,
        scenes=2,
        text=text,
        lm=lm,
    )
    assert row["tower"] == "smoke" and [h["step"] for h in row["stage2"]] == [1]
    assert row["steps_text"] == text.steps and len(row["text"]) == text.steps
    assert all(("prose_bos_attention" in h) == bool(text.prose) for h in row["text"])
    assert all(len(h["phi_bos"]) == lm.layers for h in row["text"])
    assert [layer["layer"] for layer in row["profile"]] == list(range(lm.layers))
    assert search.LMSize(**row["lm"]) == lm
    assert row["organism"]["n_questions"] == 4 and 0 <= row["organism"]["top5_share"] <= 1
    saved = tmp_path / "t" / folder
    model = LlavaForConditionalGeneration.from_pretrained(saved)
    assert model.config.text_config.num_attention_heads == lm.heads
    image_tokens = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    processor = AutoProcessor.from_pretrained(saved)
    assert processor.tokenizer.get_vocab() == text_processor(text).tokenizer.get_vocab()  # prose words, bytes
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    inputs = processor(
        images=[search.make_scene("test", 0).image], text=["USER: <image>\nhi ASSISTANT:"], return_tensors="pt"
    )
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == image_tokens  # CLS dropped, or none
    assert model(**inputs).logits.isfinite().all()


@pytest.mark.slow
def test_language_side_resumes_from_its_stage_checkpoints(tmp_path):
    search.train(SMALL, tmp_path / "t", every=2, measure_n=4)
    lm, text = search.LMSize(2, 64, heads=1, family="gpt2"), TextStage(2, 48)  # GPT-2: dropout draws from the RNG

    def run():
        return search.train_language_side(tmp_path / "t" / "tower", tmp_path / "t", 1, 2, 2, text=text, lm=lm)

    whole = run()
    saved = tmp_path / "t" / search.model_folder(text, lm)
    checkpoints = search.checkpoint_folder(saved)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["stage1.pt", "stage2.pt", "text.pt"]
    weights = load_file(saved / "model.safetensors")
    (checkpoints / "stage2.pt").unlink()  # as if killed before stage 2 saved: text and stage 1 are reused
    shutil.rmtree(saved)
    finished = {name: (checkpoints / name).stat().st_mtime_ns for name in ("text.pt", "stage1.pt")}
    again = run()
    assert finished == {name: (checkpoints / name).stat().st_mtime_ns for name in finished}  # not trained again
    assert (checkpoints / "stage2.pt").is_file()
    assert all(torch.equal(weights[k], v) for k, v in load_file(saved / "model.safetensors").items())
    assert again["text"] == whole["text"] and again["organism"] == whole["organism"]


@pytest.mark.slow
def test_language_and_measure_clis_train_then_reproduce_a_language_side(tmp_path):
    search.train(SMALL, tmp_path / "t", every=2, measure_n=4)
    lm = search.LMSize(2, 64, heads=1, dropout=0.0)
    log = tmp_path / "lm.jsonl"
    flags = ["--lm-layers", "2", "--lm-width", "64", "--lm-heads", "1", "--lm-dropout", "0"]
    flags += ["--organism-scenes", "2", "--threads", "1"]
    command = [sys.executable, "-m", "avisc_lib.tiny.search", "--work", str(tmp_path), "--lm-log", str(log)]
    steps = ["--steps1", "1", "--steps2", "1"]
    subprocess.run(command + ["--language", "t", "--seed", "1", *steps, *flags], check=True, capture_output=True)
    (row,) = search.log_rows(log)
    saved = tmp_path / "t" / "model-lm2x64h1-drop0-seed1"
    assert row["seed"] == 1 and search.LMSize(**row["lm"]) == lm and (saved / "config.json").is_file()
    assert not search.checkpoint_folder(saved).exists()  # removed once the row is logged
    subprocess.run(command + ["--measure", "t", "--seed", "1", *flags], check=True, capture_output=True, text=True)
    trained, measured = search.log_rows(log)
    assert measured["remeasured"] and measured["seed"] == 1 and search.LMSize(**measured["lm"]) == lm
    assert measured["organism"] == row["organism"]  # same scenes, same saved model, seeded decoding
    other_seed = subprocess.run(command + ["--measure", "t", *flags], capture_output=True, text=True)
    assert other_seed.returncode != 0 and "model-lm2x64h1-drop0; run --language t first" in other_seed.stderr


def test_language_side_of_zero_steps_logs_its_row(tmp_path):
    """Stages of 0 steps save no checkpoint: the untrained language side is still measured and logged."""
    search.train(SMALL, tmp_path / "t", every=2, measure_n=4)
    log = tmp_path / "lm.jsonl"
    flags = ["--steps1", "0", "--steps2", "0", "--lm-layers", "1", "--lm-width", "32", "--lm-heads", "1"]
    flags += ["--organism-scenes", "1", "--threads", "1"]  # conftest's thread count, kept for later tests
    search.main(["--work", str(tmp_path), "--lm-log", str(log), "--language", "t", *flags])
    (row,) = search.log_rows(log)
    assert row["stage2"] == [] and row["organism"]["n_questions"] == 2


def test_profile_cli_names_a_missing_language_side(tmp_path):
    command = [sys.executable, "-m", "avisc_lib.tiny.search", "--profile", "nope", "--work", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0 and "run --language nope first" in result.stderr


def test_language_side_refuses_register_towers(tmp_path):
    search.train(replace(SMALL, registers=4), tmp_path / "t", every=2, measure_n=4)
    with pytest.raises(SystemExit, match="registers"):
        search.train_language_side(tmp_path / "t" / "tower", tmp_path / "t", steps1=1, steps2=1, scenes=2)


def test_register_tokens_are_not_measured_as_patches():
    recipe = replace(SMALL, registers=4)
    tower = search.build_tower(recipe).eval()
    plain = search.measure(tower, recipe, n=8)["layers"][0]

    def scale_registers(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[:, 1 : recipe.first_patch] *= 1e3

    tower.encoder.layer[0].register_forward_hook(scale_registers)
    assert search.measure(tower, recipe, n=8)["layers"][0]["max_over_median"] == plain["max_over_median"]


def test_language_summary_has_one_row_per_run(tmp_path):
    interval = {"mean": 0.03, "low": 0.0, "high": 0.065, "n": 200}
    organism = {
        "n_questions": 200,
        "top5_share": 0.168,
        "blind_on_background": 0.464,
        "sink_images": 0.0,
        "keep_blind_minus_random": 0.05,
        "zero_blind_minus_random": 0.0,
        "avisc_minus_greedy": interval,
        "avisc_minus_random_mask": interval,
        "greedy_random": 0.95,
        "greedy_adversarial": 0.75,
    }
    log = tmp_path / "lm.jsonl"
    rows = [
        {"tower": "t", "steps_text": 8000, "minutes": 32.4},
        {"tower": "t", "text_stage": {"steps": 3000, "pack": 256, "lr": 3e-3}, "lm": {"layers": 8, "width": 256}},
        {"tower": "t", "lm": {"layers": 4, "width": 128, "heads": 1}},
        {"tower": "t", "lm": {"layers": 4, "width": 128, "heads": 4, "family": "gpt2"}},
        {"tower": "t", "lm": {"layers": 4, "width": 128, "heads": 2, "rope_theta": 1e6}},
        {"tower": "t", "seed": 2, "lm": {"family": "gpt2"}},
        {"tower": "t", "seed": 1, "remeasured": True},
    ]
    log.write_text("".join(json.dumps({"minutes": 50, **row, "organism": organism}) + "\n" for row in rows))
    placed = {"sinks_per_image": 36.21, "sinks_on_background": 0.966, "background_tokens": 0.795}
    with log.open("a") as f:  # a row measured since organism_table counts sinks per image
        f.write(json.dumps({"tower": "t", "minutes": 50, "organism": organism | placed}) + "\n")
    lines = search.language_summary(log).splitlines()
    assert len(lines) == 10 and lines[2].startswith("| t | 8000 | 32 | 200 | 0.168 | 0.464 | 0.00 | – |")
    assert "| 0.00 | 36.2 (0.97 of 0.80) | +0.050 |" in lines[9]
    assert lines[7].startswith("| t (LM 4 x 128, gpt2, seed 2) | 0 | 50 |")
    assert lines[8].startswith("| t (seed 1) | 0 | remeasured | 200 |")
    assert lines[3].startswith("| t (LM 8 x 256) | 3000 (pack256, lr0.003) | 50 |")
    assert lines[4].startswith("| t (LM 4 x 128, 1 head) | 0 | 50 |")
    assert lines[5].startswith("| t (LM 4 x 128, gpt2) | 0 | 50 |")
    assert lines[6].startswith("| t (LM 4 x 128, 2 heads, rope 1e+06) | 0 | 50 |")
    assert "+0.030 [+0.000, +0.065]" in lines[2] and lines[2].count("|") == lines[0].count("|")
