"""MME: answer sheets, release layouts and calculation.py's acc / acc+ / score."""

import shutil
from pathlib import Path

import pytest
from mme_parquet import parquet_from_release

from avisc_lib.benchmarks.io import FormatError
from avisc_lib.benchmarks.mme import (
    COGNITION,
    HALLUCINATION,
    HUB_REVISION,
    PERCEPTION,
    load_hub,
    load_release,
    load_results_dir,
    load_sheet,
    release_image_path,
    score_mme,
    subtask_scores,
)

SHEETS = Path(__file__).resolve().parents[1] / "fixtures" / "mme"  # 14 hand-written answer sheets, 58 questions

# Worked by hand with calculation.py's rule (lower-case; exactly yes/no, else "yes" / "no" within the
# first 4 characters, else wrong): (acc over questions, acc+ over images, score = 100 acc + 100 acc+).
BY_HAND = {
    "existence": (5 / 6, 2 / 3, 150.0),  # 3 images; line 6 says "Yes, there is a kite" (truth No)
    "count": (3 / 4, 1 / 2, 125.0),  # "There are two cats." is neither yes nor no; "No." is no
    "position": (1, 1, 200.0),  # "not really" reads as no (its first 4 characters hold "no")
    "color": (2 / 4, 1 / 2, 100.0),  # both answers of the first image flipped
    "posters": (3 / 4, 1 / 2, 125.0),  # "I think so" is neither
    "celebrity": (1, 1, 200.0),  # "yes." reads as yes
    "scene": (1, 1, 200.0),
    "landmark": (2 / 4, 0, 50.0),  # one wrong answer on each image
    "artwork": (3 / 4, 1 / 2, 125.0),
    "OCR": (0, 0, 0.0),  # two flipped answers, then "Sorry, ..." and "The word is ..." (neither)
    "commonsense_reasoning": (1, 1, 200.0),
    "numerical_calculation": (1 / 4, 0, 25.0),
    "text_translation": (3 / 4, 1 / 2, 125.0),  # "Nope" reads as no (truth Yes)
    "code_reasoning": (3 / 4, 1 / 2, 125.0),  # "The output is hello" is neither
}
PERCEPTION_BY_HAND = 150 + 125 + 200 + 100 + 125 + 200 + 200 + 50 + 125 + 0  # 1275
COGNITION_BY_HAND = 200 + 25 + 125 + 125  # 475
HALLUCINATION_BY_HAND = 150 + 125 + 200 + 100  # 575


def _template(sheet: Path) -> str:
    """``sheet`` without its responses, as MME's ``Your_Results`` templates are."""
    return "".join(line.rsplit("\t", 1)[0] + "\n" for line in sheet.read_text().splitlines())


def test_fixture_sheets_score_as_worked_by_hand():
    result = score_mme(load_results_dir(SHEETS))
    subtasks = result["subtasks"]
    assert list(subtasks) == list(PERCEPTION + COGNITION)
    for name, (acc, acc_plus, score) in BY_HAND.items():
        assert subtasks[name] == pytest.approx({"acc": acc, "acc_plus": acc_plus, "score": score}), name
    assert result["perception"] == pytest.approx(PERCEPTION_BY_HAND)
    assert result["cognition"] == pytest.approx(COGNITION_BY_HAND)
    assert result["hallucination"] == pytest.approx(HALLUCINATION_BY_HAND)


def test_existence_by_hand():
    items = load_sheet(SHEETS / "existence.txt")
    wrong = [i.where.rsplit(":", 1)[1] for i in items if i.pred.lower().startswith("yes") != (i.gt == "yes")]
    assert wrong == ["6"]  # every response starts with yes or no; only line 6 is wrong
    assert subtask_scores(items) == {"acc": 5 / 6, "acc_plus": 2 / 3, "score": 5 / 6 * 100 + 2 / 3 * 100}


