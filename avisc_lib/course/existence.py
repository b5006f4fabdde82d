"""The yes/no existence questions that notebooks 01-03 study, on the images the profile calls for.

    items = existence_items(profile, profile.n_samples)   # list[Item], half with answer "yes"

Items come in pairs, a question about an object that is present (answer "yes") followed by one
about an absent object, the negative's kind cycling random / popular / adversarial as POPE's
splits do. Where they come from depends on :func:`study_source`:

* ``"synthetic"`` (the tiny profile): held-out synthetic scenes,
  :func:`avisc_lib.world.questions.existence_set`; ``Item.scene`` is the scene, whose pixels
  have exact ground truth.
* ``"coco"`` (a GPU profile with ``$COCO_IMAGES`` set to a folder of COCO val2014 images):
  POPE's COCO questions (the pinned files of :mod:`.benchmarks.download`). Pair ``i`` is taken
  from the split named by its negative's kind, and consecutive pairs are on different images.
* ``"photos"`` (a GPU profile without COCO images): the four public-domain photographs of
  :data:`PHOTOS`, which ship with scikit-image, with the questions written for them below.

Real images have no per-pixel ground truth: ``Item.scene`` is None. A source holds a fixed number
of distinct pairs (12 for the photographs, 1500 for POPE's COCO files); asking for more returns
each distinct pair once, since copies would add no information and would inflate statistics
that compare images with each other. Pairs are numbered cyclically, so ``start`` may be any
integer.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..benchmarks import download, pope
from ..benchmarks.io import DEFAULT_DATA_DIR, FormatError, check_images, open_image
from ..world.questions import NEGATIVE_KINDS, existence_set
from ..world.scenes import Scene
from .profiles import Profile


@dataclass(frozen=True)
class Item:
    """One existence question about one image."""

    image: Image.Image
    question: str  # "Is there a cup in the image?"
    answer: str  # "yes" or "no"
    negative: str | None  # None for a present object, else the kind: random, popular or adversarial
    scene: Scene | None  # the synthetic scene (exact ground truth); None for a photograph


@dataclass(frozen=True)
class Photo:
    """A photograph in scikit-image's ``skimage/data`` and the objects asked about in it."""

    file: str
    licence: str  # as scikit-image's docstring of the loader states it
    present: tuple[str, str, str]  # one per round of questions on this photo
    absent: dict[str, str]  # negative kind -> an object that is not in the photo


# random: any unrelated object; popular: one of COCO's most frequent categories (POPE's popular
# negatives are the most frequent objects); adversarial: an object that often appears with the
# present ones (POPE: the most co-occurring). Objects were chosen by looking at each photo.
PHOTOS = (
    Photo(
        "astronaut.png",
        "NASA (Eileen Collins); public domain (skimage.data.astronaut)",
        ("person", "flag", "helmet"),
        {"random": "giraffe", "popular": "car", "adversarial": "moon"},  # astronaut + flag: moon landings
    ),
    Photo(
        "chelsea.png",
        "CC0, Stefan van der Walt (skimage.data.chelsea)",
        ("cat", "eye", "nose"),
        {"random": "surfboard", "popular": "person", "adversarial": "dog"},
    ),
    Photo(
        "coffee.png",
        "CC0, Rachel Michetti, courtesy of Pikolo Espresso Bar (skimage.data.coffee)",
        ("cup", "spoon", "saucer"),
        {"random": "laptop", "popular": "bottle", "adversarial": "cake"},
    ),
    Photo(
        "rocket.jpg",
        "SpaceX, released into the public domain (skimage.data.rocket)",
        ("rocket", "tower", "light"),
        {"random": "banana", "popular": "chair", "adversarial": "astronaut"},  # launch pad at dusk
    ),
)


def study_source(profile: Profile, coco_images: str | Path | None = None) -> str:
    """``"synthetic"``, ``"coco"`` or ``"photos"``: where :func:`existence_items` takes its images.

    ``coco_images`` defaults to ``$COCO_IMAGES``.
    """
    if profile.dataset == "synthetic":
        return "synthetic"
    if profile.dataset != "coco":
        raise ValueError(f"unknown profile dataset {profile.dataset!r}; expected 'synthetic' or 'coco'")
    return "coco" if (coco_images or os.environ.get("COCO_IMAGES")) else "photos"


