"""Where each real benchmark's images come from, and :func:`available` to ask whether they are here.

Notebooks and ``avisc-eval run`` read the same environment variables:

==================  =========================  ==========================================================
variable            benchmark / dataset        what it names
==================  =========================  ==========================================================
``COCO_IMAGES``     pope coco, pope aokvqa     an extracted COCO ``val2014`` folder
``GQA_IMAGES``      pope gqa                   an extracted folder of GQA images
``MME_DIR``         mme official               the extracted ``MME_Benchmark_release_version`` folder
``AMBER_IMAGES``    amber official             the folder of ``AMBER_<n>.jpg`` images
==================  =========================  ==========================================================

Without a variable, POPE's COCO images can come from the checksummed ``val2014.zip``
(:func:`.images.coco_val2014`, into ``<data dir>/coco``) and MME from the ``lmms-lab/MME``
dataset on the Hugging Face hub (:func:`.mme.load_hub`); GQA and AMBER images have no checksummed
download, so their variable is the only way in.

    ok, reason = available("mme", "official")  # (False, "mme official needs ...") when nothing is here
"""

from __future__ import annotations

import os
from pathlib import Path

from . import images, mme
from .io import DEFAULT_DATA_DIR

DATASETS = {  # the datasets of each benchmark; "synthetic" is rendered on demand
    "pope": ("synthetic", "coco", "aokvqa", "gqa"),
    "mme": ("synthetic", "official"),
    "amber": ("synthetic", "official"),
}
IMAGE_VARIABLES = {
    ("pope", "coco"): "COCO_IMAGES",
    ("pope", "aokvqa"): "COCO_IMAGES",
    ("pope", "gqa"): "GQA_IMAGES",
    ("mme", "official"): "MME_DIR",
    ("amber", "official"): "AMBER_IMAGES",
}
WHAT = {  # what each variable must name, for messages
    "COCO_IMAGES": "an extracted COCO val2014 folder",
    "GQA_IMAGES": "an extracted folder of GQA images (the 20 GB images.zip of the GQA site, no published checksum)",
    "MME_DIR": "the extracted MME_Benchmark_release_version folder (or a local copy of the lmms-lab/MME dataset)",
    "AMBER_IMAGES": (
        "the folder of the 1004 AMBER_<n>.jpg images, from the Google Drive file linked in the README of "
        "github.com/junyangwang0410/AMBER (https://drive.google.com/file/d/1MaCHgtupcZUjf007anNl4_MV0o4DjXvl; "
        "no published checksum, so nothing is downloaded for you)"
    ),
}


def image_variable(benchmark: str, dataset: str) -> str | None:
    """The environment variable naming the images of ``benchmark``/``dataset`` (None: synthetic)."""
    return IMAGE_VARIABLES.get((benchmark, dataset))


def env_image_dir(benchmark: str, dataset: str) -> Path | None:
    """The folder the environment names for ``benchmark``/``dataset``'s images, if set."""
    variable = image_variable(benchmark, dataset)
    value = os.environ.get(variable, "").strip() if variable else ""
    return Path(value).expanduser() if value else None


def needs(benchmark: str, dataset: str) -> str:
    """One line: what ``benchmark``/``dataset`` needs when no image folder is known."""
    variable = image_variable(benchmark, dataset)
    return f"{benchmark} {dataset} needs image_dir (--image-dir) or {variable}: {WHAT[variable]}"


def image_folder(
    benchmark: str,
    dataset: str,
    image_dir: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> Path | None:
    """The image folder of a real dataset: ``image_dir``, else the environment's, else for POPE
    coco/aokvqa ``<data_dir>/coco/val2014`` (extracted from ``val2014.zip`` there, downloaded first
    when ``download``). None for the synthetic datasets and for MME without a folder (the
    ``lmms-lab/MME`` dataset then holds the images). Otherwise ``ValueError`` (:func:`needs`).
    """
    if dataset == "synthetic":
        return None
    folder = Path(image_dir) if image_dir is not None else env_image_dir(benchmark, dataset)
    if folder is not None:
        return folder
    variable = image_variable(benchmark, dataset)
    if variable == "MME_DIR":
        return None
    data_dir = Path(data_dir or DEFAULT_DATA_DIR)
    root = data_dir / "coco"
    if variable == "COCO_IMAGES" and (download or any((root / name).exists() for name in _COCO_FILES)):
        return images.coco_val2014(images.pope_image_names([dataset], data_dir), root, download=download)
    raise ValueError(needs(benchmark, dataset))


_COCO_FILES = (images.COCO_VAL2014.filename, images.COCO_VAL2014.folder)  # what a download leaves in <data>/coco


def available(
    benchmark: str, dataset: str, *, download: bool = False, data_dir: str | Path | None = None
) -> tuple[bool, str]:
    """``(True, where the data comes from)`` or ``(False, one line naming what to set)``; never raises
    for missing data (unknown names do raise ``ValueError``).

    ``download``: a checksummed download is allowed (POPE coco/aokvqa's ``val2014.zip``; notebook 04's
    ``DOWNLOAD_COCO``, ``avisc-eval run --download-images``). ``data_dir``: the benchmark file cache
    (default :data:`.io.DEFAULT_DATA_DIR`), where a downloaded ``val2014.zip`` lands. Checks are cheap:
    folders and caches on disk, and for MME at most one short request to the hub.
    """
    if dataset not in DATASETS.get(benchmark, ()):
        raise ValueError(f"unknown benchmark/dataset {benchmark!r}/{dataset!r}; expected one of {DATASETS}")
    if dataset == "synthetic":
        return True, f"synthetic {benchmark}: images rendered on demand"
    variable = image_variable(benchmark, dataset)
    folder = env_image_dir(benchmark, dataset)
    if folder is not None:
        if folder.is_dir():
            return True, f"{benchmark} {dataset}: images from {variable}={folder}"
        return False, f"{variable}={folder} is not a folder; point it at {WHAT[variable]}"
    need = needs(benchmark, dataset)
    if variable == "COCO_IMAGES":
        return _coco(dataset, download, Path(data_dir or DEFAULT_DATA_DIR), need)
    if variable == "MME_DIR":
        found, where = mme.hub_status()
        if found:
            return True, f"mme official: {where}"
        return False, f"{need}, or use the {mme.HUB_DATASET} dataset where the Hugging Face hub is reachable ({where})"
    return False, need


def _coco(dataset: str, download: bool, data_dir: Path, need: str) -> tuple[bool, str]:
    """POPE's COCO images: an earlier extraction, the downloaded zip, or permission to download it."""
    archive = images.COCO_VAL2014
    root = data_dir / "coco"
    if (root / archive.filename).is_file():
        return True, f"pope {dataset}: images extracted from {root / archive.filename} on first use"
    extracted = root / archive.folder
    if extracted.is_dir() and all((extracted / n).is_file() for n in images.pope_image_names([dataset], data_dir)):
        return True, f"pope {dataset}: images from {extracted}"
    if download:
        return True, f"pope {dataset}: {archive.filename} ({archive.size / 1e9:.1f} GB) is downloaded on first use"
    return False, (
        f"{need}, or allow the sha256-checked download of {archive.filename} "
        f"({archive.size / 1e9:.1f} GB; notebook 04: DOWNLOAD_COCO = True, avisc-eval: --download-images)"
    )
