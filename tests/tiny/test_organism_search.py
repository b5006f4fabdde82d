"""Smoke run of the tower-recipe search (the organism search itself is not part of CI)."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from avisc_lib.tiny import search

SMALL = search.Recipe("smoke", width=64, depth=2, steps=2, batch=4)


@pytest.mark.parametrize("registers", [None, 4])
def test_measure_reports_every_layer_and_finds_a_planted_outlier(registers):
    recipe = replace(SMALL, registers=registers)
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
    bad = subprocess.run(command[:3] + ["--only", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown variant" in bad.stderr


@pytest.mark.slow
def test_language_side_trains_on_a_searched_tower(tmp_path):
    search.train(replace(SMALL, width=64, depth=2), tmp_path / "t", every=2, measure_n=4)
    row = search.train_language_side(tmp_path / "t" / "tower", tmp_path / "t", steps1=1, steps2=1, scenes=2)
    assert row["tower"] == "tower" and [h["step"] for h in row["stage2"]] == [1]
    assert row["organism"]["n_questions"] == 4 and 0 <= row["organism"]["top5_share"] <= 1
    assert (tmp_path / "t" / "model" / "model.safetensors").is_file()


def test_register_tokens_are_not_measured_as_patches():
    recipe = replace(SMALL, registers=4)
    tower = search.build_tower(recipe).eval()
    plain = search.measure(tower, recipe, n=8)["layers"][0]

    def scale_registers(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[:, 1 : recipe.first_patch] *= 1e3

    tower.encoder.layer[0].register_forward_hook(scale_registers)
    assert search.measure(tower, recipe, n=8)["layers"][0]["max_over_median"] == plain["max_over_median"]
