"""POPE: real question files, answer alignment, the official metrics, and the POPE builder."""

import json
import random
from pathlib import Path

import pytest
from conftest import DATA

from avisc_lib.benchmarks.io import FormatError
from avisc_lib.benchmarks.parsers import UnparseableAnswer
from avisc_lib.benchmarks.pope import (
    ObjectStats,
    PopeAnswer,
    build_pope,
    coco_image_objects,
    load_answers,
    load_questions,
    pope_metrics,
    save_questions,
    score_pope,
)

COCO = DATA / "POPE" / "output" / "coco"


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def _jsonl(path: Path, records) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


# --------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "relative, n, yes",
    [
        ("POPE/output/coco/coco_pope_random.json", 3000, 1500),
        ("POPE/output/coco/coco_pope_popular.json", 3000, 1500),  # CRLF
        ("POPE/output/coco/coco_pope_adversarial.json", 3000, 1500),  # CRLF
        ("POPE/output/seem/aokvqa/aokvqa_pope_seem_random.json", 3000, 1500),  # JSON array
        ("POPE/output/seem/gqa/gqa_pope_seem_adversarial.json", 3000, 1500),
        ("POPE_e3e3926/output/coco/coco_pope_random.json", 2910, 1500),  # LLaVA-1.5 era file
    ],
)
def test_real_question_files_load(relative, n, yes):
    questions = load_questions(DATA / relative)
    assert len(questions) == n
    assert sum(q.label == "yes" for q in questions) == yes
    assert len({q.image for q in questions}) == 500
    assert questions[0].text.startswith("Is there a")


# COCO files alternate yes, no per image; these 6 phrasings cycle in step with the labels
PHRASINGS = ["Yes.", "No, there is not", "", "NO", "I don't see one", "there is no cat in the image."]


@pytest.mark.parametrize(
    "parser, counts",
    [
        # per 6 questions: official reads "", "NO", "I don't see one" as yes; AvisC reads "NO" and n't as no
        ("official", {"TP": 1500, "FP": 500, "TN": 1000, "FN": 0}),
        ("avisc", {"TP": 1000, "FP": 0, "TN": 1500, "FN": 500}),
    ],
)
def test_mixed_phrasings_on_the_real_random_split(tmp_path, parser, counts):
    questions = load_questions(COCO / "coco_pope_random.json")
    assert [q.label for q in questions[:6]] * 500 == [q.label for q in questions]
    answers = _jsonl(
        tmp_path / "a.jsonl",
        [{"question": q.text, "answer": PHRASINGS[i % 6]} for i, q in enumerate(questions)],
    )
    metrics = score_pope(questions, load_answers(answers), parser)
    tp, fp, tn, fn = (counts[k] for k in ("TP", "FP", "TN", "FN"))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert metrics == {
        **counts,
        "accuracy": 2500 / 3000,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
        "yes_ratio": (tp + fp) / 3000,
    }


