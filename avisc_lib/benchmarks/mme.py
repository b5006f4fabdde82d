"""MME: answer sheets, the release folder layouts, and the official ``calculation.py`` scores.

An answer sheet is one ``<subtask>.txt`` per subtask, a line per question:
``image<TAB>question<TAB>ground truth[<TAB>response]`` (MME's ``Your_Results`` templates have
3 fields, filled-in sheets 4), the two questions of an image on consecutive lines.

Scores follow ``calculation.py``: answers are parsed with the official parser ("other" is
wrong), ``acc`` is over questions, ``acc_plus`` over images (both questions right),
``score = 100·acc + 100·acc_plus`` (max 200, unrounded); perception sums the 10 perception
subtasks, cognition the 4 cognition subtasks and hallucination existence + count + position +
color (VCD/AvisC's "MME-Hallucination", max 800). A total is ``None`` unless every one of
its subtasks was scored, so a partial run never looks like a full one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .parsers import NO, YES, get_parser
from .io import FormatError

PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
HALLUCINATION = ("existence", "count", "position", "color")
SUBTASKS = PERCEPTION + COGNITION
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class MMEItem:
    image: str
    question: str
    gt: str  # "yes" or "no"
    pred: str | None = None  # the model's response; None in an unfilled template
    where: str = field(default="", compare=False)  # file:line, for error messages


def _item(line: str, where: str) -> MMEItem:
    fields = line.split("\t")
    if len(fields) not in (3, 4):
        raise FormatError(
            f"{where}: expected 3 or 4 TAB-separated fields (image, question, ground truth[, "
            f"response]), found {len(fields)}; a response must be one line without TABs"
        )
    gt = fields[2].strip().lower()
    if gt not in (YES, NO):
        raise FormatError(f"{where}: ground truth must be Yes or No, got {fields[2]!r}")
    return MMEItem(fields[0], fields[1], gt, fields[3] if len(fields) == 4 else None, where)


def load_sheet(path: str | Path) -> list[MMEItem]:
    """One subtask's answer sheet (blank lines skipped); pairs are checked by :func:`image_pairs`."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    items = [_item(line, f"{path}:{n}") for n, line in enumerate(lines, start=1) if line.strip()]
    image_pairs(items)
    return items


def load_results_dir(directory: str | Path) -> dict[str, list[MMEItem]]:
    """The ``<subtask>.txt`` sheets present in ``directory`` (other files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MME results folder {directory} does not exist")
    sheets = {t: load_sheet(directory / f"{t}.txt") for t in SUBTASKS if (directory / f"{t}.txt").is_file()}
    if not sheets:
        raise FileNotFoundError(f"no MME answer sheets (<subtask>.txt, e.g. existence.txt) in {directory}")
    return sheets


def _release_folders(root: Path, subtask: str) -> tuple[Path, Path]:
    """(question folder, image folder) of a subtask in either release layout."""
    folder = root / subtask
    if (folder / "questions_answers_YN").is_dir():
        return folder / "questions_answers_YN", folder / "images"
    if folder.is_dir():
        return folder, folder
    raise FileNotFoundError(f"MME subtask folder {folder} does not exist")


def release_image_path(root: str | Path, subtask: str, image: str) -> Path:
    """Where ``image`` of ``subtask`` lies in an extracted ``MME_Benchmark_release_version``."""
    path = _release_folders(Path(root), subtask)[1] / image
    if not path.is_file():
        raise FileNotFoundError(f"MME image {path} does not exist")
    return path


def _image_for(question_file: Path, image_dir: Path) -> str:
    for suffix in IMAGE_SUFFIXES:
        if (image_dir / (question_file.stem + suffix)).is_file():
            return question_file.stem + suffix
    raise FileNotFoundError(f"no image for {question_file} in {image_dir}")


def load_release(root: str | Path, subtasks: Sequence[str] = SUBTASKS) -> dict[str, list[MMEItem]]:
    """Questions (``pred=None``) of an extracted release: per image a ``.txt`` of
    ``question<TAB>answer`` lines, beside the image or under ``questions_answers_YN/``."""
    root = Path(root)
    result = {}
    for subtask in subtasks:
        question_dir, image_dir = _release_folders(root, subtask)
        items = []
        for txt in sorted(question_dir.glob("*.txt")):
            image = _image_for(txt, image_dir)
            lines = txt.read_text(encoding="utf-8").splitlines()
            items += [
                _item(f"{image}\t{line}", f"{txt}:{n}") for n, line in enumerate(lines, 1) if line.strip()
            ]
        result[subtask] = items
    return result


def image_pairs(items: Sequence[MMEItem]) -> list[tuple[MMEItem, MMEItem]]:
    """Consecutive pairs of questions, one image each (as ``calculation.py`` chunks lines)."""
    if len(items) % 2:
        raise FormatError(f"{items[-1].where}: odd number of questions; MME asks 2 per image")
    pairs = list(zip(items[::2], items[1::2]))
    for a, b in pairs:
        if a.image != b.image:
            raise FormatError(
                f"{b.where}: image {b.image!r} follows {a.image!r}; an image's 2 questions must be adjacent"
            )
    return pairs


def subtask_scores(items: Sequence[MMEItem], parser: str = "official") -> dict:
    """``acc``, ``acc_plus`` (fractions) and ``score`` (points) of one subtask."""
    parse = get_parser("mme", parser)
    for item in items:
        if item.pred is None:
            raise FormatError(f"{item.where}: no model response (expected a 4th TAB-separated field)")
    pairs = image_pairs(items)
    right = [[parse(item.pred) == item.gt for item in pair] for pair in pairs]
    acc = sum(map(sum, right)) / len(items)
    acc_plus = sum(all(r) for r in right) / len(pairs)
    return {"acc": acc, "acc_plus": acc_plus, "score": acc * 100 + acc_plus * 100}


def _total(scores: Mapping[str, dict], group: Sequence[str]) -> float | None:
    return sum(scores[t]["score"] for t in group) if all(t in scores for t in group) else None


def score_mme(sheets: Mapping[str, Sequence[MMEItem]], parser: str = "official") -> dict:
    """Per-subtask scores plus perception, cognition and hallucination totals."""
    unknown = sorted(set(sheets) - set(SUBTASKS))
    if unknown:
        raise ValueError(f"unknown MME subtask(s) {unknown}; expected names from {SUBTASKS}")
    scores = {t: subtask_scores(sheets[t], parser) for t in SUBTASKS if t in sheets}
    return {
        "subtasks": scores,
        "perception": _total(scores, PERCEPTION),
        "cognition": _total(scores, COGNITION),
        "hallucination": _total(scores, HALLUCINATION),
    }
