"""POPE: question files, answer alignment, the official metrics, and a POPE builder.

Question files come in two official shapes, both read by :func:`load_questions`: JSON Lines
(the COCO files; CRLF or LF) and pretty-printed JSON arrays (the SEEM A-OKVQA/GQA files).
Each record is ``{"question_id", "image", "text", "label"}``.

Answers are JSON Lines (or an array) of records with an ``answer`` field, either all in
question order (the official scorer's format) or all carrying ``question_id``.
:func:`score_pope` parses them with a named parser (see :mod:`.parsers`) and returns the
official metrics: yes is the positive class, ``yes_ratio`` comes from the predictions, and
every ratio is a fraction. Unlike the official scorer, a zero denominator gives 0.0.

:func:`build_pope` reproduces POPE's construction for any ``image → objects`` mapping, e.g.
:func:`coco_image_objects` (pycocotools) or a synthetic world.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .io import FormatError, check_images, read_records, require
from .parsers import NO, YES, UnparseableAnswer, get_parser
from .statistics import Columns, Measure, Units, ratio

STRATEGIES = ("random", "popular", "adversarial")
TEMPLATE = "Is there {object} in the image?"


@dataclass(frozen=True)
class PopeQuestion:
    question_id: int
    image: str
    text: str
    label: str  # "yes" or "no"


@dataclass(frozen=True)
class PopeAnswer:
    answer: str
    question_id: int | None = None
    where: str = "answer"  # file:line or similar, for error messages


# --------------------------------------------------------------------------- reading files


def _question(where: str, record: dict) -> PopeQuestion:
    require(record, where, ("question_id", "image", "text", "label"))
    qid, label = record["question_id"], str(record["label"]).strip().lower()
    if not isinstance(qid, int) or isinstance(qid, bool):
        raise FormatError(f"{where}: question_id must be an integer, got {qid!r}")
    if label not in (YES, NO):
        raise FormatError(f"{where}: label must be 'yes' or 'no', got {record['label']!r}")
    return PopeQuestion(qid, str(record["image"]), str(record["text"]), label)


def load_questions(path: str | Path, image_dir: str | Path | None = None) -> list[PopeQuestion]:
    """POPE questions from ``path``; with ``image_dir``, also check that every image exists."""
    questions = [_question(where, r) for where, r in read_records(path)]
    duplicates = [q for q, n in Counter(q.question_id for q in questions).items() if n > 1]
    if duplicates:
        raise FormatError(f"{path}: duplicate question_id(s) {duplicates[:5]}")
    if image_dir is not None:
        check_images(questions, image_dir)
    return questions


def save_questions(questions: Iterable[PopeQuestion], path: str | Path) -> None:
    """Write questions as POPE JSON Lines."""
    lines = (json.dumps(asdict(q)) + "\n" for q in questions)
    Path(path).write_text("".join(lines), encoding="utf-8")


def load_answers(path: str | Path) -> list[PopeAnswer]:
    """Answer records (``answer`` and optional ``question_id``) in file order."""
    answers = []
    for where, record in read_records(path):
        require(record, where, ("answer",))
        if not isinstance(record["answer"], str):
            raise FormatError(f"{where}: answer must be a string, got {record['answer']!r}")
        answers.append(PopeAnswer(record["answer"], record.get("question_id"), where))
    return answers


Answers = Sequence[PopeAnswer] | Sequence[str] | Mapping[int, str]


def _as_records(answers: Answers) -> list[PopeAnswer]:
    if isinstance(answers, Mapping):
        return [PopeAnswer(text, qid, f"question_id {qid}") for qid, text in answers.items()]
    return [a if isinstance(a, PopeAnswer) else PopeAnswer(a, None, f"answer {i + 1}") for i, a in enumerate(answers)]


def align_answers(questions: Sequence[PopeQuestion], answers: Answers) -> list[str]:
    """Answer texts in question order.

    ``answers`` are matched by ``question_id`` when every one has it (a mapping id → text, or
    records), or taken in order when none has it (plain strings, or the official format).
    Missing, unknown, duplicate or mixed ids and count mismatches raise :class:`FormatError`.
    """
    records = _as_records(answers)
    keyed = [a.question_id is not None for a in records]
    if not any(keyed):
        if len(records) != len(questions):
            raise FormatError(
                f"{len(records)} answers for {len(questions)} questions; answers without "
                "question_id must follow the question file line by line (is one of them the "
                "old 2910-question COCO random file?)"
            )
        return [a.answer for a in records]
    if not all(keyed):
        raise FormatError(f"{records[keyed.index(False)].where}: no question_id while other answers have one")
    by_id: dict[int, str] = {}
    for a in records:
        if a.question_id in by_id:
            raise FormatError(f"{a.where}: duplicate question_id {a.question_id}")
        by_id[a.question_id] = a.answer
    expected = {q.question_id for q in questions}
    unknown, missing = sorted(set(by_id) - expected), sorted(expected - set(by_id))
    if unknown or missing:
        raise FormatError(f"answers do not match the questions: missing ids {missing[:5]}, unknown ids {unknown[:5]}")
    return [by_id[q.question_id] for q in questions]


# --------------------------------------------------------------------------- metrics


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def pope_metrics(labels: Sequence[str], preds: Sequence[str]) -> dict:
    """TP, FP, TN, FN, accuracy, precision, recall, f1, yes_ratio (yes = positive class)."""
    if len(labels) != len(preds):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    bad = sorted({p for p in preds if p not in (YES, NO)})
    if bad:
        raise ValueError(f"predictions must be 'yes' or 'no', got {bad[:3]}")
    pairs = Counter(zip(labels, preds))
    tp, fp = pairs[YES, YES], pairs[NO, YES]
    tn, fn = pairs[NO, NO], pairs[YES, NO]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
        "accuracy": _ratio(tp + tn, len(labels)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(tp + fp, len(labels)),
    }


def parse_answers(questions: Sequence[PopeQuestion], texts: Sequence[str], parser: str) -> list[str]:
    """Parse every answer; a strict parser's failures are collected into one error."""
    parse = get_parser("pope", parser)
    preds, failures = [], []
    for q, text in zip(questions, texts):
        try:
            preds.append(parse(text))
        except UnparseableAnswer:
            failures.append(f"question_id {q.question_id}: {text!r}")
    if failures:
        raise UnparseableAnswer(
            f"{len(failures)} of {len(texts)} answers are not a clear yes/no for parser "
            f"{parser!r} ({'; '.join(failures[:3])})"
        )
    return preds


