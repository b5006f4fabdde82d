"""Seeded POPE-, MME- and AMBER-style benchmarks over the synthetic world, in the official record types.

Each builder returns what the real loaders return, so the same scorers apply:

* :func:`pope_questions` → ``list[PopeQuestion]``: POPE's own construction (:func:`.pope.build_pope`)
  over the first ``pool`` scenes of the test split: 500 scenes with 3 objects, 3 yes + 3 no
  questions each; random / popular / adversarial negatives from the object frequencies and
  co-occurrences of the sampled scenes, exactly as POPE's ``main.py``. The world's prior is
  skewed and colour-themed, so popular negatives are the common categories and adversarial
  ones the same-colour partners. (The model card's and notebooks 01-03's existence questions,
  :func:`avisc_lib.world.questions.existence_set`, pick negatives from the world's prior instead.)
* :func:`mme_sheets` → ``{subtask: list[MMEItem]}`` for the hallucination subset (existence,
  count, position, color): per scene one yes question followed by one no question, MME's
  pairing, so ``acc_plus`` works.
* :func:`amber_set` → AMBER annotations, queries and a :class:`.amber.Vocabulary` of the 12
  categories: a "Describe this image." caption per scene (scored by CHAIR / Cover / Hal / Cog
  with :class:`WorldNouns`) and discriminative existence / attribute / relation questions.

Questions use only the world's words (the tiny model's tokenizer knows no others), so MME's
" Please answer yes or no." suffix is left out. Scenes are named ``"<split>-<index>.png"``;
:func:`load_image` renders one on demand and :func:`save_images` writes them only when asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..world import questions as Q
from ..world.scenes import CATEGORIES, COLOURS, SHAPES, SPLITS, Scene, make_scene
from .amber import GENERATIVE, AmberQuery, Vocabulary
from .mme import MMEItem
from .parsers import NO, YES
from .pope import PopeQuestion, build_pope

SCENE_SPLIT = "test"
POOL = 2000  # scenes each benchmark draws from (about 700 of them have 3 objects)
HALLU_PER_IMAGE = 2  # AMBER "hallu" objects per scene: absent, co-occurring first
CAPTION_QUERY = "Describe this image."
_NAME = re.compile(r"(?P<split>[a-z]+)-(?P<index>\d+)\.png")


# --------------------------------------------------------------------------- images


def image_name(split: str, index: int) -> str:
    """File name of scene ``index`` of ``split``, e.g. ``"test-000042.png"``."""
    return f"{split}-{index:06d}.png"


def scene_of(name: str) -> Scene:
    """The scene an :func:`image_name` names."""
    match = _NAME.fullmatch(name)
    if match is None or match["split"] not in SPLITS:
        raise ValueError(f"{name!r} is not a synthetic scene name like 'test-000042.png'")
    return make_scene(match["split"], int(match["index"]))


def load_image(name: str) -> Image.Image:
    """Render the scene ``name`` (64x64 RGB)."""
    return scene_of(name).image


def save_images(names: Iterable[str], folder: str | Path) -> Path:
    """Write the scenes ``names`` as PNG files into ``folder`` (created); returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(names):
        load_image(name).save(folder / name)
    return folder


@lru_cache(maxsize=4)
def _scenes(split: str, pool: int) -> tuple[Scene, ...]:
    """The first ``pool`` scenes of ``split`` (unrendered: objects only)."""
    return tuple(make_scene(split, i) for i in range(pool))


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """A generator for one ``purpose`` (e.g. ``"mme/count"``), independent of the others."""
    return np.random.default_rng([seed, *purpose.encode()])


def _check_size(n_images: int, pool: int) -> None:
    if not isinstance(n_images, int) or not 1 <= n_images <= pool:
        raise ValueError(f"n_images must be an int in [1, pool={pool}], got {n_images!r}")


