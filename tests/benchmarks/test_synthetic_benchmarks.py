"""Synthetic POPE / MME / AMBER: determinism, POPE's construction, MME pairing, scoreable AMBER records."""

import json
from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from avisc_lib.benchmarks import amber, mme, pope, synthetic
from avisc_lib.world.questions import caption
from avisc_lib.world.scenes import CATEGORIES, make_scene

N = 100  # POPE images per test set


def _category(text: str) -> str:
    """The category a POPE / existence question asks about."""
    return next(c for c in CATEGORIES if f" {c} " in text)


@pytest.fixture(scope="module")
def pope_sets():
    return {s: synthetic.pope_questions(s, n_images=N, seed=1) for s in pope.STRATEGIES}


def _scene_objects(questions):
    return {q.image: synthetic.scene_of(q.image).categories for q in questions}


def _per_image(questions):
    grouped = defaultdict(list)
    for q in questions:
        grouped[q.image].append(q)
    return grouped


# --------------------------------------------------------------------------- images


def test_images_render_on_demand_and_save(tmp_path):
    name = synthetic.image_name("test", 42)
    assert name == "test-000042.png"
    expected = np.asarray(make_scene("test", 42).image)
    assert np.array_equal(np.asarray(synthetic.load_image(name)), expected)
    folder = synthetic.save_images([name, name], tmp_path / "images")
    assert [p.name for p in folder.iterdir()] == [name]
    assert np.array_equal(np.asarray(Image.open(folder / name)), expected)


@pytest.mark.parametrize("name", ["test-42.jpg", "holdout-000001.png", "test-00004x.png"])
def test_bad_scene_name(name):
    with pytest.raises(ValueError, match="not a synthetic scene name"):
        synthetic.scene_of(name)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "build",
    [
        lambda seed: synthetic.pope_questions("adversarial", n_images=20, seed=seed),
        lambda seed: synthetic.mme_sheets(n_images=5, seed=seed),
        lambda seed: synthetic.amber_set(n_images=5, seed=seed),
    ],
    ids=["pope", "mme", "amber"],
)
def test_seeded(build):
    assert build(3) == build(3)
    assert build(3) != build(4)


# --------------------------------------------------------------------------- POPE


def test_pope_default_size():
    questions = synthetic.pope_questions()
    assert len(questions) == 3000 and len({q.image for q in questions}) == 500
    assert [q.question_id for q in questions] == list(range(1, 3001))


@pytest.mark.parametrize("strategy", pope.STRATEGIES)
def test_pope_balanced_positives_present_negatives_absent(pope_sets, strategy):
    questions = pope_sets[strategy]
    objects = _scene_objects(questions)
    assert len(objects) == N and Counter(q.label for q in questions) == {"yes": 3 * N, "no": 3 * N}
    for image, asked in _per_image(questions).items():
        assert [q.label for q in asked] == ["yes", "no"] * 3  # POPE's order
        positives = [_category(q.text) for q in asked[::2]]
        negatives = [_category(q.text) for q in asked[1::2]]
        assert positives == objects[image][:3]
        assert not set(negatives) & set(objects[image]) and len(set(negatives)) == 3
        assert asked[0].text == f"Is there a {positives[0]} in the image?"


def test_pope_strategies_share_images_and_positives(pope_sets):
    positives = {s: [(q.image, q.text) for q in qs if q.label == "yes"] for s, qs in pope_sets.items()}
    assert positives["random"] == positives["popular"] == positives["adversarial"]
    negatives = {s: [q.text for q in qs if q.label == "no"] for s, qs in pope_sets.items()}
    assert len({tuple(n) for n in negatives.values()}) == 3


def _allowed_by_step(questions, objects):
    """(positive, negative, categories still allowed for that negative) per no-question."""
    for image, asked in _per_image(questions).items():
        used = set(objects[image])
        for yes, no in zip(asked[::2], asked[1::2]):
            negative = _category(no.text)
            yield _category(yes.text), negative, [c for c in CATEGORIES if c not in used]
            used.add(negative)


def test_pope_popular_negatives_are_the_most_frequent_allowed(pope_sets):
    questions = pope_sets["popular"]
    objects = _scene_objects(questions)
    frequency = Counter(c for cats in objects.values() for c in cats)  # over the sampled images, as POPE
    for _, negative, allowed in _allowed_by_step(questions, objects):
        assert frequency[negative] == max(frequency[c] for c in allowed)
    assert len({_category(q.text) for q in questions if q.label == "no"}) < 8  # few, frequent categories


def test_pope_adversarial_negatives_co_occur_with_their_positive(pope_sets):
    questions = pope_sets["adversarial"]
    objects = _scene_objects(questions)
    together = Counter((a, b) for cats in objects.values() for a in cats for b in cats if a != b)
    for positive, negative, allowed in _allowed_by_step(questions, objects):
        assert together[positive, negative] > 0
        assert together[positive, negative] == max(together[positive, c] for c in allowed)

    def same_colour(strategy):  # the world's colour themes make co-occurring objects share a colour
        pairs = list(_allowed_by_step(pope_sets[strategy], objects))
        return np.mean([p.split()[0] == n.split()[0] for p, n, _ in pairs])

    assert same_colour("adversarial") > same_colour("random") + 0.1