def score_pope(questions: Sequence[PopeQuestion], answers: Answers, parser: str = "official") -> dict:
    """Official POPE metrics of ``answers`` (see :func:`align_answers`) under ``parser``."""
    texts = align_answers(questions, answers)
    preds = parse_answers(questions, texts, parser)
    return pope_metrics([q.label for q in questions], preds)


# --------------------------------------------------------------------------- uncertainty

UNIT_COLUMNS = ("right", "said_yes", "is_yes", "asked")


def score_units(questions: Sequence[PopeQuestion], answers: Answers, parser: str = "official") -> Units:
    """One row per question (``right``, ``said_yes``, ``is_yes``, ``asked``), for :data:`MEASURES`."""
    preds = parse_answers(questions, align_answers(questions, answers), parser)
    rows = [(p == q.label, p == YES, q.label == YES, 1) for q, p in zip(questions, preds)]
    return Units(np.array(rows, dtype=float).reshape(-1, len(UNIT_COLUMNS)), UNIT_COLUMNS)


def _true_positives(c: Columns) -> np.ndarray:
    return (c["said_yes"] * c["is_yes"]).sum(-1)


def _f1(c: Columns) -> np.ndarray:
    tp = _true_positives(c)
    return ratio(2 * tp, c.total("said_yes") + c.total("is_yes"))  # 2TP / (2TP + FP + FN)


MEASURES = {  # metrics of :func:`pope_metrics`, as fractions
    "accuracy": Measure(lambda c: c["right"].mean(-1), proportion=("right", "asked"), right="right"),
    "precision": Measure(lambda c: ratio(_true_positives(c), c.total("said_yes"))),
    "recall": Measure(lambda c: ratio(_true_positives(c), c.total("is_yes"))),
    "f1": Measure(_f1),
    "yes_ratio": Measure(lambda c: c["said_yes"].mean(-1), proportion=("said_yes", "asked")),
}


# --------------------------------------------------------------------------- building POPE