def test_templates_filled_with_the_truth_score_full_marks(tmp_path):
    for sheet in SHEETS.glob("*.txt"):
        lines = _template(sheet).splitlines()
        (tmp_path / sheet.name).write_text("".join(f"{line}\t{line.split(chr(9))[2]}\n" for line in lines))
    result = score_mme(load_results_dir(tmp_path))
    assert result["perception"] == 2000 and result["cognition"] == 800 and result["hallucination"] == 800
    assert sum(len(load_sheet(s)) for s in tmp_path.glob("*.txt")) == 58


def test_unfilled_template_loads_but_cannot_be_scored(tmp_path):
    (tmp_path / "color.txt").write_text(_template(SHEETS / "color.txt"))
    items = load_sheet(tmp_path / "color.txt")
    assert len(items) == 4 and all(i.pred is None for i in items)
    with pytest.raises(FormatError, match=r"color\.txt:1: no model response"):
        subtask_scores(items)


def test_hallucination_subset_alone_gives_only_its_total(tmp_path):
    for name in HALLUCINATION:
        shutil.copy(SHEETS / f"{name}.txt", tmp_path)
    (tmp_path / "notes.txt").write_text("ignored")
    result = score_mme(load_results_dir(tmp_path))
    assert set(result["subtasks"]) == set(HALLUCINATION)
    assert result["perception"] is None and result["cognition"] is None
    assert result["hallucination"] == pytest.approx(HALLUCINATION_BY_HAND)


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


# --------------------------------------------------------------------------- the lmms-lab/MME dataset


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """``datasets`` offline, caching under ``tmp_path``."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


def test_hub_layout_gives_the_release_questions(tmp_path, offline_datasets):
    root = tmp_path / "release"
    _release(root, nested=True)
    (root / "count").mkdir()  # a second subtask, flat layout, three images
    for stem in ("b", "a", "a-1"):
        (root / "count" / f"{stem}.jpg").write_bytes(b"\xff\xd8 not decoded here")
        (root / "count" / f"{stem}.txt").write_text(f"Two {stem}?\tNo\nOne {stem}?\tYes\n")
    hub = load_hub(["existence", "count"], parquet_from_release(root, tmp_path / "parquet", ["existence", "count"]))
    assert hub.sheets == load_release(root, ["existence", "count"])  # same items, same order
    assert [i.image for i in hub.sheets["count"][::2]] == ["a-1.jpg", "a.jpg", "b.jpg"]  # as the .txt files sort
    assert hub.source == {}  # a local folder: nothing to pin
    assert hub.rows.keys() == {
        "existence/000000001.jpg",
        "existence/000000002.png",
        "count/a.jpg",
        "count/a-1.jpg",
        "count/b.jpg",
    }


def test_hub_rejects_a_bad_layout(tmp_path, offline_datasets):
    import datasets

    folder = tmp_path / "bad" / "data"
    folder.mkdir(parents=True)
    datasets.Dataset.from_dict(
        {"question_id": ["x/1.jpg"], "question": ["q"], "answer": ["Maybe"], "category": ["count"], "image": [None]}
    ).to_parquet(folder / "test-0.parquet")
    with pytest.raises(FormatError, match=r"row 0 \(x/1.jpg\): ground truth must be Yes or No"):
        load_hub(["count"], folder.parent)
    with pytest.raises(FormatError, match="no questions of subtask 'existence'"):
        load_hub(["existence"], folder.parent)
    with pytest.raises(ValueError, match="unknown MME subtask"):
        load_hub(["colour"], folder.parent)


def test_hub_loads_the_pinned_revision(tmp_path, offline_datasets, monkeypatch):
    import datasets

    root = tmp_path / "release"
    _release(root, nested=False)
    local = parquet_from_release(root, tmp_path / "parquet", ["existence"])
    calls, real_load = [], datasets.load_dataset

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return real_load(str(local), split="test")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    hub = load_hub(["existence"])
    assert calls == [("lmms-lab/MME", {"revision": HUB_REVISION, "split": "test"})]
    assert hub.source == {"dataset": "lmms-lab/MME", "revision": HUB_REVISION}
    assert len(HUB_REVISION) == 40 and int(HUB_REVISION, 16)
