"""The notebooks run unchanged on other model folders (AVISC_MODEL): a random tiny LLaVA and a
random tiny InstructBLIP, i.e. the code path a GPU profile takes with the real checkpoints."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from avisc_lib.tiny.build import build_processor
from conftest import instructblip_processor, save_model_folder, tiny_instructblip, tiny_llava

pytestmark = pytest.mark.notebooks

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0[0-3]_*.ipynb"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    llava_processor = build_processor()
    iblip_processor = instructblip_processor()
    return {
        "llava": save_model_folder(
            tmp_path_factory.mktemp("llava"), tiny_llava(llava_processor.tokenizer, kv_heads=2, seed=5), llava_processor
        ),
        "instructblip": save_model_folder(
            tmp_path_factory.mktemp("iblip"), tiny_instructblip(iblip_processor.tokenizer), iblip_processor
        ),
    }


@pytest.mark.parametrize("kind", ["llava", "instructblip"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on(kind, path, folders, monkeypatch, tmp_path):
    monkeypatch.setenv("AVISC_MODEL", str(folders[kind]))
    monkeypatch.setenv("AVISC_FIGURES", str(tmp_path))  # keep the repository's figures untouched
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    assert list(tmp_path.glob("*.png")) or path.stem == "00_setup"
