"""scripts/site.py gathers the website's pages only from notebooks that were executed."""

from pathlib import Path

import nbformat
import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
site = load_script("site", "site_script")


def _executed_copies(folder, executed=True):
    folder.mkdir()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for k, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
            cell.execution_count = k + 1 if executed else None
        nbformat.write(notebook, folder / path.name)
    return folder


def test_every_executed_notebook_is_found(tmp_path):
    found = site.executed(_executed_copies(tmp_path / "run"))
    assert [p.name[:2] for p in found] == list(site.syllabus.LESSONS)


def test_a_missing_or_unexecuted_notebook_is_named(tmp_path):
    folder = _executed_copies(tmp_path / "run")
    (folder / "05_mme.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match=r"05_\*\.ipynb.*make notebooks"):
        site.executed(folder)
    with pytest.raises(ValueError, match="not executed"):
        site.executed(_executed_copies(tmp_path / "fresh", executed=False))


def test_the_start_page_links_each_notebook_with_its_runtimes():
    page = site.start_page()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"(notebooks/{path.name})" in page
    assert page.count("\n| [") == len(site.syllabus.LESSONS) and "not measured" not in page  # a row each, CPU measured
