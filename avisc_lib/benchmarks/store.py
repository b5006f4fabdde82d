"""The output folder of a benchmark run: its configuration, append-only answer files, metrics.

``out_dir/config.json``
    The run's configuration, with the package version and the model weights' hash (its
    provenance). Once a folder holds answers, another configuration, version or weights is refused.
``out_dir/answers.jsonl``
    One JSON object per line and question (``id``, ``question``, ``answer``, ``label``,
    ``method``, ``image``, ``group``). While a run goes on, process 0 appends here and process
    r > 0 to ``answers.rank<r>.jsonl``, one write + flush + fsync per batch; at the end the
    main process rewrites ``answers.jsonl`` with every answer in question order (atomically)
    and deletes the rank files.
``out_dir/metrics.json``
    The scorer's output.

A line counts once its newline is on disk: :meth:`RunFolder.repair` cuts a torn last line (a
kill mid-write), and :meth:`RunFolder.read` keeps the first answer of each id, so a kill at
any moment loses at most the batch being written and duplicates nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .io import FormatError
from .tasks import Question

ANSWERS = "answers.jsonl"
CONFIG = "config.json"
METRICS = "metrics.json"
PROVENANCE = ("version", "weights")  # config keys naming the code and the weights that made the answers


class ConfigMismatch(ValueError):
    """The output folder holds a run with another configuration."""


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (a temporary file, then a rename)."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``"key: X there, Y here"`` for every differing (nested) key."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return out


def _provenance_difference(stored: dict, config: dict) -> str | None:
    """Why answers stored under ``stored`` may come from other code or weights than ``config``'s."""
    missing = [key for key in PROVENANCE if key in config and key not in stored]
    if missing:
        return (
            f"from before run folders recorded the package version and weights hash (no {' or '.join(missing)} "
            f"in its {CONFIG}), so they may come from other code or weights"
        )
    if "version" in config and stored["version"] != config["version"]:
        return f"made by another avisc_lib (version {stored['version']} there, {config['version']} here)"
    if "weights" in config and stored["weights"] != config["weights"]:
        return (
            f"made with other model weights (weights sha256 {stored['weights'][:12]}… there, "
            f"{config['weights'][:12]}… here)"
        )
    return None


class RunFolder:
    """Files of one run in ``path`` (created on first write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def shard(self, rank: int) -> Path:
        """The file process ``rank`` appends to."""
        return self.path / (ANSWERS if rank == 0 else f"answers.rank{rank}.jsonl")

    def answer_files(self) -> list[Path]:
        """Existing answer files, ``answers.jsonl`` first."""
        files = [self.path / ANSWERS] + sorted(self.path.glob("answers.rank*.jsonl"))
        return [f for f in files if f.is_file()]

    def check_config(self, config: dict) -> None:
        """Raise :class:`ConfigMismatch` if the folder holds answers of another configuration.

        A folder without answers takes any configuration (a run that failed before its first
        batch does not lock it).
        """
        if not self.answer_files():
            return
        path = self.path / CONFIG
        if not path.is_file():
            raise ConfigMismatch(
                f"{self.path} holds answers but no {CONFIG}, so they may come from another run; "
                "use another output folder"
            )
        stored = json.loads(path.read_text(encoding="utf-8"))
        fresh = "use another output folder (--out), or delete this one to start fresh"
        provenance = _provenance_difference(stored, config)
        if provenance:
            raise ConfigMismatch(f"{self.path} holds answers {provenance}; {fresh}")
        differences = _differences(stored, json.loads(json.dumps(config)))
        if differences:
            raise ConfigMismatch(
                f"{self.path} holds answers of another configuration ({'; '.join(differences)}); {fresh}"
            )

    def write_config(self, config: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / CONFIG, config)

    def repair(self) -> None:
        """Cut every answer file after its last newline (a line torn by a kill)."""
        for path in self.answer_files():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                with open(path, "r+b") as f:
                    f.truncate(end)

    def read(self, questions: Sequence[Question]) -> dict[int, dict]:
        """Answer records by id, the first of each id; a torn last line is ignored."""
        ids = {q.id for q in questions}
        records: dict[int, dict] = {}
        for path in self.answer_files():
            lines = path.read_bytes().split(b"\n")[:-1]  # what follows the last newline is torn
            for number, line in enumerate(lines, start=1):
                record = _record(line, f"{path}:{number}", ids)
                records.setdefault(record["id"], record)
        return records

    def append(self, rank: int, records: Iterable[dict]) -> None:
        """Append ``records`` to the rank's file in one write, then flush and fsync."""
        self.path.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r) + "\n" for r in records)
        with open(self.shard(rank), "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def merge(self, questions: Sequence[Question]) -> list[dict]:
        """Rewrite ``answers.jsonl`` with every answer in question order; delete the rank files."""
        records = self.read(questions)
        missing = [q.id for q in questions if q.id not in records]
        if missing:
            raise RuntimeError(f"{len(missing)} question(s) unanswered in {self.path}: ids {missing[:5]}")
        ordered = [records[q.id] for q in questions]
        write_atomic(self.path / ANSWERS, "".join(json.dumps(r) + "\n" for r in ordered))
        for path in self.path.glob("answers.rank*.jsonl"):
            path.unlink()
        return ordered

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / METRICS, metrics)

    def read_metrics(self) -> dict:
        return json.loads((self.path / METRICS).read_text(encoding="utf-8"))


def _record(line: bytes, where: str, ids: set[int]) -> dict:
    """One answer record, checked: a JSON object whose ``id`` is a question of the run."""
    try:
        record = json.loads(line)
    except ValueError as e:  # invalid JSON or UTF-8
        raise FormatError(f"{where}: invalid JSON line ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("answer"), str):
        raise FormatError(f"{where}: expected an object with a string 'answer'")
    if record.get("id") not in ids:
        raise FormatError(f"{where}: id {record.get('id')!r} is not a question of this run")
    return record
