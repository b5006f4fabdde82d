"""Write a release number everywhere it is pinned: the package version, every notebook's install cell,
every notebook's "Open in Colab" badge and the README's Colab links.

    python scripts/release.py 0.2.0     # then commit, and tag the commit v0.2.0

The notebooks' Colab install cell installs ``avisc-tutorial @ git+https://github.com/<repo>@v<version>``
and each badge opens ``github/<repo>/blob/v<version>/notebooks/<notebook>`` on Colab, so a course that
hands out the notebooks of a release gets the library of that release (tests/notebooks/test_notebooks.py checks
that the pin equals the package version). Both name a repository, which must be the one the tag is
pushed to: the script refuses to write anything when a badge or install cell names another
repository than this checkout's ``origin`` remote, or when there is no such remote.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TAG = "colab-install"  # the notebooks' install cell carries this cell tag
PIN = re.compile(r'AVISC_RELEASE = "v[^"]+"')
VERSION = re.compile(r'^(version = |__version__ = )"[^"]+"', re.M)
BADGE = re.compile(r"(https://colab\.research\.google\.com/github/)([\w.-]+/[\w.-]+)/blob/([^/\s)]+)/")
SOURCE = re.compile(r"git\+https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?@")
REMOTE = re.compile(r"github\.com[:/]([\w.-]+/[\w.-]+?)(?:\.git)?/?$")


def set_version(text: str, version: str) -> str:
    """``text`` with its ``version = "..."`` / ``__version__ = "..."`` line set to ``version``."""
    new, count = VERSION.subn(lambda m: f'{m.group(1)}"{version}"', text, count=1)
    if count != 1:
        raise ValueError("no version line found")
    return new


def remote_repository(root: Path = ROOT) -> str | None:
    """``owner/name`` of the GitHub repository ``origin`` points at (None: no such remote)."""
    url = subprocess.run(["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True).stdout
    match = REMOTE.search(url.strip())
    return match.group(1) if match else None


def named_repositories(notebook: nbformat.NotebookNode) -> set[str]:
    """Every ``owner/name`` a notebook's badges and install cell point at."""
    text = "\n".join(cell.source for cell in notebook.cells)
    return {m.group(2) for m in BADGE.finditer(text)} | set(SOURCE.findall(text))


def check_targets(paths: list[Path], remote: str | None) -> None:
    """Refuse (``SystemExit``) unless every notebook's badges and install cell name ``remote``."""
    if remote is None:
        raise SystemExit(
            "no GitHub 'origin' remote: the badges and install cells would point at a tag nobody "
            "can fetch; add the remote (git remote add origin ...) first"
        )
    wrong = {
        p.name: sorted(named)
        for p in paths
        if (named := named_repositories(nbformat.read(p, as_version=4))) != {remote}
    }
    if wrong:
        raise SystemExit(
            f"notebooks point at other repositories than origin ({remote}): {wrong}; "
            "fix their badges and install cells first"
        )


def pin_notebook(path: Path, version: str) -> None:
    """Set the release pinned by ``path``'s install cell, and its badges' ref, to ``v<version>``."""
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if INSTALL_TAG in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name}: expected one cell tagged {INSTALL_TAG!r}, found {len(cells)}")
    cells[0].source = PIN.sub(f'AVISC_RELEASE = "v{version}"', cells[0].source)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = BADGE.sub(lambda m: f"{m.group(1)}{m.group(2)}/blob/v{version}/", cell.source)
    nbformat.write(notebook, path)


def main(version: str, root: Path = ROOT) -> None:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SystemExit(f"version must look like 1.2.3, got {version!r}")
    notebooks = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    check_targets(notebooks, remote_repository(root))
    for path in (root / "pyproject.toml", root / "avisc_lib" / "version.py"):
        path.write_text(set_version(path.read_text(), version))
    for path in notebooks:
        pin_notebook(path, version)
    readme = root / "README.md"  # its Start-here links open the release's notebooks on Colab
    readme.write_text(BADGE.sub(lambda m: f"{m.group(1)}{m.group(2)}/blob/v{version}/", readme.read_text()))
    print(f"pinned {version}: commit, then `git tag v{version}` and push the tag to origin")


if __name__ == "__main__":
    main(*sys.argv[1:2] or ["missing"])