@dataclass
class ObjectStats:
    """Object frequencies and co-occurrence counts, the statistics POPE's negatives use.

    ``frequency`` also fixes the vocabulary random negatives are drawn from. Build it from the
    sampled images (:meth:`from_images`, POPE's way) or pass a world's own prior.
    """

    frequency: dict[str, float]
    cooccurrence: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_images(cls, image_objects: Mapping[str, Sequence[str]]) -> ObjectStats:
        frequency: Counter = Counter()
        cooccurrence: defaultdict = defaultdict(Counter)
        for objects in image_objects.values():
            frequency.update(objects)
            for a in objects:
                cooccurrence[a].update(b for b in objects if b != a)
        return cls(dict(frequency), {a: dict(c) for a, c in cooccurrence.items()})

    def popular(self) -> list[str]:
        """All objects, most frequent first (ties keep insertion order)."""
        return sorted(self.frequency, key=lambda o: -self.frequency[o])

    def partners(self, obj: str) -> list[str]:
        """Objects seen with ``obj``, most often first."""
        counts = self.cooccurrence.get(obj, {})
        return sorted(counts, key=lambda o: -counts[o])


def _ordered(objects: Iterable[str]) -> list[str]:
    """Distinct objects: a set is sorted, a sequence keeps its order (POPE asks the i-th)."""
    if isinstance(objects, (set, frozenset)):
        return sorted(objects)
    return list(dict.fromkeys(objects))


def _negative(strategy: str, positive: str, stats: ObjectStats, forbidden: set[str], rng: random.Random) -> str:
    """One negative object as POPE picks it; popular/adversarial fall back to random."""
    if strategy != "random":
        ranked = stats.popular() if strategy == "popular" else stats.partners(positive)
        chosen = next((obj for obj in ranked if obj not in forbidden), None)
        if chosen is not None:
            return chosen
    allowed = [o for o in stats.frequency if o not in forbidden]
    if not allowed:
        raise ValueError(f"no negative object left for an image with {sorted(forbidden)}")
    return rng.choice(allowed)


def existence_text(obj: str, template: str = TEMPLATE) -> str:
    """``template`` with "a"/"an" + ``obj`` (POPE's article rule, without its "imange" typo)."""
    article = "an" if obj[:1].lower() in "aeiou" else "a"
    return template.format(object=f"{article} {obj}")


def build_pope(
    image_objects: Mapping[str, Iterable[str]],
    strategy: str = "random",
    *,
    n_images: int | None = 500,
    per_image: int = 3,
    seed: int = 0,
    stats: ObjectStats | None = None,
    template: str = TEMPLATE,
) -> list[PopeQuestion]:
    """POPE questions for ``image_objects`` (image name → objects present).

    As POPE's ``main.py``: keep images with at least ``per_image`` objects, sample
    ``n_images`` of them (``None``: all) with ``seed``; for each image ask about its first
    ``per_image`` objects (label yes), each followed by one absent object not yet asked about
    (label no) chosen by ``strategy``: ``random`` (uniform over the vocabulary), ``popular``
    (most frequent) or ``adversarial`` (most co-occurring with that positive). ``stats``
    defaults to :meth:`ObjectStats.from_images` over the sampled images. The same seed gives
    the same images and positives for every strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    objects = {image: _ordered(objs) for image, objs in image_objects.items()}
    eligible = sorted(image for image, objs in objects.items() if len(objs) >= per_image)
    count = len(eligible) if n_images is None else n_images
    if count > len(eligible):
        raise ValueError(f"only {len(eligible)} images have at least {per_image} objects; asked for {count}")
    rng = random.Random(seed)
    chosen = rng.sample(eligible, count)
    if stats is None:
        stats = ObjectStats.from_images({image: objects[image] for image in chosen})
    questions: list[PopeQuestion] = []
    for image in chosen:
        asked = set(objects[image])
        for positive in objects[image][:per_image]:
            negative = _negative(strategy, positive, stats, asked, rng)
            asked.add(negative)
            for obj, label in ((positive, YES), (negative, NO)):
                questions.append(PopeQuestion(len(questions) + 1, image, existence_text(obj, template), label))
    return questions


def coco_image_objects(annotations: str | Path) -> dict[str, list[str]]:
    """``file_name → category names`` (annotation order, distinct) from a COCO instances file."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO(str(annotations))
    result = {}
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        names = [coco.cats[a["category_id"]]["name"] for a in anns]
        result[coco.imgs[image_id]["file_name"]] = list(dict.fromkeys(names))
    return result
