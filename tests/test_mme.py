"""MME: answer sheets, release layouts and calculation.py's acc / acc+ / score."""

import shutil
from pathlib import Path

import pytest

from avisc_lib.benchmarks.mme import (
    COGNITION,
    HALLUCINATION,
    PERCEPTION,
    load_release,
    load_results_dir,
    load_sheet,
    release_image_path,
    score_mme,
    subtask_scores,
)
from avisc_lib.benchmarks.pope import FormatError
from conftest import BENCH, needs_data

TOOL = BENCH / "MME" / "tools" / "eval_tool"


@needs_data
def test_lavin_example_matches_the_published_totals():
    result = score_mme(load_results_dir(TOOL / "LaVIN"))
    # LaVIN on the MME leaderboard: perception 963.61, cognition 249.64
    assert result["perception"] == pytest.approx(963.6114445778312, abs=1e-9)
    assert result["cognition"] == pytest.approx(249.64285714285714, abs=1e-9)
    subtasks = result["subtasks"]
    assert list(subtasks) == list(PERCEPTION + COGNITION)
    assert subtasks["existence"] == {"acc": 0.95, "acc_plus": 0.9, "score": 185.0}
    assert subtasks["count"]["score"] == pytest.approx(61.666666666666664 + 26.666666666666668)
    assert result["hallucination"] == pytest.approx(sum(subtasks[t]["score"] for t in HALLUCINATION))
    assert result["hallucination"] == pytest.approx(185 + 88 + 1 / 3 + 63 + 1 / 3 + 75)


@needs_data
def test_lavin_existence_by_hand():
    items = load_sheet(TOOL / "LaVIN" / "existence.txt")
    # LaVIN answers "yes, there is ..." on lines 24 and 46 (truth No) and "no, ..." on line 59 (truth Yes);
    # those are 3 wrong questions on 3 different images: acc 57/60, acc+ 27/30
    assert all(i.pred.startswith(("yes", "no")) for i in items)
    wrong = [i.where.rsplit(":", 1)[1] for i in items if i.pred.startswith("yes") != (i.gt == "yes")]
    assert wrong == ["24", "46", "59"]
    assert subtask_scores(items) == {
        "acc": 57 / 60,
        "acc_plus": 27 / 30,
        "score": 57 / 60 * 100 + 27 / 30 * 100,
    }


@needs_data
def test_templates_filled_with_the_truth_score_full_marks(tmp_path):
    for sheet in (TOOL / "Your_Results").glob("*.txt"):
        lines = sheet.read_text().splitlines()
        (tmp_path / sheet.name).write_text("".join(f"{line}\t{line.split(chr(9))[2]}\n" for line in lines))
    result = score_mme(load_results_dir(tmp_path))
    assert result["perception"] == 2000 and result["cognition"] == 800 and result["hallucination"] == 800
    assert sum(len(load_sheet(s)) for s in tmp_path.glob("*.txt")) == 2374


@needs_data
def test_unfilled_template_loads_but_cannot_be_scored():
    items = load_sheet(TOOL / "Your_Results" / "color.txt")
    assert len(items) == 60 and all(i.pred is None for i in items)
    with pytest.raises(FormatError, match=r"color\.txt:1: no model response"):
        subtask_scores(items)


@needs_data
def test_hallucination_subset_alone_gives_only_its_total(tmp_path):
    for name in HALLUCINATION:
        shutil.copy(TOOL / "LaVIN" / f"{name}.txt", tmp_path)
    (tmp_path / "notes.txt").write_text("ignored")
    result = score_mme(load_results_dir(tmp_path))
    assert set(result["subtasks"]) == set(HALLUCINATION)
    assert result["perception"] is None and result["cognition"] is None
    assert result["hallucination"] == pytest.approx(411.6666666666667)


def _sheet(tmp_path, rows, name="count.txt"):
    path = tmp_path / name
    path.write_text("".join("\t".join(row) + "\n" for row in rows))
    return path


def test_other_answers_are_wrong_and_pairs_need_both_right(tmp_path):
    rows = [
        ("a.jpg", "Is there one? Please answer yes or no.", "Yes", "Yes"),
        ("a.jpg", "Are there two? Please answer yes or no.", "No", "There are no two"),  # other
        ("b.jpg", "Is it red? Please answer yes or no.", "Yes", "yes, it is red"),
        ("b.jpg", "Is it blue? Please answer yes or no.", "No", "Not blue"),  # "not " → no
    ]
    result = subtask_scores(load_sheet(_sheet(tmp_path, rows)))
    assert result == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0}


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [("a.jpg", "q", "Yes", "yes\twith a tab"), ("a.jpg", "q", "No", "no")],
            r"count\.txt:1: expected 3 or 4 TAB-separated fields",
        ),
        (
            [("a.jpg", "q", "Maybe", "yes"), ("a.jpg", "q", "No", "no")],
            r"count\.txt:1: ground truth must be Yes or No",
        ),
        ([("a.jpg", "q", "Yes", "yes")], "odd number of questions"),
        (
            [("a.jpg", "q", "Yes", "y"), ("b.jpg", "q", "No", "n")],
            r"count\.txt:2: image 'b\.jpg' follows 'a\.jpg'",
        ),
    ],
)
def test_malformed_sheets(tmp_path, rows, message):
    with pytest.raises(FormatError, match=message):
        load_sheet(_sheet(tmp_path, rows))


def test_results_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results_dir(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no MME answer sheets"):
        load_results_dir(tmp_path)
    with pytest.raises(ValueError, match="unknown MME subtask"):
        score_mme({"colour": []})


def _release(root: Path, nested: bool) -> None:
    """Two images of 'existence' in the release layout (flat or images/ + questions_answers_YN/)."""
    folder = root / "existence"
    questions = folder / "questions_answers_YN" if nested else folder
    images = folder / "images" if nested else folder
    questions.mkdir(parents=True)
    images.mkdir(exist_ok=True)
    for stem, suffix in (("000000001", ".jpg"), ("000000002", ".png")):
        (images / f"{stem}{suffix}").write_bytes(b"")
        (questions / f"{stem}.txt").write_text(
            "Is there a dog? Please answer yes or no.\tYes\nIs there a cat? Please answer yes or no.\tNo\n"
        )


@pytest.mark.parametrize("nested", [False, True])
def test_release_layouts(tmp_path, nested):
    _release(tmp_path, nested)
    items = load_release(tmp_path, ["existence"])["existence"]
    assert [(i.image, i.gt, i.pred) for i in items] == [
        ("000000001.jpg", "yes", None), ("000000001.jpg", "no", None),
        ("000000002.png", "yes", None), ("000000002.png", "no", None),
    ]  # fmt: skip
    assert release_image_path(tmp_path, "existence", "000000002.png").is_file()
    with pytest.raises(FileNotFoundError, match="MME image"):
        release_image_path(tmp_path, "existence", "missing.jpg")
    with pytest.raises(FileNotFoundError, match="subtask folder"):
        load_release(tmp_path, ["count"])
