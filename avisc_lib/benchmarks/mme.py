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

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .io import FormatError
from .parsers import NO, YES, get_parser
from .statistics import Measure, Units

if TYPE_CHECKING:
    import datasets

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
# The release as a Hugging Face dataset (lmms-eval's source): one "test" split of parquet files with
# columns question_id ("<subtask>/<image file>"), image (embedded), question, answer ("Yes"/"No"),
# category (the subtask). Pinned to the commit whose data/ holds the four test files (2374 rows).
HUB_DATASET = "lmms-lab/MME"
HUB_REVISION = "d6c9023f017b564f7b3ccccf5348166bce8fdbcd"
HUB_COLUMNS = ("question_id", "question", "answer", "category")


@dataclass(frozen=True)
class MMEItem:
    image: str
    question: str
    gt: str  # "yes" or "no"
    pred: str | None = None  # the model's response; None in an unfilled template
    where: str = field(default="", compare=False)  # file:line, for error messages


def _truth(raw: str, where: str) -> str:
    gt = raw.strip().lower()
    if gt not in (YES, NO):
        raise FormatError(f"{where}: ground truth must be Yes or No, got {raw!r}")
    return gt


def _item(line: str, where: str) -> MMEItem:
    fields = line.split("\t")
    if len(fields) not in (3, 4):
        raise FormatError(
            f"{where}: expected 3 or 4 TAB-separated fields (image, question, ground truth[, "
            f"response]), found {len(fields)}; a response must be one line without TABs"
        )
    return MMEItem(fields[0], fields[1], _truth(fields[2], where), fields[3] if len(fields) == 4 else None, where)


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
            items += [_item(f"{image}\t{line}", f"{txt}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
        result[subtask] = items
    return result


@dataclass
class HubRelease:
    """MME read from its parquet dataset: the questions as :func:`load_release` gives them, and the images."""

    sheets: dict[str, list[MMEItem]]
    dataset: datasets.Dataset
    rows: dict[str, int]  # "<subtask>/<image>" -> a row holding that image
    source: dict[str, str]  # what a run records: the hub dataset and its revision ({} for a local folder)

    def image(self, name: str) -> Image.Image:
        """The image ``"<subtask>/<image>"`` as RGB."""
        if name not in self.rows:
            raise KeyError(f"no MME image {name!r} in {self.source or 'the dataset'}")
        return self.dataset[self.rows[name]]["image"].convert("RGB")


def is_parquet_folder(root: str | Path) -> bool:
    """Whether ``root`` is a local copy of the dataset (``data/test-*.parquet``), not the release folder."""
    return any((Path(root) / "data").glob("test-*.parquet"))


def load_hub(subtasks: Sequence[str] = SUBTASKS, folder: str | Path | None = None) -> HubRelease:
    """MME from :data:`HUB_DATASET` at :data:`HUB_REVISION` through ``datasets`` (downloaded once into
    the Hugging Face cache, ~0.9 GB; offline it loads from there), or from a local ``folder`` in the
    same layout. Items come in :func:`load_release`'s order: per subtask, images sorted by their
    question file's name, an image's questions in the dataset's order."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    unknown = sorted(set(subtasks) - set(SUBTASKS))
    if unknown:
        raise ValueError(f"unknown MME subtask(s) {unknown}; expected names from {SUBTASKS}")
    if folder is None:
        dataset = load_dataset(HUB_DATASET, revision=HUB_REVISION, split="test")
        source = {"dataset": HUB_DATASET, "revision": HUB_REVISION}
    else:
        dataset, source = load_dataset(str(folder), split="test"), {}
    missing = [c for c in (*HUB_COLUMNS, "image") if c not in dataset.column_names]
    if missing:
        raise FormatError(f"MME dataset {folder or HUB_DATASET}: missing column(s) {missing}")
    if not isinstance(dataset.features["image"], ImageFeature):
        dataset = dataset.cast_column("image", ImageFeature())
    sheets, rows = _hub_items(dataset.select_columns(list(HUB_COLUMNS)), subtasks, str(folder or HUB_DATASET))
    return HubRelease(sheets, dataset, rows, source)


def _hub_items(table: datasets.Dataset, subtasks: Sequence[str], name: str):
    """``(sheets, rows)`` of :class:`HubRelease` from the text columns."""
    by_image: dict[str, dict[str, list[MMEItem]]] = {t: {} for t in subtasks}
    rows: dict[str, int] = {}
    for n, record in enumerate(table):
        subtask = record["category"]
        if subtask not in by_image:
            continue
        image = PurePosixPath(record["question_id"]).name
        where = f"{name} row {n} ({record['question_id']})"
        item = MMEItem(image, record["question"], _truth(record["answer"], where), where=where)
        by_image[subtask].setdefault(image, []).append(item)
        rows.setdefault(f"{subtask}/{image}", n)
    sheets = {}
    for subtask, images in by_image.items():
        if not images:
            raise FormatError(f"MME dataset {name}: no questions of subtask {subtask!r}")
        ordered = sorted(images, key=lambda image: PurePosixPath(image).stem + ".txt")  # as the question files sort
        sheets[subtask] = [item for image in ordered for item in images[image]]
        image_pairs(sheets[subtask])
    return sheets, rows


def hub_status() -> tuple[bool, str]:
    """``(found, where)``: :data:`HUB_DATASET` at :data:`HUB_REVISION` in the Hugging Face cache, or the
    hub reachable (one short request; none when ``HF_HUB_OFFLINE`` is set); ``where`` says which, or why not."""
    from huggingface_hub import HfApi, constants

    label = f"the {HUB_DATASET} dataset (revision {HUB_REVISION[:7]})"
    snapshot = Path(constants.HF_HUB_CACHE) / f"datasets--{HUB_DATASET.replace('/', '--')}" / "snapshots"
    if any((snapshot / HUB_REVISION / "data").glob("test-*.parquet")):
        return True, f"{label} in the Hugging Face cache"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"
    try:
        HfApi().dataset_info(HUB_DATASET, revision=HUB_REVISION, timeout=5)
    except Exception as e:  # any failure means: not usable from here
        return False, f"the hub did not answer: {type(e).__name__}"
    return True, f"{label} from the Hugging Face hub (~0.9 GB, downloaded into its cache on first use)"


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


# --------------------------------------------------------------------------- uncertainty

PAIR_COLUMNS = ("right", "both", "asked", "pairs")  # per subtask: "right:existence", ...


def score_units(sheets: Mapping[str, Sequence[MMEItem]], parser: str = "official") -> Units:
    """One row per image pair, its subtask's columns filled (``right`` of 2, ``both`` right,
    ``asked`` = 2, ``pairs`` = 1) and the others 0; the subtasks are strata."""
    parse = get_parser("mme", parser)
    subtasks = [t for t in SUBTASKS if t in sheets]
    rows, strata = [], []
    for i, subtask in enumerate(subtasks):
        for pair in image_pairs(sheets[subtask]):
            right = sum(parse(item.pred) == item.gt for item in pair)
            row = np.zeros(len(PAIR_COLUMNS) * len(subtasks))
            row[len(PAIR_COLUMNS) * i : len(PAIR_COLUMNS) * (i + 1)] = (right, right == 2, 2, 1)
            rows.append(row)
            strata.append(i)
    columns = tuple(f"{name}:{t}" for t in subtasks for name in PAIR_COLUMNS)
    return Units(np.array(rows).reshape(-1, len(columns)), columns, np.array(strata))


def _share(hits: str, trials: str) -> Measure:
    """The fraction ``hits / trials`` (column totals), with its Wilson interval."""
    return Measure(lambda c: c.total(hits) / c.total(trials), proportion=(hits, trials))


def _sum(parts: Sequence[Measure], scale: float = 1.0) -> Measure:
    return Measure(lambda c: scale * sum(m.statistic(c) for m in parts))


def measures(subtasks: Sequence[str]) -> dict[str, Measure]:
    """Measures of :func:`score_mme`'s output for ``subtasks``, keyed by their path in it
    (``subtasks.existence.acc``; ``hallucination`` where all its subtasks ran)."""
    found = {}
    for t in subtasks:
        acc, acc_plus = _share(f"right:{t}", f"asked:{t}"), _share(f"both:{t}", f"pairs:{t}")
        found |= {f"subtasks.{t}.acc": acc, f"subtasks.{t}.acc_plus": acc_plus}
        found[f"subtasks.{t}.score"] = _sum([acc, acc_plus], scale=100)  # acc * 100 + acc+ * 100
    for name, group in (("perception", PERCEPTION), ("cognition", COGNITION), ("hallucination", HALLUCINATION)):
        if all(t in subtasks for t in group):
            found[name] = _sum([found[f"subtasks.{t}.score"] for t in group])
    return found
