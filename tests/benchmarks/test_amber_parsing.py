"""AMBER answer parsing in the runner (its default) and ``avisc-eval score amber --official-rounding``."""

import json

import pytest
from conftest import DATA

from avisc_lib.benchmarks import amber
from avisc_lib.benchmarks.cli import main
from avisc_lib.benchmarks.tasks import DEFAULT_PARSERS, build_task

ANNOTATIONS = DATA / "AMBER" / "data" / "annotations.json"


@pytest.fixture(scope="module")
def annotations():
    return amber.load_annotations(ANNOTATIONS)


def _absent_object_ids(annotations) -> list[int]:
    """Existence questions whose truth is no."""
    return [
        i
        for i, a in enumerate(annotations, start=1)
        if a["type"] == "discriminative-hallucination" and a["truth"] == "no"
    ]


@pytest.mark.parametrize(
    "answer, correct",
    [
        ("No", {"official": True, "normalised": True, "avisc": True}),
        ("No.", {"official": False, "normalised": True, "avisc": True}),
        ("no", {"official": False, "normalised": True, "avisc": True}),
        ("No, there is no dog.", {"official": False, "normalised": False, "avisc": True}),
    ],
)
def test_which_parser_counts_a_negative_answer(annotations, answer, correct):
    responses = dict.fromkeys(_absent_object_ids(annotations), answer)
    for parser, right in correct.items():
        existence = amber.score_discriminative(annotations, responses, parser)["existence"]
        assert existence["accuracy"] == (100.0 if right else 0.0), parser


def test_the_runner_default_is_the_normalised_exact_rule():
    """The runner scores free text: "No." counts, "No, there is no X." does not (AvisC's parser only)."""
    task = build_task("amber", split="existence", limit=6)
    assert task.scoring["parser"] == DEFAULT_PARSERS["amber"] == "normalised"
    share_no = 100 * sum(q.label == "no" for q in task.questions) / len(task.questions)

    def accuracy(answer):
        return task.score({q.id: answer for q in task.questions})["discriminative"]["existence"]["accuracy"]

    assert share_no > 0 and accuracy("No.") == share_no
    assert accuracy("No, there is no dog.") == 0.0


def _score_cli(capsys, responses_file, *flags):
    argv = ["score", "amber", "--responses", str(responses_file), "--annotations", str(ANNOTATIONS), "--task", "d"]
    assert main([*argv, *flags]) == 0
    return json.loads(capsys.readouterr().out)["discriminative"]


def test_cli_official_rounding(tmp_path, capsys, annotations):
    """All "No" on every discriminative id: inference.py prints 66.3 / 66.3 / 100 / 79.7 overall."""
    ids = [i for i, a in enumerate(annotations, start=1) if a["type"] != amber.GENERATIVE]
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps([{"id": i, "response": "No"} for i in ids]))
    rounded = _score_cli(capsys, responses, "--official-rounding")["overall"]
    exact = _score_cli(capsys, responses)["overall"]
    assert [rounded[k] for k in ("accuracy", "precision", "recall", "f1")] == [66.3, 66.3, 100.0, 79.7]
    assert exact["accuracy"] != 66.3 and round(exact["accuracy"], 1) == 66.3
