"""``run_benchmark`` / ``avisc-eval run`` on the embedded tiny model: outputs, kill-and-resume, refusals,
provenance (package version and weights hash)."""

import copy
import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch

import avisc_lib
from avisc_lib.benchmarks import runner
from avisc_lib.benchmarks.cli import main
from avisc_lib.benchmarks.io import FormatError
from avisc_lib.benchmarks.store import ConfigMismatch
from avisc_lib.generation import generate
from avisc_lib.models import loading as models

POPE = dict(model_name="tiny", method="greedy", limit=10, batch_size=4)
CAPTIONS = dict(POPE, method="sample", split="generative", max_new_tokens=12)


def _lines(out_dir):
    return (out_dir / "answers.jsonl").read_text().splitlines()


def _ids(out_dir):
    return [json.loads(line)["id"] for line in _lines(out_dir)]


class SimulatedKill(Exception):
    pass


class CountingGenerate:
    """Stands in for ``generate``: counts batches and questions, raises after ``fail_after`` batches."""

    def __init__(self, fail_after=None):
        self.batches, self.questions, self.fail_after = 0, 0, fail_after

    def __call__(self, model, processor, images, questions, **kwargs):
        if self.batches == self.fail_after:
            raise SimulatedKill
        self.batches += 1
        self.questions += len(questions)
        return generate(model, processor, images, questions, **kwargs)


@pytest.fixture(scope="module")
def pope_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pope")
    return out, runner.run_benchmark("pope", out_dir=out, **POPE)


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("captions")
    return out, runner.run_benchmark("amber", out_dir=out, **CAPTIONS)


def test_outputs(pope_run):
    out, metrics = pope_run
    records = [json.loads(line) for line in _lines(out)]
    assert [r["id"] for r in records] == list(range(1, 11))
    assert set(records[0]) == {"id", "question", "answer", "label", "method", "image", "group"}
    assert all(r["method"] == "greedy" and r["answer"] in ("yes", "no") for r in records)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["TP"] + metrics["FP"] + metrics["TN"] + metrics["FN"] == 10
    assert set(metrics["intervals"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
    assert metrics["intervals"]["accuracy"]["value"] == metrics["accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["decode"]["max_new_tokens"] == 64 and "beta" not in config["decode"]  # greedy reads no beta
    assert config["scoring"] == {"parser": "official"}


def test_complete_run_is_not_recomputed(pope_run, monkeypatch):
    out, metrics = pope_run
    before = (out / "answers.jsonl").read_text()
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("a complete run loaded the model"))
    assert runner.run_benchmark("pope", out_dir=out, **POPE) == metrics
    assert (out / "answers.jsonl").read_text() == before


def test_kill_and_resume_matches_an_uninterrupted_run(caption_run, tmp_path, monkeypatch):
    # sampled captions depend on each batch's seed, so a resume that re-seeded batches would differ
    reference, expected = caption_run
    killed = CountingGenerate(fail_after=2)
    monkeypatch.setattr(runner, "generate", killed)
    with pytest.raises(SimulatedKill):
        runner.run_benchmark("amber", out_dir=tmp_path, **CAPTIONS)
    assert _ids(tmp_path) == list(range(1, 9)) and not (tmp_path / "metrics.json").exists()

    resumed = CountingGenerate()
    monkeypatch.setattr(runner, "generate", resumed)
    assert runner.run_benchmark("amber", out_dir=tmp_path, **CAPTIONS) == expected
    assert (resumed.batches, resumed.questions) == (1, 2)
    assert _lines(tmp_path) == _lines(reference)


def test_torn_last_line_is_recomputed_once(pope_run, tmp_path, monkeypatch):
    reference, expected = pope_run
    text = (reference / "answers.jsonl").read_text()
    (tmp_path / "config.json").write_text((reference / "config.json").read_text())
    (tmp_path / "answers.jsonl").write_text(text[: len(text) - 25])  # kill in the middle of the last line
    counting = CountingGenerate()
    monkeypatch.setattr(runner, "generate", counting)
    assert runner.run_benchmark("pope", out_dir=tmp_path, **POPE) == expected
    assert (counting.batches, counting.questions) == (1, 1)
    assert (tmp_path / "answers.jsonl").read_text() == text


def test_shard_files_are_merged_in_question_order(pope_run, tmp_path):
    reference, expected = pope_run
    lines = _lines(reference)
    (tmp_path / "config.json").write_text((reference / "config.json").read_text())
    duplicated = lines[:4] + lines[:2]
    (tmp_path / "answers.jsonl").write_text("".join(line + "\n" for line in duplicated))
    (tmp_path / "answers.rank1.jsonl").write_text("".join(line + "\n" for line in lines[8:] + lines[4:8]))
    assert runner.run_benchmark("pope", out_dir=tmp_path, **POPE) == expected
    assert _lines(tmp_path) == lines and not (tmp_path / "answers.rank1.jsonl").exists()


def test_corrupt_line_inside_the_file_is_an_error(pope_run, tmp_path):
    reference, _ = pope_run
    lines = _lines(reference)
    (tmp_path / "config.json").write_text((reference / "config.json").read_text())
    (tmp_path / "answers.jsonl").write_text("\n".join([lines[0], '{"id": 1, "answ', lines[2]]) + "\n")
    with pytest.raises(FormatError, match=r"answers.jsonl:2: invalid JSON"):
        runner.run_benchmark("pope", out_dir=tmp_path, **POPE)
    (tmp_path / "answers.jsonl").write_text(json.dumps({"id": 99, "answer": "yes"}) + "\n")
    with pytest.raises(FormatError, match="id 99 is not a question of this run"):
        runner.run_benchmark("pope", out_dir=tmp_path, **POPE)


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(method="avisc"), "method: 'greedy' there, 'avisc' here"),
        (dict(max_new_tokens=8), "decode.max_new_tokens: 64 there, 8 here"),
        (dict(limit=12), "limit: 10 there, 12 here"),
        (dict(parser="avisc"), "scoring.parser"),
        (dict(batch_size=2), "batch_size"),
    ],
)
def test_another_configuration_is_refused(pope_run, change, named):
    out, _ = pope_run
    with pytest.raises(ConfigMismatch, match=named):
        runner.run_benchmark("pope", out_dir=out, **(POPE | change))