def existence_items(profile: Profile, n: int, start: int = 0, *, coco_images: str | Path | None = None) -> list[Item]:
    """``2 * n`` items (pairs ``start .. start + n - 1``; at most every distinct pair once).

    ``coco_images``: the folder of COCO val2014 images, default ``$COCO_IMAGES``.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    source = study_source(profile, coco_images)
    if source == "synthetic":
        pairs = existence_set("test", n, start)
        return [Item(s.image, q["question"], q["answer"], q["negative"], s) for s, q in pairs]
    if source == "coco":
        return _coco_items(Path(coco_images or os.environ["COCO_IMAGES"]), n, start)
    return _photo_items(n, start)


def _pair_indices(n: int, start: int, total: int) -> list[int]:
    """Pair numbers ``start ..`` taken cyclically from ``total`` distinct ones, each at most once."""
    return [(start + k) % total for k in range(min(n, total))]


def photo_path(file: str) -> Path:
    """Path of ``file`` in the installed scikit-image's sample data (no ``import skimage``)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the study photographs ship with scikit-image: pip install scikit-image")
    return Path(spec.submodule_search_locations[0]) / "data" / file


def _photo_items(n: int, start: int) -> list[Item]:
    """Pair ``i``: photo ``i mod 4``, its present object of round ``i div 4``, negative kind ``i mod 3``."""
    images = {photo.file: open_image(photo_path(photo.file).parent, photo.file) for photo in PHOTOS}
    items = []
    for i in _pair_indices(n, start, len(PHOTOS) * 3):
        photo, kind = PHOTOS[i % len(PHOTOS)], NEGATIVE_KINDS[i % 3]
        image = images[photo.file]
        present, absent = photo.present[i // len(PHOTOS)], photo.absent[kind]
        items.append(Item(image, pope.existence_text(present), "yes", None, None))
        items.append(Item(image, pope.existence_text(absent), "no", kind, None))
    return items


def _pope_pairs(kind: str) -> list[tuple[pope.PopeQuestion, pope.PopeQuestion]]:
    """POPE's COCO ``kind`` split as (yes, no) pairs, ordered round by round over its images.

    The file asks, per image, three yes/no pairs; pair ``r * images + j`` is the ``r``-th pair of
    the ``j``-th image, so that consecutive pairs are on different images.
    """
    path = download.fetch(f"pope/coco/{kind}", DEFAULT_DATA_DIR)
    questions = pope.load_questions(path)
    pairs = list(zip(questions[::2], questions[1::2]))
    if any((yes.label, no.label) != ("yes", "no") or yes.image != no.image for yes, no in pairs):
        raise FormatError(f"{path}: expected alternating yes/no questions about the same image")
    by_image: dict[str, list] = {}
    for pair in pairs:
        by_image.setdefault(pair[0].image, []).append(pair)
    rounds = max(len(p) for p in by_image.values())
    return [p[r] for r in range(rounds) for p in by_image.values() if r < len(p)]


def _coco_items(folder: Path, n: int, start: int) -> list[Item]:
    """Pair ``i``: pair ``i`` of the split ``NEGATIVE_KINDS[i mod 3]`` (the three splits ask about
    the same images and present objects in the same order, so no positive is asked twice)."""
    splits = {kind: _pope_pairs(kind) for kind in NEGATIVE_KINDS}
    total = min(map(len, splits.values()))
    chosen = [(splits[NEGATIVE_KINDS[i % 3]][i], NEGATIVE_KINDS[i % 3]) for i in _pair_indices(n, start, total)]
    check_images([q for pair, _ in chosen for q in pair], folder)
    images: dict[str, Image.Image] = {}
    items = []
    for (yes, no), kind in chosen:
        if yes.image not in images:
            images[yes.image] = open_image(folder, yes.image)
        image = images[yes.image]
        items.append(Item(image, yes.text, "yes", None, None))
        items.append(Item(image, no.text, "no", kind, None))
    return items
