"""Build the tutorial's website from the executed notebooks (``make docs``).

    python scripts/site.py [EXECUTED_DIR]      # default build/notebooks; writes build/site

It gathers the pages into build/site-src (a start page made from the course outline, the executed
notebooks with their figures and tables, TEACHING.md, GLOSSARY.md, and MathJax so that the equations
render without a network) and runs ``mkdocs build
--strict`` with mkdocs.yml (mkdocs-jupyter renders the notebooks as they ran; nothing is executed
here). Open build/site/index.html in a browser; tests/site checks every page in headless Chromium.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupyter_server_mathjax
import nbformat

from avisc_lib.course import syllabus

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "build" / "site-src"
PAGES = ("TEACHING.md", "GLOSSARY.md")
# The Colab badge is an image from colab.research.google.com: a page read offline shows a link instead.
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)]*)\)")


def executed(folder: Path) -> list[Path]:
    """The executed copy of every notebook of the series in ``folder``; an error names what is missing
    or was not run."""
    found = []
    for number in syllabus.LESSONS:
        paths = sorted(folder.glob(f"{number}_*.ipynb"))
        if len(paths) != 1:
            raise FileNotFoundError(
                f"expected one executed notebook {number}_*.ipynb in {folder}, found {len(paths)}: "
                "run `make notebooks` (or `make test`) first"
            )
        code = [c for c in nbformat.read(paths[0], as_version=4).cells if c.cell_type == "code"]
        if not code or any(c.execution_count is None for c in code):
            raise ValueError(f"{paths[0]} has cells that were not executed: run `make notebooks` first")
        found.append(paths[0])
    return found


def start_page() -> str:
    """index.md: what the tutorial is, how to run it, and the outline with each notebook's runtime."""
    times = syllabus.runtimes()
    rows = [
        "| notebook | you will | CPU (measured) | T4 | A100 |",
        "|---|---|---|---|---|",
    ]
    for number, lesson in syllabus.LESSONS.items():
        link = f"[{number} · {lesson.title}](notebooks/{_page(number)}.ipynb)"
        minutes = times.loc[number]
        cells = [syllabus.minutes_text(minutes[c]) for c in times.columns]
        rows.append(f"| {link} | {lesson.objectives[0]} | {' | '.join(cells)} |")
    return "\n".join(
        [
            "# AvisC, step by step",
            "",
            "A tutorial on Attentional Vision Calibration (AvisC, [arXiv 2405.17820](https://arxiv.org/abs/2405.17820)),",
            "a training-free decoding method against object hallucination in vision-language models, with its",
            "baselines (VCD, M3ID), its controls and later methods (PAI, ClearSight, VAR, ONLY). These pages are",
            "the notebooks as they ran on the embedded tiny model on CPU, with every figure and table.",
            "",
            "**Run it yourself.** On a laptop: `make notebooks`, then `.venv/bin/jupyter lab`. On Colab with a GPU:",
            "open a notebook from the repository's README (one link each); the same cells load LLaVA-1.5-7B.",
            "",
            "## The series",
            "",
            *rows,
            "",
            "CPU minutes were measured by `make notebooks`; GPU minutes are the cost model's estimate for",
            "LLaVA-1.5-7B at the GPU profile's sizes, model loading not included.",
            "See also the [teaching plan](TEACHING.md) and the [glossary](GLOSSARY.md).",
            "",
        ]
    )


def _page(number: str) -> str:
    return next((ROOT / "notebooks").glob(f"{number}_*.ipynb")).stem


def gather(folder: Path) -> None:
    """Fill :data:`SOURCE` with the start page, the executed notebooks and the other pages."""
    shutil.rmtree(SOURCE, ignore_errors=True)
    (SOURCE / "notebooks").mkdir(parents=True)
    for path in executed(folder):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                cell.source = BADGE.sub(r"[Open in Colab](\1)", cell.source)
        nbformat.write(notebook, SOURCE / "notebooks" / path.name)
    for name in PAGES:
        shutil.copy(ROOT / name, SOURCE / name)
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", SOURCE / "mathjax")
    (SOURCE / "index.md").write_text(start_page())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("executed", nargs="?", type=Path, default=ROOT / "build" / "notebooks")
    args = parser.parse_args(argv)
    gather(args.executed)
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    print(f"site in {ROOT / 'build' / 'site'}; open build/site/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
