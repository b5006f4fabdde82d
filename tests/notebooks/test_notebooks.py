"""Notebook hygiene: committed without outputs, neutral kernel, the shared parameters cell, short cells."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ROOT = Path(__file__).resolve().parents[2]


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
    markdown = "\n".join(
        "".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"
    )
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

    markdown = "\n".join(
        "".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"
    )
    assert set(re.findall(r"\b\d+\.\d{2}\b", markdown)) <= {"0.02"}


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _tagged(path, tag):
    return [c for c in _cells(path) if tag in c["metadata"].get("tags", [])]


def test_settings_a_colab_user_needs_come_first():
    """The parameters cell holds every setting; no notebook sets one of them again further down."""
    source = "".join(_tagged(NOTEBOOKS[0], "parameters")[0]["source"])
    for name in ("AVISC_PROFILE", "SEED", "SAVE_TO_DRIVE", "DOWNLOAD_COCO", "%env"):
        assert name in source
    for path in NOTEBOOKS:
        later = [
            c for c in _cells(path) if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])
        ]
        assert not [
            c
            for c in later
            if re.search(r"^(SAVE_TO_DRIVE|SAVE_RUNS_TO_DRIVE|DOWNLOAD_COCO) =", "".join(c["source"]), re.M)
        ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_drive_is_mounted_before_anything_is_downloaded(path):
    """Model weights (HF_HOME), benchmark files (AVISC_DATA_DIR) and runs go to Drive before the
    package, and with it huggingface_hub, reads those variables on import."""
    cells = [c for c in _cells(path) if c["cell_type"] == "code"]
    drive = _tagged(path, "colab-drive")
    assert len(drive) == 1 and drive[0]["source"] == _tagged(NOTEBOOKS[0], "colab-drive")[0]["source"]
    source = "".join(drive[0]["source"])
    assert all(v in source for v in ("HF_HOME", "AVISC_DATA_DIR", "AVISC_RUNS_DIR", "SAVE_TO_DRIVE"))
    first_import = next(
        i for i, c in enumerate(cells) if re.search(r"^(import|from) avisc_lib", "".join(c["source"]), re.M)
    )
    assert cells.index(_tagged(path, "parameters")[0]) < cells.index(drive[0]) < first_import


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_on_a_colab_gpu(path):
    metadata = json.loads(path.read_text())["metadata"]
    assert metadata["accelerator"] == "GPU" and metadata["colab"]["gpuType"] == "T4"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_bos_comes_from_the_prompt_layout(path):
    """config.bos_token_id can disagree with the tokenizer (InstructBLIP-Vicuna: 0 vs 2): use
    avisc_lib.tokens.sinks.bos_positions."""
    assert "bos_token_id" not in "".join("".join(c["source"]) for c in _cells(path))


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem[:2] in ("04", "05", "06")], ids=lambda p: p.stem)
def test_evaluation_notebooks_print_their_plan_and_skip_what_is_missing(path):
    """Runtimes come from the cost model, printed by a cell (not typed into the prose), and runs
    whose images are missing are skipped, not raised on."""
    code = "".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    assert f'course.session_plans("{path.stem[:2]}"' in code and "experiments.plan(SPECS, profile)" in code
    assert "experiments.runnable(" in code and "raise " not in code
    first = "".join(_cells(path)[0]["source"])
    assert not re.search(r"\b(hours?|\d+\s*(min|minutes))\b", first)  # minutes live in the outline (syllabus)


def test_badges_open_the_pinned_release():
    """The Open-in-Colab badge opens the notebook of the release its install cell installs."""
    import avisc_lib

    for path in NOTEBOOKS:
        badges = re.findall(
            r"colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/([^/]+)/notebooks/([\w.]+)",
            "".join(_cells(path)[0]["source"]),
        )
        assert badges == [(f"v{avisc_lib.__version__}", path.name)]
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/([^/]+)/notebooks/([\w.]+)", readme)
    assert links == [(f"v{avisc_lib.__version__}", path.name) for path in NOTEBOOKS]  # README's Start here