def test_config_states_how_tokens_were_chosen(pope_run, tmp_path):
    out, _ = pope_run
    config = json.loads((out / "config.json").read_text())
    assert (config["decoding"], config["decode"]["do_sample"], config["question_form"]) == ("argmax", False, None)
    runner.run_benchmark("pope", out_dir=tmp_path, **(POPE | dict(method="clearsight", do_sample=True, limit=4)))
    sampled = json.loads((tmp_path / "config.json").read_text())
    assert (sampled["decoding"], sampled["decode"]["do_sample"]) == ("sampling", True)


def test_a_folder_from_before_decoding_was_recorded_is_refused(pope_run, tmp_path):
    """Its config.json lacks "decoding" (one-pass methods then ignored do_sample=True), so its
    answers may not have been chosen the way the config said."""
    out, _ = pope_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    config = json.loads((old / "config.json").read_text())
    del config["decoding"], config["question_form"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigMismatch, match="decoding: None there, 'argmax' here"):
        runner.run_benchmark("pope", out_dir=old, **POPE)


def test_a_run_that_failed_before_any_answer_does_not_lock_the_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown prompt_style 'chatml'"):
        runner.run_benchmark("pope", out_dir=tmp_path, prompt_style="chatml", **POPE)
    assert runner.run_benchmark("pope", out_dir=tmp_path, **POPE)["TP"] > 0