# --------------------------------------------------------------------------- MME


@pytest.fixture(scope="module")
def mme_set():
    return synthetic.mme_sheets(n_images=30, seed=2)


def test_mme_pairs_one_yes_one_no_per_image(mme_set):
    assert list(mme_set) == list(mme.HALLUCINATION)
    for items in mme_set.values():
        pairs = mme.image_pairs(items)
        assert len(pairs) == 30 and len({a.image for a, _ in pairs}) == 30
        assert all((a.gt, b.gt) == ("yes", "no") and a.question != b.question for a, b in pairs)


def test_mme_ground_truth_matches_the_scene(mme_set):
    for item in mme_set["existence"]:
        present = _category(item.question) in synthetic.scene_of(item.image).categories
        assert present == (item.gt == "yes")
    for item in mme_set["count"]:
        n = len(synthetic.scene_of(item.image).objects)
        assert (item.question == synthetic.count_question(n)) == (item.gt == "yes")
    for item in mme_set["color"]:
        shape, colour = item.question.removeprefix("Is the ").removesuffix("?").split()
        (obj,) = [o for o in synthetic.scene_of(item.image).objects if o.shape == shape]
        assert (obj.colour == colour) == (item.gt == "yes")


def test_mme_acc_plus_needs_both_answers(mme_set):
    def answered(answer):
        return {t: [replace(i, pred=answer(i)) for i in items] for t, items in mme_set.items()}

    assert mme.score_mme(answered(lambda item: item.gt))["hallucination"] == 800
    scores = mme.score_mme(answered(lambda item: "Yes"))
    assert scores["subtasks"]["count"] == {"acc": 0.5, "acc_plus": 0.0, "score": 50.0}


# --------------------------------------------------------------------------- AMBER


@pytest.fixture(scope="module")
def amber_built():
    return synthetic.amber_set(n_images=40, seed=5)


def test_amber_records_load_like_the_official_files(tmp_path, amber_built):
    (tmp_path / "annotations.json").write_text(json.dumps(amber_built.annotations))
    queries = [{"id": q.id, "image": q.image, "query": q.query} for q in amber_built.queries]
    (tmp_path / "query_all.json").write_text(json.dumps(queries))
    assert amber.load_annotations(tmp_path / "annotations.json") == amber_built.annotations
    assert amber.load_queries(tmp_path / "query_all.json") == amber_built.queries
    kinds = [a["type"] for a in amber_built.annotations]
    assert kinds[:40] == ["generative"] * 40 and set(kinds[40:]) == set(amber.GROUPS) - {
        "discriminative-attribute-action"
    }


def test_amber_truth_matches_the_scene(amber_built):
    for annotation, query in zip(amber_built.annotations, amber_built.queries):
        scene = synthetic.scene_of(query.image)
        if annotation["type"] == "generative":
            assert annotation["truth"] == scene.categories
            assert annotation["hallu"] and not set(annotation["hallu"]) & set(scene.categories)
        elif annotation["type"] == "discriminative-hallucination":
            assert annotation["truth"] == "no" and _category(query.query) not in scene.categories


def _responses(built, caption_for):
    responses = {}
    for a, q in zip(built.annotations, built.queries):
        generative = a["type"] == "generative"
        responses[a["id"]] = caption_for(synthetic.scene_of(q.image), a) if generative else a["truth"].title()
    return responses


def test_amber_perfect_answers_score_perfectly(amber_built):
    responses = _responses(amber_built, lambda scene, _: caption(scene))
    result = amber.score_amber(
        amber_built.annotations, responses, vocab=amber_built.vocabulary, backend=synthetic.WorldNouns()
    )
    assert result["generative"] == {"chair": 0.0, "cover": 100.0, "hal": 0.0, "cog": 0.0}
    assert result["discriminative"]["overall"]["f1"] == 100.0
    assert result["amber_score"] == 100.0


def test_amber_hallucinated_objects_raise_chair_and_cog(amber_built):
    responses = _responses(amber_built, lambda scene, a: f"{caption(scene)} And a {a['hallu'][0]}.")
    generative = amber.score_amber(
        amber_built.annotations, responses, "g", vocab=amber_built.vocabulary, backend=synthetic.WorldNouns()
    )["generative"]
    captions = [a for a in amber_built.annotations if a["type"] == "generative"]
    assert generative["hal"] == 100.0 and generative["cover"] == 100.0
    assert generative["cog"] == 100 / synthetic.HALLU_PER_IMAGE  # one of each caption's hallu objects
    nouns = sum(len(a["truth"]) + 1 for a in captions)
    assert generative["chair"] == pytest.approx(100 * len(captions) / nouns)


def test_world_nouns_reads_category_phrases():
    nouns = synthetic.WorldNouns().nouns("Two red circles, a Blue square and a circle.")
    assert nouns == ["red circle", "blue square"]


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="n_images must be"):
        synthetic.mme_sheets(n_images=0)
    with pytest.raises(ValueError, match="only"):
        synthetic.pope_questions(n_images=1000)
