"""The synthetic world: determinism, disjoint splits, annotations, and the scene prior."""

import numpy as np
import pytest

from avisc_lib.world import questions as Q
from avisc_lib.world.scenes import CATEGORIES, CATEGORY_ID, WorldConfig, make_scene, patch_labels


def test_scene_is_a_pure_function_of_split_and_index():
    a, b = make_scene("train", 123), make_scene("train", 123)
    assert a.objects == b.objects
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert np.array_equal(a.label_map, b.label_map)


def test_texture_changes_only_the_background():
    flat, textured = make_scene("train", 7), make_scene("train", 7, WorldConfig(texture=40))
    assert flat.objects == textured.objects and np.array_equal(flat.label_map, textured.label_map)
    a, b = np.asarray(flat.image, dtype=int), np.asarray(textured.image, dtype=int)
    on_object = flat.label_map > 0
    assert np.array_equal(a[on_object], b[on_object])
    shift = (b - a)[~on_object].mean(-1)  # the field is grey: one shift per pixel, up to clipping
    assert shift.std() > 10 and np.abs(shift).max() <= 40 + 1


def test_splits_draw_different_scenes():
    train = [np.asarray(make_scene("train", i).image) for i in range(20)]
    test = [np.asarray(make_scene("test", i).image) for i in range(20)]
    assert not any(np.array_equal(x, y) for x in train for y in test)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown split 'val'"):
        make_scene("val", 0)


def test_annotation_matches_the_label_map():
    scene = make_scene("validation", 5)
    ann = scene.annotation()
    assert ann["image_id"] == "validation-000005"
    visible = set(np.unique(scene.label_map)) - {0}
    ids = {o["category_id"] for o in ann["objects"]}
    assert visible <= ids and len(ids) == len(scene.objects)
    for obj in ann["objects"]:
        x, y, w, h = obj["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
        assert obj["category"] == f"{obj['colour']} {obj['shape']}"


def test_patch_labels_are_pixel_fractions():
    scene = make_scene("train", 9)
    soft = patch_labels(scene.label_map, 8)
    assert soft.shape == (64, len(CATEGORIES) + 1)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
    total_pixels = soft.sum(0) * 64
    for cat in scene.categories:
        assert total_pixels[CATEGORY_ID[cat]] == pytest.approx((scene.label_map == CATEGORY_ID[cat]).sum())


def test_prior_is_skewed_and_themed():
    scenes = [make_scene("train", i) for i in range(2000)]
    counts = {c: sum(c in s.categories for s in scenes) for c in CATEGORIES}
    assert counts["red circle"] > 2 * counts["yellow triangle"]
    multi = [s for s in scenes if len(s.objects) > 1]
    same_colour = np.mean([len({o.colour for o in s.objects}) == 1 for s in multi])
    assert same_colour > 0.4  # about half of multi-object scenes are single-colour themes


def test_negative_kinds_follow_pope_construction():
    scene = next(s for i in range(100) if len((s := make_scene("test", i)).objects) == 2)
    present = set(scene.categories)
    for kind in Q.NEGATIVE_KINDS:
        pool = Q.negative_candidates(scene, kind)
        assert present.isdisjoint(pool) and len(pool) == len(CATEGORIES) - 2
    popular = Q.negative_candidates(scene, "popular")
    assert popular[0] in ("red circle", "red square", "blue circle")  # the most frequent absent
    adversarial = Q.negative_candidates(scene, "adversarial")
    partners = {c for p in present for c in Q.cooccurring(p)} - present
    assert set(adversarial[: len(partners)]) == partners


def test_question_families_answer_from_ground_truth():
    rng = np.random.default_rng(0)
    for i in range(200):
        scene = make_scene("test", i)
        for family in Q.FAMILIES:
            q = Q.sample_question(scene, family, rng)
            if q is None:
                continue
            assert q["family"] == family and q["answer"]
            if family == "existence":
                assert (q["category"] in scene.categories) == (q["answer"] == "yes")
            if family == "count":
                assert q["answer"] == Q.NUMBER_WORDS[len(scene.objects)]


def test_caption_lists_objects_left_to_right():
    scene = next(s for i in range(100) if len((s := make_scene("test", i)).objects) == 3)
    ordered = sorted(scene.objects, key=lambda o: o.cx)
    expected = f"a {ordered[0].category}, a {ordered[1].category} and a {ordered[2].category}."
    assert Q.caption(scene) == expected


def test_position_questions_are_unambiguous():
    rng = np.random.default_rng(1)
    asked = 0
    for i in range(100):
        scene = make_scene("test", i)
        q = Q.position_question(scene, rng, positive=True)
        if q is not None:
            asked += 1
            assert q["answer"] == "yes"
    assert asked > 30


def test_existence_set_is_balanced_and_cycles_negative_kinds():
    items = Q.existence_set("test", 6, start=3)
    assert [s.index for s, _ in items] == [i for i in range(3, 9) for _ in range(2)]
    assert [q["answer"] for _, q in items] == ["yes", "no"] * 6
    assert [q["negative"] for _, q in items[1::2]] == list(Q.NEGATIVE_KINDS) * 2
    assert Q.existence_set("test", 6, start=3) == items  # seeded


def test_existence_set_with_one_kind_and_its_own_seed():
    items = Q.existence_set("test", 30, start=20_000, kinds=("adversarial",), seed=11)
    yes, no = items[::2], items[1::2]
    assert all(q["category"] in s.categories for s, q in yes)
    assert all(q["category"] not in s.categories and q["negative"] == "adversarial" for s, q in no)
    for scene, q in no:  # an absent object of a present colour whenever the scene leaves one
        colours = {c.split()[0] for c in scene.categories}
        if any(c.split()[0] in colours and c not in scene.categories for c in CATEGORIES):
            assert q["category"].split()[0] in colours
    other_seed = Q.existence_set("test", 30, start=20_000, kinds=("adversarial",), seed=12)
    assert [q for _, q in other_seed] != [q for _, q in items]


@pytest.mark.parametrize("kinds", [(), ("random", "frequent")])
def test_existence_set_names_bad_kinds(kinds):
    with pytest.raises(ValueError, match="kinds must be a non-empty sequence of"):
        Q.existence_set("test", 2, kinds=kinds)