def test_answers_without_config_are_refused(tmp_path):
    (tmp_path / "answers.jsonl").write_text('{"id": 1, "answer": "yes"}\n')
    with pytest.raises(ConfigMismatch, match="no config.json"):
        runner.run_benchmark("pope", out_dir=tmp_path, **POPE)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(batch_size=0), "batch_size must be"),
        (dict(limit=0), "limit must be"),
        (dict(seed=None), "seed must be an int, got None"),
        (dict(split="hard"), "unknown pope split 'hard'"),
        (dict(dataset="imagenet"), "unknown pope dataset"),
        (dict(parser="lenient"), "unknown pope parser 'lenient'"),
        (dict(cd_alpha=2.5), "unknown decode option"),
        (dict(beta=1.5), "beta must be in"),
        (dict(method="beam"), "unknown method"),
        (dict(dataset="coco"), r"needs image_dir \(--image-dir\)"),
        (dict(do_sample=True), "method='greedy' with do_sample=True"),
        (dict(method="sample", do_sample=False), "method='sample' with do_sample=False"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        runner.run_benchmark("pope", out_dir=tmp_path / "out", **(POPE | change))
    assert not (tmp_path / "out").exists()


def test_unknown_benchmark(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark 'vqa'"):
        runner.run_benchmark("vqa", out_dir=tmp_path, **POPE)


@pytest.mark.parametrize(
    "name, extra, rows",
    [
        ("mme", ["--limit", "3", "--method", "avisc"], ["existence", "count", "position", "color", "mme"]),
        ("amber", ["--limit", "2", "--method", "m3id"], ["overall", "existence", "generative", "amber"]),
    ],
)
def test_cli_run_prints_the_metrics_table(tmp_path, capsys, name, extra, rows):
    code = main(["run", name, "--model", "tiny", "--out", str(tmp_path), "--batch-size", "4", *extra])
    out = capsys.readouterr().out
    assert code == 0
    table = out.splitlines()[1:]
    assert all(any(line.startswith(row) for line in table) for row in rows)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    counts = {"mme": 16, "amber": 8}  # MME: 2 pairs x 4 subtasks; AMBER: 2 x 4 sections
    assert len(_lines(tmp_path)) == counts[name] and metrics


def test_cli_run_errors_exit_1(tmp_path, capsys):
    args = ["run", "pope", "--model", "tiny", "--method", "greedy", "--out", str(tmp_path)]
    assert main([*args, "--limit", "4"]) == 0
    assert main([*args, "--limit", "5"]) == 1
    assert "holds answers of another configuration (limit: 4 there, 5 here)" in capsys.readouterr().err


# --------------------------------------------------------------------------- provenance


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _edited_copy(pope_run, tmp_path, edit):
    """A copy of the finished run folder whose config.json is changed by ``edit``."""
    out = tmp_path / "copy"
    shutil.copytree(pope_run[0], out)
    config = json.loads((out / "config.json").read_text())
    edit(config)
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_config_records_the_package_version_and_the_weights_files_hash(pope_run):
    weights = models.tiny_model_path() / "model.safetensors"
    expected = _sha256(f"model.safetensors {_sha256(weights.read_bytes())}\n".encode())
    config = json.loads((pope_run[0] / "config.json").read_text())
    assert (config["version"], config["weights"]) == (avisc_lib.__version__, expected)


def test_a_loaded_model_hashes_as_its_name_so_notebooks_and_cli_share_folders(embedded_case):
    assert models.weights_hash(embedded_case.model) == models.weights_hash("tiny")


@pytest.mark.parametrize(
    "edit, named",
    [
        (
            lambda c: c.update(version="0.0.1"),
            f"another avisc_lib \\(version 0.0.1 there, {avisc_lib.__version__} here\\)",
        ),
        (lambda c: c.update(weights="0" * 64), "other model weights \\(weights sha256 000000000000… there"),
        (lambda c: [c.pop("version"), c.pop("weights")], "from before run folders recorded the package version"),
    ],
    ids=["version", "weights", "no provenance"],
)
def test_answers_of_other_code_or_weights_are_refused(pope_run, tmp_path, edit, named):
    out = _edited_copy(pope_run, tmp_path, edit)
    with pytest.raises(ConfigMismatch, match=named) as refused:
        runner.run_benchmark("pope", out_dir=out, **POPE)
    assert "use another output folder (--out), or delete this one to start fresh" in str(refused.value)


def test_weights_hash_of_an_in_memory_model_covers_its_parameters(llava_case):
    model = copy.deepcopy(llava_case.model)
    model.name_or_path = ""  # no files behind it
    before = models.weights_hash(model)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1.0
    assert models.weights_hash(model) == before  # memoised per model object
    assert models.weights_hash(copy.deepcopy(model)) != before


def test_weights_hash_takes_hub_cache_blob_names_without_reading_them(tmp_path, monkeypatch):
    repo = tmp_path / "models--llava-hf--llava-1.5-7b-hf"
    sha = _sha256(b"the real weights")
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(b"not the bytes the name says")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(Path("../../blobs") / sha)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert models.weights_hash("llava") == _sha256(f"model.safetensors {sha}\n".encode())
