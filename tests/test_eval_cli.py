"""``avisc-eval score ...`` end to end, and the pinned benchmark-file registry (downloads mocked)."""

import json
import shutil
from pathlib import Path

import pytest

from avisc_lib.benchmarks import download
from avisc_lib.benchmarks.cli import build_parser, main
from conftest import BENCH, needs_data

POPE_KEYS = ["TP", "FP", "TN", "FN", "accuracy", "precision", "recall", "f1", "yes_ratio"]
BLOCK_KEYS = ["accuracy", "precision", "recall", "f1"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@needs_data
@pytest.mark.parametrize("parser, accuracy", [("official", 0.5), ("avisc", 1.0)])
def test_score_pope(tmp_path, capsys, parser, accuracy):
    questions = BENCH / "POPE/output/coco/coco_pope_adversarial.json"
    labels = [json.loads(line)["label"] for line in questions.read_text().splitlines()]
    answers = _jsonl(
        tmp_path / "answers.jsonl", [{"answer": "Yes." if lab == "yes" else "NO"} for lab in labels]
    )
    code, result, _ = _run(
        capsys, "score", "pope", "--questions", str(questions), "--answers", str(answers), "--parser", parser
    )
    assert code == 0 and list(result) == POPE_KEYS
    assert result["accuracy"] == accuracy  # the official parser reads "NO" as yes


@needs_data
def test_score_pope_strict_refuses_unclear_answers(tmp_path, capsys):
    questions = BENCH / "POPE/output/coco/coco_pope_random.json"
    answers = _jsonl(
        tmp_path / "a.jsonl", [{"question_id": i + 1, "answer": "I think so"} for i in range(3000)]
    )
    code, _, err = _run(
        capsys,
        "score",
        "pope",
        "--questions",
        str(questions),
        "--answers",
        str(answers),
        "--parser",
        "strict",
    )
    assert code == 1 and "3000 of 3000 answers are not a clear yes/no" in err


@needs_data
def test_score_mme(capsys):
    code, result, _ = _run(capsys, "score", "mme", "--results-dir", str(BENCH / "MME/tools/eval_tool/LaVIN"))
    assert code == 0 and list(result) == ["subtasks", "perception", "cognition", "hallucination"]
    assert result["subtasks"]["existence"] == {"acc": 0.95, "acc_plus": 0.9, "score": 185.0}
    assert round(result["perception"], 2) == 963.61 and round(result["cognition"], 2) == 249.64


@needs_data
@pytest.mark.parametrize(
    "task, keys",
    [
        ("d", ["discriminative"]),
        ("g", ["generative"]),
        ("a", ["discriminative", "generative", "amber_score"]),
    ],
)
def test_score_amber(tmp_path, capsys, task, keys):
    responses = tmp_path / "responses.json"
    responses.write_text(
        json.dumps([{"id": 1, "response": "A person on a road with a dog."}, {"id": 8633, "response": "No"}])
    )
    annotations = BENCH / "AMBER/data/annotations.json"
    code, result, err = _run(
        capsys,
        "score",
        "amber",
        "--responses",
        str(responses),
        "--annotations",
        str(annotations),
        "--task",
        task,
        "--backend",
        "builtin",
    )
    assert code == 0 and list(result) == keys
    if "discriminative" in result:
        assert list(result["discriminative"]) == [
            "overall",
            "existence",
            "attribute",
            "state",
            "number",
            "action",
            "relation",
        ]
        assert list(result["discriminative"]["existence"]) == BLOCK_KEYS
        assert result["discriminative"]["existence"]["accuracy"] == 100.0
    if "generative" in result:
        assert result["generative"] == {"chair": 100 / 3, "cover": 200 / 7, "hal": 100.0, "cog": 20.0}
        assert "builtin backend" in err


def test_errors_go_to_stderr_with_status_1(tmp_path, capsys):
    code, _, err = _run(capsys, "score", "mme", "--results-dir", str(tmp_path / "absent"))
    assert code == 1 and err.startswith("avisc-eval: error: MME results folder")
    (tmp_path / "q.json").write_text('{"question_id": 1}\n')
    (tmp_path / "a.json").write_text('{"answer": "yes"}\n')
    code, _, err = _run(
        capsys,
        "score",
        "pope",
        "--questions",
        str(tmp_path / "q.json"),
        "--answers",
        str(tmp_path / "a.json"),
    )
    assert code == 1 and "q.json:1: missing field(s) 'image', 'text', 'label'" in err


def test_parser_layout_leaves_room_for_more_commands():
    parser = build_parser()
    args = parser.parse_args(["score", "pope", "--questions", "q", "--answers", "a"])
    assert (args.command, args.benchmark, args.parser) == ("score", "pope", "official")
    with pytest.raises(SystemExit):
        parser.parse_args(["score", "pope", "--questions", "q", "--answers", "a", "--parser", "vcd"])
    with pytest.raises(SystemExit):
        parser.parse_args([])


# --------------------------------------------------------------------------- download registry


@needs_data
def test_registry_pins_the_shared_copies():
    for entry in download.FILES:
        local = BENCH / entry.path
        if local.suffix != ".zip":  # the shared copy of MME holds the extracted files only
            assert download.sha256sum(local) == entry.sha256, entry.name
    assert download.get_file("pope/coco/random").url.startswith(
        "https://raw.githubusercontent.com/RUCAIBox/POPE/3df3ba1b"
    )


@needs_data
def test_fetch_downloads_verifies_and_caches(tmp_path, monkeypatch):
    monkeypatch.setitem(download._SOURCES, "AMBER", (BENCH / "AMBER").as_uri())
    path = download.fetch("amber/safe_words", tmp_path / "cache")
    assert path == tmp_path / "cache" / "AMBER/data/safe_words.txt"
    assert path.read_bytes() == (BENCH / "AMBER/data/safe_words.txt").read_bytes()
    monkeypatch.setitem(download._SOURCES, "AMBER", (tmp_path / "nowhere").as_uri())
    assert download.fetch("amber/safe_words", tmp_path / "cache") == path  # cached: no download


@needs_data
def test_fetch_rejects_a_checksum_mismatch(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(BENCH / "AMBER", mirror)
    (mirror / "data/safe_words.txt").write_text("orange\n")
    monkeypatch.setitem(download._SOURCES, "AMBER", mirror.as_uri())
    with pytest.raises(download.ChecksumError, match="amber/safe_words from file://.*: sha256 "):
        download.fetch("amber/safe_words", tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.txt*"))  # nothing half-written is left


def test_fetch_errors_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="unknown benchmark file 'pope/coco/all'"):
        download.fetch("pope/coco/all", tmp_path)
    monkeypatch.setitem(download._SOURCES, "MME", (tmp_path / "nowhere").as_uri())
    with pytest.raises(OSError, match="could not download mme/eval_tool from file://"):
        download.fetch("mme/eval_tool", tmp_path)
