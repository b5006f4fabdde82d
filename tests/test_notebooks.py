"""Notebook hygiene: committed without outputs, neutral kernel, the shared parameters cell, short cells."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_series_is_present():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:4] == ["00_setup", "01_attention_bias", "02_blind_token_ablation", "03_avisc_decoding"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert all(len("".join(c["source"]).splitlines()) <= 40 for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=lambda p: p.stem)
def test_same_configuration_cell(path):
    first = json.loads(NOTEBOOKS[0].read_text())
    cells = json.loads(path.read_text())["cells"]
    reference = next(c for c in first["cells"] if "parameters" in c["metadata"].get("tags", []))
    params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1 and params[0]["source"] == reference["source"]
    assert "AVISC_PROFILE" in "".join(params[0]["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tells_a_story(path):
    markdown = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
    assert "**Question.**" in markdown and "## Summary" in markdown and "## Exercises" in markdown


def _install_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if "colab-install" in c["metadata"].get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_on_colab_by_itself(path):
    """Each notebook installs the package itself, before any other code cell, with the same cell as 00."""
    cells = json.loads(path.read_text())["cells"]
    install = _install_cells(path)
    assert len(install) == 1 and install[0] == next(c for c in cells if c["cell_type"] == "code")
    assert install[0]["source"] == _install_cells(NOTEBOOKS[0])[0]["source"]


def test_install_pins_this_release():
    import avisc_lib

    source = "".join(_install_cells(NOTEBOOKS[0])[0]["source"])
    pyproject = (NOTEBOOKS[0].parents[1] / "pyproject.toml").read_text()
    assert f'AVISC_RELEASE = "v{avisc_lib.__version__}"' in source
    assert f'\nversion = "{avisc_lib.__version__}"\n' in pyproject
    assert "@main" not in source and "google.colab" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_states_no_measured_numbers(path):
    """Measured numbers are formatted from the run's own results, never typed into markdown, where
    they would contradict the outputs under another profile. (0.02 is M3ID's decay constant.)"""
    import re

    markdown = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
    assert set(re.findall(r"\b\d+\.\d{2}\b", markdown)) <= {"0.02"}