def _sampled_scenes(split: str, pool: int, rng: np.random.Generator) -> Iterable[Scene]:
    """The ``pool`` scenes in a seeded random order."""
    scenes = _scenes(split, pool)
    return (scenes[i] for i in rng.permutation(pool))


# --------------------------------------------------------------------------- POPE


def pope_questions(
    strategy: str = "random",
    *,
    n_images: int = 500,
    seed: int = 0,
    split: str = SCENE_SPLIT,
    pool: int = POOL,
) -> list[PopeQuestion]:
    """POPE questions (``n_images`` x 6) with ``strategy`` negatives; see the module docstring.

    The same ``seed`` gives the same scenes and positive questions for every strategy.
    """
    objects = {image_name(split, s.index): s.categories for s in _scenes(split, pool)}
    return build_pope(objects, strategy, n_images=n_images, seed=seed)


# --------------------------------------------------------------------------- MME


Pair = tuple[str, str]  # (question whose answer is yes, question whose answer is no)


def _existence_pair(scene: Scene, rng: np.random.Generator) -> Pair:
    yes = Q.existence(scene, rng, positive=True)["question"]
    return yes, Q.existence(scene, rng, positive=False)["question"]


def count_question(n: int) -> str:
    """ "Are there two objects in the image?" ("Is there one object ..." for 1)."""
    if n == 1:
        return "Is there one object in the image?"
    return f"Are there {Q.NUMBER_WORDS[n]} objects in the image?"


def _count_pair(scene: Scene, rng: np.random.Generator) -> Pair:
    n = len(scene.objects)
    wrong = [k for k in (1, 2, 3) if k != n]
    return count_question(n), count_question(int(rng.choice(wrong)))


def _position_pair(scene: Scene, rng: np.random.Generator) -> Pair | None:
    yes = Q.position_question(scene, rng, positive=True)
    no = Q.position_question(scene, rng, positive=False)
    return None if yes is None else (yes["question"], no["question"])


def _colour_pair(scene: Scene, rng: np.random.Generator) -> Pair | None:
    """ "Is the circle red?" for a shape that is unique in the scene, with its true and a wrong colour."""
    shapes = [o.shape for o in scene.objects]
    unique = [o for o in scene.objects if shapes.count(o.shape) == 1]
    if not unique:
        return None
    obj = unique[rng.integers(len(unique))]
    wrong = rng.choice([c for c in COLOURS if c != obj.colour])
    return f"Is the {obj.shape} {obj.colour}?", f"Is the {obj.shape} {wrong}?"


MME_PAIRS: dict[str, Callable[[Scene, np.random.Generator], Pair | None]] = {
    "existence": _existence_pair,
    "count": _count_pair,
    "position": _position_pair,
    "color": _colour_pair,
}  # the keys are MME's hallucination subtasks, in order


def mme_sheets(
    *, n_images: int = 100, seed: int = 0, split: str = SCENE_SPLIT, pool: int = POOL
) -> dict[str, list[MMEItem]]:
    """MME hallucination-subset questions (``pred=None``): ``n_images`` scenes per subtask, 2 questions each.

    Each subtask draws its own scenes in a seeded order, skipping scenes its question cannot be
    asked about (position needs two objects apart, color a shape that occurs once).
    """
    _check_size(n_images, pool)
    sheets = {}
    for subtask, make_pair in MME_PAIRS.items():
        rng = _rng(seed, f"mme/{subtask}")
        items: list[MMEItem] = []
        for scene in _sampled_scenes(split, pool, rng):
            if len(items) == 2 * n_images:
                break
            pair = make_pair(scene, rng)
            if pair is not None:
                name = image_name(split, scene.index)
                where = f"synthetic MME {subtask} {name}"
                items += [MMEItem(name, pair[0], YES, where=where), MMEItem(name, pair[1], NO, where=where)]
        if len(items) < 2 * n_images:
            found = len(items) // 2
            raise ValueError(f"only {found} of {pool} scenes suit MME {subtask}; asked for {n_images}")
        sheets[subtask] = items
    return sheets


