"""What the benchmark modules share to read their files: where the data lives, the one error a
malformed file raises, JSON readers that name the file and line of a fault, and image checks.

* :data:`REPOSITORY_DATA`: the checkout's top-level ``data/`` (pinned copies of the question
  and annotation files, see :mod:`.download`); absent in an installed package.
* :data:`DEFAULT_DATA_DIR`: where downloaded benchmark files are cached, ``$AVISC_DATA_DIR`` or
  else ``~/.cache/avisc_lib/benchmarks``.
* :class:`FormatError`, :func:`read_records`, :func:`read_json`, :func:`require`: reading JSON
  Lines, JSON arrays and JSON documents, with errors that say where.
* :func:`check_images`, :func:`open_image`: the image folder a task reads from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image

REPOSITORY_DATA = Path(__file__).resolve().parents[2] / "data"  # exists in a checkout only
DEFAULT_DATA_DIR = Path(os.environ.get("AVISC_DATA_DIR") or Path.home() / ".cache" / "avisc_lib" / "benchmarks")


class FormatError(ValueError):
    """A benchmark file is malformed; the message names the file and line or record."""


class HasImage(Protocol):
    image: str  # a file name relative to an image folder


def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """``(location, record)`` pairs from a JSON array or a JSON Lines file.

    ``location`` is ``"file:line"`` for JSON Lines and ``"file record i"`` for arrays, ready
    for error messages. Blank lines are skipped; CRLF and a UTF-8 BOM are tolerated.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}:{e.lineno}: invalid JSON array ({e.msg})") from None
        located = [(f"{path} record {i + 1}", r) for i, r in enumerate(records)]
    else:
        located = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                located.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}:{number}: invalid JSON line ({e.msg})") from None
    if not located:
        raise FormatError(f"{path}: no records")
    for where, record in located:
        if not isinstance(record, dict):
            raise FormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return located


def read_json(path: str | Path):
    """The JSON document in ``path``; a UTF-8 BOM is tolerated."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def require(record: dict, where: str, fields: Iterable[str]) -> None:
    """Raise :class:`FormatError` naming ``where`` if any of ``fields`` is missing."""
    missing = [f for f in fields if f not in record]
    if missing:
        raise FormatError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")


def check_images(items: Sequence[HasImage], image_dir: str | Path) -> None:
    """Raise :class:`FileNotFoundError` listing the ``.image`` files of ``items`` absent from ``image_dir``."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    missing = sorted({item.image for item in items if not (image_dir / item.image).is_file()})
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) missing from {image_dir}, e.g. {', '.join(missing[:3])}")


def open_image(folder: Path, name: str) -> Image.Image:
    """``folder / name`` as RGB."""
    with Image.open(folder / name) as image:
        return image.convert("RGB")
