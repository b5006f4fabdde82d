"""Benchmark images on demand: COCO val2014 for POPE's coco and aokvqa splits, checksum-verified.

POPE's question files are small and :func:`.download.fetch` gets them without asking. The images
are another matter: COCO val2014 is one 6.6 GB zip. :func:`coco_val2014` returns a folder that
holds the images a task names and downloads the zip only when asked (``download=True``): it logs
the size first, checks free disk space, verifies the zip's sha256 (as recorded by TensorFlow
Datasets, ``url_checksums/coco.txt``) before extracting anything, and extracts only the images
asked for. An interrupted download starts over; a finished zip is kept for later calls.
GQA's 20 GB image zip has no published checksum, so GQA images stay user-supplied.

    folder = coco_val2014(pope_image_names(["coco", "aokvqa"]), cache / "coco", download=True)
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from . import pope
from .download import download_verified, fetch, sha256sum
from .io import DEFAULT_DATA_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """A zip of images: where it is, how big, its sha256, and the folder its images sit in."""

    url: str
    size: int  # bytes
    sha256: str
    folder: str  # the zip's top-level folder, which is also the extracted folder's name

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


COCO_VAL2014 = Archive(
    "http://images.cocodataset.org/zips/val2014.zip",
    6_645_013_297,
    "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0",
    "val2014",
)


def pope_image_names(datasets: Iterable[str], data_dir: str | Path | None = None) -> list[str]:
    """The image files named by the three POPE splits of ``datasets`` (sorted, unique)."""
    data_dir = Path(data_dir or DEFAULT_DATA_DIR)
    names = {
        q.image
        for dataset in datasets
        for split in pope.STRATEGIES
        for q in pope.load_questions(fetch(f"pope/{dataset}/{split}", data_dir))
    }
    return sorted(names)


def coco_val2014(
    names: Iterable[str], root: str | Path, *, download: bool = False, archive: Archive = COCO_VAL2014
) -> Path:
    """``root/val2014`` holding every image in ``names``, extracted from the verified zip if needed.

    Without ``download`` a missing image raises :class:`FileNotFoundError` that states the
    download's size; with it, the zip is fetched into ``root`` (once) and the missing images are
    extracted. ``archive`` exists for tests (a small zip at a ``file://`` URL).
    """
    root = Path(root)
    folder = root / archive.folder
    missing = sorted({n for n in names if not (folder / n).is_file()})
    if not missing:
        return folder
    zip_path = root / archive.filename
    if not zip_path.is_file() or sha256sum(zip_path) != archive.sha256:
        if not download:
            raise FileNotFoundError(
                f"{len(missing)} image(s) missing from {folder}, e.g. {', '.join(missing[:3])}. "
                "Pass download=True (notebook 04: DOWNLOAD_COCO = True, avisc-eval: --download-images) to fetch "
                f"{archive.url} "
                f"({archive.size / 1e9:.1f} GB, sha256-checked; only the needed images are "
                "extracted), or point COCO_IMAGES at an extracted val2014 folder."
            )
        _download(archive, zip_path)
    _extract(zip_path, archive.folder, missing, root)
    return folder


def _download(archive: Archive, target: Path) -> None:
    """Download ``archive`` to ``target`` after checking free disk space and logging its size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < archive.size:
        raise OSError(
            f"{archive.filename} needs {archive.size / 1e9:.1f} GB but {target.parent} has {free / 1e9:.1f} GB free"
        )
    log.warning("downloading %s (%.1f GB) to %s", archive.url, archive.size / 1e9, target)
    download_verified(archive.url, target, archive.sha256, label=archive.filename, size=archive.size)


def _extract(zip_path: Path, folder: str, names: list[str], root: Path) -> None:
    """Extract ``folder/name`` for each of ``names`` from ``zip_path`` into ``root``."""
    with zipfile.ZipFile(zip_path) as zf:
        members = set(zf.namelist())
        absent = [n for n in names if f"{folder}/{n}" not in members]
        if absent:
            raise FileNotFoundError(f"{len(absent)} image(s) not in {zip_path}, e.g. {', '.join(absent[:3])}")
        for name in tqdm(names, desc=f"extracting from {zip_path.name}", unit="image"):
            zf.extract(f"{folder}/{name}", root)