# --------------------------------------------------------------------------- AMBER


class WorldNouns:
    """AMBER noun backend for the synthetic world: the "colour shape" phrases of a text.

    The world's 12 categories are two-word phrases, so a caption's candidate "nouns" are its
    phrases like "red circle" or "blue squares" (plural folded); similar = identical.
    """

    name = "world"
    _PHRASE = re.compile(rf"\b({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})s?\b", re.IGNORECASE)

    def nouns(self, text: str) -> list[str]:
        return [f"{colour.lower()} {shape.lower()}" for colour, shape in self._PHRASE.findall(text)]

    def similar(self, a: str, b: str) -> bool:
        return a == b


def world_vocabulary() -> Vocabulary:
    """The closed vocabulary: the 12 categories, no association words, no safe words."""
    return Vocabulary({category: [] for category in CATEGORIES}, frozenset())


def hallu_objects(scene: Scene) -> list[str]:
    """Absent categories likely to be hallucinated: co-occurring ones first, then frequent ones."""
    return Q.negative_candidates(scene, "adversarial")[:HALLU_PER_IMAGE]


@dataclass
class AmberSet:
    """AMBER-style records: annotations (``id`` = position + 1), queries and the vocabulary."""

    annotations: list[dict]
    queries: list[AmberQuery]
    vocabulary: Vocabulary


def _discriminative(scene: Scene, rng: np.random.Generator) -> dict[str, list[tuple[str, str, str]]]:
    """A scene's (annotation type, truth, question) triples, by AMBER section."""
    sections: dict[str, list[tuple[str, str, str]]] = {"attribute": [], "existence": [], "relation": []}
    attributes = {
        "discriminative-attribute-state": _colour_pair,  # colour
        "discriminative-attribute-number": _count_pair,
    }
    for kind, make_pair in attributes.items():
        pair = make_pair(scene, rng)
        if pair is not None:
            sections["attribute"] += [(kind, YES, pair[0]), (kind, NO, pair[1])]
    for obj in hallu_objects(scene):
        sections["existence"].append(("discriminative-hallucination", NO, Q.existence_question(obj)))
    position = _position_pair(scene, rng)
    if position is not None:
        sections["relation"] = [("discriminative-relation", YES, position[0]), ("relation", NO, position[1])]
    return sections


def amber_set(*, n_images: int = 200, seed: int = 0, split: str = SCENE_SPLIT, pool: int = POOL) -> AmberSet:
    """AMBER-style benchmark over ``n_images`` seeded scenes, laid out as AMBER's ``query_all.json``.

    Ids run: one caption per scene, then attribute questions (state = colour and number =
    count, a yes and a no each), then existence (each ``hallu`` object, all no), then relation
    (a true and a false spatial relation, types ``discriminative-relation`` / ``relation``).
    AMBER's "action" attribute has no counterpart in the world.
    """
    _check_size(n_images, pool)
    rng = _rng(seed, "amber")
    scenes = list(_sampled_scenes(split, pool, rng))[:n_images]
    records: list[tuple[dict, AmberQuery]] = []

    def add(annotation: dict, scene: Scene, query: str) -> None:
        identifier = len(records) + 1
        query_record = AmberQuery(identifier, image_name(split, scene.index), query)
        records.append(({"id": identifier, **annotation}, query_record))

    for scene in scenes:
        annotation = {"type": GENERATIVE, "truth": scene.categories, "hallu": hallu_objects(scene)}
        add(annotation, scene, CAPTION_QUERY)
    sections = [(scene, _discriminative(scene, rng)) for scene in scenes]
    for section in ("attribute", "existence", "relation"):
        for scene, questions in sections:
            for kind, truth, text in questions[section]:
                add({"type": kind, "truth": truth}, scene, text)
    annotations, queries = (list(x) for x in zip(*records))
    return AmberSet(annotations, queries, world_vocabulary())
