"""Question families over synthetic scenes: existence, colour, shape, count, position, caption.

Every question is a plain dict ``{"family", "question", "answer", ...}`` with extra keys that
say how it was built (the queried category, the kind of negative), so evaluations can be
stratified. Questions are natural English ("Is there a red circle in the image?"), the same
text a real LVLM would get.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .scenes import CATEGORIES, COLOURS, FLAT, SHAPES, Scene, WorldConfig, category_weights, make_scene

NUMBER_WORDS = ("zero", "one", "two", "three", "four")
RELATIONS = {  # relation -> (axis, sign): "A left of B" means A.cx < B.cx
    "to the left of": ("cx", -1),
    "to the right of": ("cx", 1),
    "above": ("cy", -1),
    "below": ("cy", 1),
}
MIN_OFFSET = 8  # pixels; closer pairs are ambiguous and never asked about
FAMILIES = ("existence", "colour", "shape", "count", "position", "caption")
NEGATIVE_KINDS = ("random", "popular", "adversarial")


def existence_question(category: str) -> str:
    return f"Is there a {category} in the image?"


def caption(scene: Scene) -> str:
    """The reference caption: objects listed left to right."""
    names = [f"a {o.category}" for o in sorted(scene.objects, key=lambda o: o.cx)]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return listed + "."


def cooccurring(category: str) -> list[str]:
    """Categories of the same colour theme as ``category`` (they co-occur in themed scenes)."""
    colour = category.split()[0]
    return [c for c in CATEGORIES if c.startswith(colour + " ") and c != category]


def negative_candidates(scene: Scene, kind: str) -> list[str]:
    """Absent categories ordered as POPE would pick negatives of this ``kind``.

    random: any absent category (unordered); popular: by prior frequency, most frequent first;
    adversarial: absent categories co-occurring with a present one first, then by frequency.
    """
    if kind not in NEGATIVE_KINDS:
        raise ValueError(f"unknown negative kind {kind!r}; expected one of {NEGATIVE_KINDS}")
    present = set(scene.categories)
    absent = [c for c in CATEGORIES if c not in present]
    freq = dict(zip(CATEGORIES, category_weights()))
    if kind == "random":
        return absent
    by_freq = sorted(absent, key=lambda c: -freq[c])
    if kind == "popular":
        return by_freq
    partners = {c for p in present for c in cooccurring(p)}
    return sorted(by_freq, key=lambda c: c not in partners)


def existence(scene: Scene, rng: np.random.Generator, positive: bool, kind: str = "random") -> dict:
    """One yes/no existence question; negatives of ``kind`` (sampled uniformly when random)."""
    if positive:
        category = scene.categories[rng.integers(len(scene.objects))]
    else:
        pool = negative_candidates(scene, kind)
        category = pool[rng.integers(len(pool))] if kind == "random" else pool[0]
    return {
        "family": "existence",
        "question": existence_question(category),
        "answer": "yes" if positive else "no",
        "category": category,
        "negative": None if positive else kind,
    }


def _attribute_question(scene: Scene, rng: np.random.Generator, given: str, asked: str, template: str):
    """Ask for attribute ``asked`` of an object named by attribute ``given``, unique in the scene."""
    values = [getattr(o, given) for o in scene.objects]
    unique = [o for o in scene.objects if values.count(getattr(o, given)) == 1]
    if not unique:
        return None
    obj = unique[rng.integers(len(unique))]
    return {"family": asked, "question": template.format(getattr(obj, given)), "answer": getattr(obj, asked)}


def colour_question(scene: Scene, rng: np.random.Generator) -> dict | None:
    """'What colour is the circle?' for a shape that is unique in the scene."""
    return _attribute_question(scene, rng, "shape", "colour", "What colour is the {}?")


def shape_question(scene: Scene, rng: np.random.Generator) -> dict | None:
    """'What shape is the red object?' for a colour that is unique in the scene."""
    return _attribute_question(scene, rng, "colour", "shape", "What shape is the {} object?")


def count_question(scene: Scene, rng: np.random.Generator) -> dict:
    return {
        "family": "count",
        "question": "How many objects are there in the image?",
        "answer": NUMBER_WORDS[len(scene.objects)],
    }


def position_question(scene: Scene, rng: np.random.Generator, positive: bool) -> dict | None:
    """'Is the red circle to the left of the blue square?' about an unambiguous pair."""
    pairs = []
    for a in scene.objects:
        for b in scene.objects:
            for rel, (axis, sign) in RELATIONS.items():
                offset = sign * (getattr(a, axis) - getattr(b, axis))
                if a is not b and abs(offset) >= MIN_OFFSET and (offset > 0) == positive:
                    pairs.append((a, rel, b))
    if not pairs:
        return None
    a, rel, b = pairs[rng.integers(len(pairs))]
    return {
        "family": "position",
        "question": f"Is the {a.category} {rel} the {b.category}?",
        "answer": "yes" if positive else "no",
    }


def caption_question(scene: Scene, rng: np.random.Generator) -> dict:
    prompt = ("Describe the image.", "Describe this image.")[rng.integers(2)]
    return {"family": "caption", "question": prompt, "answer": caption(scene)}


def sample_question(scene: Scene, family: str, rng: np.random.Generator) -> dict | None:
    """A random question of ``family`` (yes/no families balanced); None if not askable."""
    if family == "existence":
        return existence(scene, rng, positive=bool(rng.integers(2)))
    if family == "position":
        return position_question(scene, rng, positive=bool(rng.integers(2)))
    makers = {"colour": colour_question, "shape": shape_question, "count": count_question, "caption": caption_question}
    if family not in makers:
        raise ValueError(f"unknown question family {family!r}; expected one of {FAMILIES}")
    return makers[family](scene, rng)


def vocabulary() -> list[str]:
    """Every word the question families and answers can use (lower case, sorted)."""
    words = {"is", "there", "a", "an", "in", "the", "image", "what", "colour", "shape", "object", "how", "many"}
    words |= {"objects", "are", "describe", "this", "and", "yes", "no"} | set(NUMBER_WORDS) | set(COLOURS) | set(SHAPES)
    words |= {w for rel in RELATIONS for w in rel.split()}
    return sorted(words)


def existence_set(
    split: str,
    n_scenes: int,
    start: int = 0,
    *,
    kinds: Sequence[str] = NEGATIVE_KINDS,
    seed: int = 7,
    world: WorldConfig = FLAT,
) -> list[tuple[Scene, dict]]:
    """Existence questions with the world's negatives: ``2 * n_scenes`` (scene, question) pairs.

    Scene ``i`` (``start <= i < start + n_scenes`` of ``split``) gets a yes question about one of
    its objects, then a no question whose negative kind is ``kinds[i % len(kinds)]``, both drawn
    with ``np.random.default_rng([seed, i])``. The defaults cycle the three kinds (the set notebooks
    01-03 study); one kind and ``seed=11`` give the model card's POPE-style splits.

    Negatives follow :func:`negative_candidates`, the world's prior: popular and adversarial take
    the first candidate, e.g. an absent same-colour partner of any present object. The synthetic
    POPE of :mod:`avisc_lib.benchmarks.synthetic` instead applies POPE's own rule (statistics of
    the sampled scenes, 3 pairs per 3-object scene), whose adversarial questions the embedded model finds easier.
    ``world`` renders the scenes (e.g. a textured background); their objects and questions do not depend on it.
    """
    if not kinds or any(kind not in NEGATIVE_KINDS for kind in kinds):
        raise ValueError(f"kinds must be a non-empty sequence of {NEGATIVE_KINDS}, got {kinds!r}")
    items = []
    for i in range(start, start + n_scenes):
        scene = make_scene(split, i, world)
        rng = np.random.default_rng([seed, i])
        items.append((scene, existence(scene, rng, positive=True)))
        items.append((scene, existence(scene, rng, positive=False, kind=kinds[i % len(kinds)])))
    return items
