"""scripts/release.py: the release is written only where the notebooks' badges and install cells
name this checkout's origin, and then badges and pins name the new tag."""

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
release = load_script("release")


def _checkout(tmp_path, remote):
    """A git checkout holding the version files, two notebooks and the README, with ``remote`` as origin."""
    (tmp_path / "avisc_lib").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "0.2.0"\n')
    (tmp_path / "avisc_lib" / "version.py").write_text('__version__ = "0.2.0"\n')
    for name in ("00_setup.ipynb", "04_pope.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, tmp_path / "notebooks" / name)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    if remote:
        subprocess.run(["git", "remote", "add", "origin", remote], cwd=tmp_path, check=True)
    return tmp_path


@pytest.mark.parametrize(
    "remote, says",
    [(None, "no GitHub 'origin' remote"), ("https://github.com/someone/fork.git", "other repositories than origin")],
)
def test_refuses_when_the_badges_name_another_repository(tmp_path, remote, says):
    root = _checkout(tmp_path, remote)
    before = (root / "notebooks" / "04_pope.ipynb").read_text()
    with pytest.raises(SystemExit, match=says):
        release.main("9.9.9", root)
    assert (root / "notebooks" / "04_pope.ipynb").read_text() == before
    assert '"0.2.0"' in (root / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    "remote",
    ["https://github.com/avisc-tutorial/avisc-tutorial.git", "git@github.com:avisc-tutorial/avisc-tutorial.git"],
)
def test_pins_version_install_cell_and_badges_to_the_tag(tmp_path, remote):
    root = _checkout(tmp_path, remote)
    release.main("9.9.9", root)
    text = (root / "notebooks" / "04_pope.ipynb").read_text()
    assert 'AVISC_RELEASE = \\"v9.9.9\\"' in text and "/blob/v9.9.9/notebooks/04_pope.ipynb" in text
    assert "/blob/main/" not in text
    assert '__version__ = "9.9.9"' in (root / "avisc_lib" / "version.py").read_text()
    readme = (root / "README.md").read_text()
    assert "/blob/v9.9.9/notebooks/04_pope.ipynb" in readme and "/blob/v0.2.0/" not in readme


def test_every_notebook_names_one_repository():
    import nbformat

    named = {
        p.name: release.named_repositories(nbformat.read(p, as_version=4))
        for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    }
    assert len(set(map(frozenset, named.values()))) == 1 and all(len(n) == 1 for n in named.values()), named
