"""A pytest plugin (``-p notebook_rules`` in pyproject.toml): nbmake executes every notebook, and
this adds two rules of the series.

* Students see no warnings: an executed notebook fails when a cell's output shows a warning (a
  Python ``...Warning:`` line or a logged ``WARNING``), unless the line matches :data:`UNAVOIDABLE`,
  each entry with its reason.
* The committed figures are the notebooks' own: under the profile they were drawn with (the tiny
  model on CPU, no ``AVISC_*`` variable that changes the data), the notebook draws its figures into a
  scratch folder, and it fails when one differs from ``figures/`` pixel for pixel, when it draws one
  that is not committed, or when a committed ``figures/<NN>_*.png`` of notebook ``NN`` is no longer
  drawn (:func:`figure_differences`). Regenerate with ``make notebooks`` and commit the figures.

``--save-executed DIR`` also writes every executed notebook to DIR (what ``make docs`` publishes).
Every notebook item is marked ``notebooks`` (``make test-fast`` leaves them out).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from nbmake.nb_result import NotebookError, NotebookResult
from nbmake.nb_run import NotebookRun
from nbmake.pytest_items import NotebookFailedException, NotebookItem

WARNING = re.compile(r"^.*(\b[A-Z]\w*Warning\b|\bWARNING\b|\bwarn(ing)?:).*$", re.M)
# (pattern, why we cannot avoid it): empty today; add only what a library emits whatever we do.
UNAVOIDABLE: list[tuple[re.Pattern, str]] = []
# Variables under which the notebooks draw other figures than the committed ones.
PROFILE_VARIABLES = ("AVISC_MODEL", "AVISC_LIMIT", "AVISC_DEVICE")
INLINE = "module://matplotlib_inline.backend_inline"  # Jupyter's own matplotlib backend


def warnings_in(notebook) -> list[str]:
    """``"cell k: <line>"`` for every warning line in the text outputs of an executed ``notebook``."""
    found = []
    for k, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output["output_type"] == "stream" else ""
            text += "".join(output.get("data", {}).get("text/plain", ""))
            for match in WARNING.finditer(text):
                if not any(pattern.search(match.group(0)) for pattern, _ in UNAVOIDABLE):
                    found.append(f"cell {k}: {match.group(0).strip()}")
    return found


def same_pixels(a: Path, b: Path) -> bool:
    """Whether two PNGs hold the same image, pixel for pixel (their metadata, such as the matplotlib
    version that wrote them, aside)."""
    from PIL import Image

    with Image.open(a) as first, Image.open(b) as second:
        return first.size == second.size and first.convert("RGBA").tobytes() == second.convert("RGBA").tobytes()


def figure_differences(drawn: Path, committed: Path, notebook: str) -> list[str]:
    """What differs between the PNGs notebook ``notebook`` (e.g. ``"05_mme"``) ``drawn`` and the
    ``committed`` figures folder: one line per figure changed, new, or no longer drawn."""
    found = []
    for png in sorted(drawn.glob("*.png")):
        ours = committed / png.name
        if not ours.is_file():
            found.append(f"{png.name}: drawn by {notebook} but not in {committed.name}/ (commit it)")
        elif not same_pixels(ours, png):
            found.append(f"{png.name}: differs from {committed.name}/{png.name} (regenerate: make notebooks)")
    for ours in sorted(committed.glob(f"{notebook[:2]}_*.png")):
        if not (drawn / ours.name).is_file():
            found.append(f"{committed.name}/{ours.name}: no longer drawn by {notebook} (remove it)")
    return found


def draws_committed_figures() -> bool:
    """Whether the notebooks run as the committed figures were drawn: the tiny profile on CPU."""
    import torch

    profile = os.environ.get("AVISC_PROFILE", "").strip().lower()
    return (
        profile in ("", "tiny")
        and not any(os.environ.get(v) for v in PROFILE_VARIABLES)
        and not torch.cuda.is_available()
    )


@contextmanager
def figures_drawn_into(folder: Path, runs: Path) -> Iterator[None]:
    """Notebooks started inside save figures to ``folder``; their run folders stay under ``runs``
    (where they go without ``AVISC_FIGURES``) unless ``AVISC_RUNS_DIR`` says otherwise."""
    saved = {k: os.environ.get(k) for k in ("AVISC_FIGURES", "AVISC_RUNS_DIR")}
    os.environ["AVISC_FIGURES"] = str(folder)
    os.environ.setdefault("AVISC_RUNS_DIR", str(runs))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def inline_figures() -> Iterator[None]:
    """Kernels started inside draw figures into their outputs, as in Jupyter, even where the
    environment sets another matplotlib backend (CI's ``MPLBACKEND=Agg`` would leave none)."""
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved


class CheckedNotebookItem(NotebookItem):
    """nbmake's item, failing also on warnings in the outputs and on figures that differ from figures/."""

    def runtest(self):
        option = self.config.option
        root = Path(self.config.rootdir)
        path = root / self.filename
        run = NotebookRun(path, option.nbmake_timeout, verbose=bool(option.verbose), kernel=option.nbmake_kernel)
        with tempfile.TemporaryDirectory() as scratch, inline_figures():
            if draws_committed_figures():
                with figures_drawn_into(Path(scratch), root / "runs" / "notebooks"):
                    result = run.execute()
                found = figure_differences(Path(scratch), root / "figures", path.stem)
            else:
                result, found = run.execute(), []
        found += warnings_in(result.nb)
        if option.save_executed:  # the executed copy, e.g. for `make docs`
            folder = Path(option.save_executed)
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(result.nb, folder / path.name)
        if result.error is None and found:
            summary = f"{len(found)} warning line(s) or figure difference(s)"
            result = NotebookResult(result.nb, NotebookError(summary, "\n".join([summary, *found]), -1))
        if result.error is not None:
            raise NotebookFailedException(result)


def pytest_addoption(parser):
    parser.addoption(
        "--save-executed",
        metavar="DIR",
        default=None,
        help="write each executed notebook to DIR (make test: build/notebooks, which make docs reads)",
    )


def pytest_collection_modifyitems(items):
    for item in items:
        if type(item) is NotebookItem:
            item.__class__ = CheckedNotebookItem
            item.add_marker(pytest.mark.notebooks)