def test_official_test_vectors_on_a_json_array_file():
    questions = load_questions(DATA / "POPE/output/seem/gqa/gqa_pope_seem_random.json")
    always_yes = score_pope(questions, ["yes"] * len(questions))
    assert (always_yes["accuracy"], always_yes["precision"], always_yes["recall"]) == (0.5, 0.5, 1.0)
    assert always_yes["f1"] == pytest.approx(2 / 3) and always_yes["yes_ratio"] == 1.0
    keyed = {q.question_id: q.label.capitalize() for q in reversed(questions)}  # any order works by id
    perfect = score_pope(questions, keyed)
    assert [perfect[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == [1, 1, 1, 1, 0.5]


def test_old_2910_answers_do_not_silently_shift_onto_the_3000_file(tmp_path):
    old = load_questions(DATA / "POPE_e3e3926/output/coco/coco_pope_random.json")
    answers = _jsonl(tmp_path / "old.jsonl", [{"answer": q.label} for q in old])
    with pytest.raises(FormatError, match="2910 answers for 3000 questions"):
        score_pope(load_questions(COCO / "coco_pope_random.json"), load_answers(answers))


def test_crlf_and_lf_files_hold_the_same_positives():
    random_split = load_questions(COCO / "coco_pope_random.json")
    popular = load_questions(COCO / "coco_pope_popular.json")
    assert [q for q in random_split if q.label == "yes"] == [q for q in popular if q.label == "yes"]


def test_missing_images_are_reported(tmp_path):
    questions = load_questions(COCO / "coco_pope_random.json")
    (tmp_path / questions[0].image).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"499 image\(s\) missing from"):
        load_questions(COCO / "coco_pope_random.json", image_dir=tmp_path)


# --------------------------------------------------------------------------- metrics by hand


def test_metrics_by_hand():
    labels = ["yes", "yes", "yes", "no", "no"]
    preds = ["yes", "no", "yes", "yes", "no"]
    m = pope_metrics(labels, preds)
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (2, 1, 1, 1)
    assert m["accuracy"] == 3 / 5 and m["precision"] == 2 / 3 and m["recall"] == 2 / 3
    assert m["f1"] == pytest.approx(2 / 3) and m["yes_ratio"] == 3 / 5


def test_zero_divisions_give_zero():
    never_yes = pope_metrics(["yes", "no"], ["no", "no"])
    assert never_yes["precision"] == 0.0 and never_yes["recall"] == 0.0 and never_yes["f1"] == 0.0
    assert pope_metrics([], [])["accuracy"] == 0.0


def test_metrics_reject_non_binary_predictions():
    with pytest.raises(ValueError, match="must be 'yes' or 'no'"):
        pope_metrics(["yes"], ["other"])


# --------------------------------------------------------------------------- files and alignment


QUESTIONS = [
    {"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "yes"},
    {"question_id": 2, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "no"},
]


def test_crlf_bom_and_blank_lines_are_tolerated(tmp_path):
    text = "\ufeff" + json.dumps(QUESTIONS[0]) + "\n\n" + json.dumps(QUESTIONS[1]) + "\n"
    questions = load_questions(_write(tmp_path / "q.json", text, "\r\n"))
    assert [q.question_id for q in questions] == [1, 2]


@pytest.mark.parametrize(
    "text, message",
    [
        (json.dumps(QUESTIONS[0]) + "\n{not json}\n", r"q\.json:2: invalid JSON line"),
        (
            json.dumps({k: v for k, v in QUESTIONS[0].items() if k != "label"}) + "\n",
            r"q\.json:1: missing field\(s\) 'label'",
        ),
        (json.dumps({**QUESTIONS[0], "label": "maybe"}) + "\n", "label must be 'yes' or 'no'"),
        (json.dumps({**QUESTIONS[0], "question_id": "1"}) + "\n", "question_id must be an integer"),
        (
            json.dumps(QUESTIONS[0]) + "\n" + json.dumps(QUESTIONS[0]) + "\n",
            r"duplicate question_id\(s\) \[1\]",
        ),
        (json.dumps([QUESTIONS[0], {"image": "b.jpg"}], indent=2), r"q\.json record 2: missing field"),
        ('[\n  {"question_id": 1,\n  oops\n]', r"q\.json:3: invalid JSON array"),
        ("[1, 2]", "expected a JSON object"),
        ("\n\n", "no records"),
    ],
)
def test_malformed_question_files(tmp_path, text, message):
    with pytest.raises(FormatError, match=message):
        load_questions(_write(tmp_path / "q.json", text))


def test_answers_in_order_or_by_id(tmp_path):
    questions = load_questions(_jsonl(tmp_path / "q.json", QUESTIONS))
    in_order = score_pope(questions, load_answers(_jsonl(tmp_path / "a.json", [{"answer": "Yes"}, {"answer": "No"}])))
    by_id = load_answers(
        _jsonl(tmp_path / "b.json", [{"question_id": 2, "answer": "No"}, {"question_id": 1, "answer": "Yes"}])
    )
    assert score_pope(questions, by_id) == in_order
    assert in_order["accuracy"] == 1.0


@pytest.mark.parametrize(
    "answers, message",
    [
        (
            [PopeAnswer("Yes", 1, "a:1"), PopeAnswer("No", None, "a:2")],
            "a:2: no question_id while other answers have one",
        ),
        ([PopeAnswer("Yes", 1, "a:1"), PopeAnswer("No", 1, "a:2")], "a:2: duplicate question_id 1"),
        ({1: "Yes", 3: "No"}, r"missing ids \[2\], unknown ids \[3\]"),
        (["Yes"], "1 answers for 2 questions"),
    ],
)
def test_misaligned_answers_are_errors(tmp_path, answers, message):
    questions = load_questions(_jsonl(tmp_path / "q.json", QUESTIONS))
    with pytest.raises(FormatError, match=message):
        score_pope(questions, answers)


def test_answer_records_need_a_string_answer(tmp_path):
    with pytest.raises(FormatError, match=r"a\.json:2: missing field\(s\) 'answer'"):
        load_answers(_jsonl(tmp_path / "a.json", [{"answer": "yes"}, {"text": "no"}]))
    with pytest.raises(FormatError, match="answer must be a string"):
        load_answers(_jsonl(tmp_path / "a.json", [{"answer": None}]))


def test_strict_parser_names_the_unparseable_answers(tmp_path):
    questions = load_questions(_jsonl(tmp_path / "q.json", QUESTIONS))
    with pytest.raises(UnparseableAnswer, match=r'1 of 2 answers .* \(question_id 2: "I don\'t see one"\)'):
        score_pope(questions, ["Yes, a dog.", "I don't see one"], parser="strict")
    assert score_pope(questions, ["Yes, a dog.", "NO"], parser="strict")["accuracy"] == 1.0


# --------------------------------------------------------------------------- building POPE


IMAGES = {  # sequences keep their order: POPE asks about the first 3 objects
    "1.jpg": ["dog", "cat", "bird"],
    "2.jpg": ["dog", "cat", "car"],
    "3.jpg": ["dog", "person", "car", "apple"],
    "4.jpg": ["person", "car", "bus"],
    "5.jpg": ["tree", "dog"],  # too few objects: never sampled
}
STATS = ObjectStats(
    frequency={"car": 10, "person": 9, "dog": 8, "cat": 7, "bird": 6, "bus": 5, "apple": 4, "tree": 1},
    cooccurrence={"dog": {"cat": 6, "bus": 5, "car": 1}, "cat": {"dog": 4, "car": 3}},
)


def _per_image(questions, image):
    return [(q.text.split()[3], q.label) for q in questions if q.image == image]


def test_popular_negatives_are_the_most_frequent_absent_objects():
    questions = build_pope(IMAGES, "popular", n_images=None, stats=STATS)
    assert _per_image(questions, "1.jpg") == [
        ("dog", "yes"), ("car", "no"), ("cat", "yes"), ("person", "no"), ("bird", "yes"), ("bus", "no"),
    ]  # fmt: skip


def test_adversarial_negatives_follow_cooccurrence_then_fall_back_to_random():
    questions = build_pope(IMAGES, "adversarial", n_images=None, stats=STATS, seed=3)
    pairs = _per_image(questions, "1.jpg")
    assert pairs[1] == ("bus", "no")  # dog's most frequent partner that is absent (cat is present)
    assert pairs[3] == ("car", "no")  # cat's partners: dog (present), then car
    assert pairs[5][0] in {"person", "apple", "tree"}  # bird has no partners: random among the rest


def test_stats_from_images_count_objects_and_pairs():
    stats = ObjectStats.from_images({k: v for k, v in IMAGES.items() if k != "5.jpg"})
    assert stats.frequency["dog"] == 3 and stats.frequency["bus"] == 1
    assert stats.cooccurrence["dog"] == {"cat": 2, "bird": 1, "car": 2, "person": 1, "apple": 1}
    assert stats.partners("car") == ["dog", "person", "cat", "apple", "bus"]  # ties keep first-seen order
    assert stats.popular()[:3] == ["dog", "car", "cat"]


def _world(n_images=60, seed=0):
    rng = random.Random(seed)
    names = [f"object{i}" for i in range(25)] + ["apple", "orange"]
    return {f"{i:03d}.jpg": rng.sample(names, rng.randint(1, 6)) for i in range(n_images)}


@pytest.mark.parametrize("strategy", ["random", "popular", "adversarial"])
def test_built_splits_have_pope_structure(strategy):
    world = _world()
    questions = build_pope(world, strategy, n_images=20, seed=1)
    assert len(questions) == 120 and [q.question_id for q in questions] == list(range(1, 121))
    assert [q.label for q in questions] == ["yes", "no"] * 60
    for image in {q.image for q in questions}:
        asked = _per_image(questions, image)
        negatives = [obj for obj, label in asked if label == "no"]
        assert [obj for obj, label in asked if label == "yes"] == world[image][:3]
        assert len(set(negatives)) == 3 and not set(negatives) & set(world[image])


def test_same_seed_gives_same_images_and_positives_across_strategies():
    world = _world()
    splits = {s: build_pope(world, s, n_images=20, seed=7) for s in ("random", "popular", "adversarial")}
    positives = {s: [q for q in qs if q.label == "yes"] for s, qs in splits.items()}
    assert positives["random"] == positives["popular"] == positives["adversarial"]
    assert build_pope(world, "random", n_images=20, seed=7) == splits["random"]
    assert build_pope(world, "random", n_images=20, seed=8) != splits["random"]


def test_articles_and_template():
    questions = build_pope(
        {"x.jpg": ["apple", "dog", "egg"]},
        "random",
        n_images=None,
        stats=ObjectStats({"orange": 1, "cat": 1, "owl": 1}),
    )
    texts = [q.text for q in questions]
    assert texts[0] == "Is there an apple in the image?" and texts[2] == "Is there a dog in the image?"
    assert all("imange" not in t for t in texts)


def test_builder_errors():
    with pytest.raises(ValueError, match="only 4 images have at least 3 objects"):
        build_pope(IMAGES, n_images=5)
    with pytest.raises(ValueError, match="unknown strategy"):
        build_pope(IMAGES, "frequent")
    with pytest.raises(ValueError, match="no negative object left"):
        build_pope({"x.jpg": ["a", "b", "c"]}, n_images=None)


def test_coco_annotations_via_pycocotools(tmp_path):
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(["person", "dog", "cat", "car", "bus", "truck", "kite"])]
    images = [{"id": i, "file_name": f"COCO_{i}.jpg", "height": 10, "width": 10} for i in (1, 2, 3, 4)]
    anns = [(1, 2), (1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 1), (3, 1), (4, 6), (4, 7), (4, 1)]
    annotations = [
        {"id": k + 1, "image_id": img, "category_id": cat, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}
        for k, (img, cat) in enumerate(anns)
    ]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    objects = coco_image_objects(path)
    assert objects == {
        "COCO_1.jpg": ["dog", "person", "cat"],
        "COCO_2.jpg": ["car", "bus", "person"],
        "COCO_3.jpg": ["person"],
        "COCO_4.jpg": ["truck", "kite", "person"],
    }
    questions = build_pope(objects, "popular", n_images=None)
    assert len(questions) == 18 and "COCO_3.jpg" not in {q.image for q in questions}
    save_questions(questions, tmp_path / "pope.json")
    assert load_questions(tmp_path / "pope.json") == questions
