"""The existence questions of notebooks 01-03: synthetic scenes, POPE on COCO images, or photographs."""

import importlib
import inspect
import json
from collections import Counter

import numpy as np
import pytest
from conftest import DATA, scene_images
from PIL import Image

from avisc_lib.course.existence import PHOTOS, existence_items, photo_path, study_source
from avisc_lib.course.profiles import resolve_profile
from avisc_lib.world.questions import existence_set

KINDS = ["random", "popular", "adversarial"]


@pytest.fixture(scope="module")
def gpu_profile():
    return resolve_profile("llava", gpu_gib=24.0)


def _object(question: str) -> str:
    """ "Is there an eye in the image?" -> "eye"."""
    return question.removeprefix("Is there ").removesuffix(" in the image?").split(" ", 1)[1]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_tiny_profile_gives_the_synthetic_existence_set():
    items = existence_items(resolve_profile("tiny", gpu_gib=0), 5, start=3)
    expected = existence_set("test", 5, start=3)
    assert len(items) == len(expected) == 10
    for item, (scene, q) in zip(items, expected):
        assert (item.question, item.answer, item.negative) == (q["question"], q["answer"], q["negative"])
        assert item.scene.index == scene.index and np.array_equal(_pixels(item.image), _pixels(scene.image))


def test_source_follows_the_profile_and_coco_images(gpu_profile, monkeypatch, tmp_path):
    monkeypatch.delenv("COCO_IMAGES", raising=False)
    assert study_source(resolve_profile("tiny", gpu_gib=0), coco_images=tmp_path) == "synthetic"
    assert study_source(gpu_profile) == "photos"
    assert study_source(gpu_profile, coco_images=tmp_path) == "coco"
    monkeypatch.setenv("COCO_IMAGES", str(tmp_path))
    assert study_source(gpu_profile) == "coco"


def test_photo_set_is_balanced_and_follows_the_table(gpu_profile, monkeypatch):
    monkeypatch.delenv("COCO_IMAGES", raising=False)
    items = existence_items(gpu_profile, 100)  # more than the 12 distinct pairs
    assert len(items) == 24 and len({(item.image.size, item.question) for item in items}) == 24
    assert [item.answer for item in items] == ["yes", "no"] * 12
    assert [item.negative for item in items[1::2]] == KINDS * 4
    files = {photo.file: _pixels(Image.open(photo_path(photo.file))) for photo in PHOTOS}
    for item in items:
        assert item.image.mode == "RGB" and item.scene is None
        photo = next(p for p in PHOTOS if np.array_equal(_pixels(item.image), files[p.file]))
        obj = _object(item.question)
        if item.answer == "yes":
            assert obj in photo.present and item.negative is None
        else:
            assert obj == photo.absent[item.negative] and obj not in photo.present
    asked = Counter(_object(item.question) for item in items if item.answer == "yes")
    assert sorted(asked) == sorted(o for p in PHOTOS for o in p.present) and set(asked.values()) == {1}


def test_photo_pairs_are_numbered_cyclically(gpu_profile, monkeypatch):
    monkeypatch.delenv("COCO_IMAGES", raising=False)
    every = existence_items(gpu_profile, 12)
    shifted = existence_items(gpu_profile, 4, start=500)  # 500 = 41 * 12 + 8
    assert [i.question for i in shifted] == [i.question for i in every[16:24]]
    assert len({i.image.size for i in shifted[::2]}) == 4  # four different photos


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.file)
def test_photo_licences_are_the_ones_scikit_image_states(photo):
    loader = getattr(importlib.import_module("skimage.data"), photo.file.split(".")[0])
    doc = " ".join(loader.__doc__.split()).lower()
    free = "cc0" if "CC0" in photo.licence else "public domain"
    assert free in doc and f"data/{photo.file}" in inspect.getsource(loader)


def _pope_lines(kind: str) -> list[dict]:
    path = DATA / "POPE" / "output" / "coco" / f"coco_pope_{kind}.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    names = {record["image"] for kind in KINDS for record in _pope_lines(kind)}
    return scene_images(tmp_path_factory.mktemp("val2014"), sorted(names))


def test_coco_items_interleave_pope_splits(gpu_profile, coco_folder, monkeypatch):
    monkeypatch.setenv("COCO_IMAGES", str(coco_folder))
    items = existence_items(gpu_profile, 6, start=498)
    # pairs 498, 499: first pair of images 498, 499; pairs 500-503: second pair of images 0-3
    lines = [(498, 6 * 498), (499, 6 * 499), (500, 2), (501, 8), (502, 14), (503, 20)]  # 6 lines per image
    for k, (pair, line) in enumerate(lines):
        kind = KINDS[pair % 3]
        yes, no = _pope_lines(kind)[line : line + 2]
        assert [(i.question, i.answer, i.negative) for i in items[2 * k : 2 * k + 2]] == [
            (yes["text"], "yes", None), (no["text"], "no", kind)]  # fmt: skip
        expected = _pixels(Image.open(coco_folder / yes["image"]))
        assert all(np.array_equal(_pixels(i.image), expected) and i.scene is None for i in items[2 * k : 2 * k + 2])


def test_coco_items_need_their_images(gpu_profile, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing from"):
        existence_items(gpu_profile, 2, coco_images=tmp_path)


def test_bad_sizes_are_refused(gpu_profile):
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        existence_items(gpu_profile, 0)
