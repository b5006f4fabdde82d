"""Write the course outline into the notebooks, GLOSSARY.md and TEACHING.md (avisc_lib.course.syllabus).

    python scripts/syllabus.py                          # rewrite the outlines, GLOSSARY.md, TEACHING.md's runtimes
    python scripts/syllabus.py --times build/notebooks  # first record the CPU minutes of executed notebooks
    python scripts/syllabus.py --check                  # exit 1 if anything is out of date

The outline cell follows each notebook's title cell. ``--times`` reads the executed copies that
``make notebooks`` leaves in build/notebooks: nbclient stamps every cell with its start and end,
so a notebook's minutes are its last cell's end minus its first cell's start.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
from pathlib import Path

import nbformat

from avisc_lib.course import syllabus

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
GLOSSARY = ROOT / "GLOSSARY.md"
TEACHING = ROOT / "TEACHING.md"
RUNTIMES = re.compile(r"(<!-- runtimes:start -->\n).*?(<!-- runtimes:end -->)", re.S)


def executed_minutes(notebook: Path) -> float:
    """Wall minutes of an executed notebook, from nbclient's per-cell timestamps."""
    stamps = [
        cell.metadata["execution"]
        for cell in nbformat.read(notebook, as_version=4).cells
        if cell.cell_type == "code" and "execution" in cell.metadata
    ]
    if not stamps:
        raise ValueError(f"{notebook} has no execution timestamps: execute it with nbconvert or nbclient first")
    start = datetime.datetime.fromisoformat(stamps[0]["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.datetime.fromisoformat(stamps[-1]["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds() / 60


def record_times(folder: Path) -> None:
    minutes = {}
    for number in syllabus.LESSONS:
        found = sorted(folder.glob(f"{number}_*.ipynb"))
        if len(found) != 1:
            raise FileNotFoundError(f"expected one executed notebook {number}_*.ipynb in {folder}, found {len(found)}")
        minutes[number] = round(executed_minutes(found[0]), 2)
    record = {
        "what": "wall minutes of each notebook executed by `make notebooks` on the embedded tiny model",
        "measured": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}",
        "minutes": minutes,
    }
    syllabus.TIMES.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {syllabus.TIMES.relative_to(ROOT)}: {minutes}")


def with_outline(notebook: nbformat.NotebookNode, number: str, cpu: dict[str, float]) -> nbformat.NotebookNode:
    """``notebook`` with its outline cell (the one after the title) set to :func:`syllabus.header`
    (``cpu``: the measured minutes, :func:`syllabus.cpu_minutes`)."""
    text = syllabus.header(number, cpu)
    cells = notebook.cells
    if len(cells) > 1 and cells[1].cell_type == "markdown" and cells[1].source.startswith(syllabus.MARKER):
        cells[1].source = text
    else:
        cells.insert(1, nbformat.v4.new_markdown_cell(text))
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=Path, help="folder of executed notebooks to take the CPU minutes from")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    if args.times:
        record_times(args.times)
    stale, cpu = [], syllabus.cpu_minutes()
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        number = path.name[:2]
        before = path.read_text()
        notebook = with_outline(nbformat.reads(before, as_version=4), number, cpu)
        after = nbformat.writes(notebook)
        after += "" if after.endswith("\n") else "\n"
        if after != before:
            stale.append(path.name)
            if not args.check:
                path.write_text(after)
    teaching = TEACHING.read_text()
    if not RUNTIMES.search(teaching):
        raise ValueError(f"{TEACHING.name} lacks the <!-- runtimes:start --> / <!-- runtimes:end --> markers")
    texts = {
        GLOSSARY: syllabus.glossary_markdown(),
        TEACHING: RUNTIMES.sub(lambda m: m.group(1) + syllabus.runtime_markdown() + m.group(2), teaching),
    }
    for path, text in texts.items():
        if not path.is_file() or path.read_text() != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(text)
    verb = "out of date" if args.check else "rewrote"
    print(f"{verb}: {', '.join(stale)}" if stale else "everything current")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
