"""Write a release number everywhere it is pinned: the package version and every notebook's install cell.

    python scripts/release.py 0.2.0     # then commit, and tag the commit v0.2.0

The notebooks' Colab install cell installs ``avisc-tutorial @ git+<repo>@v<version>``, so a course
that hands out the notebooks of a release gets the library of that release (tests/test_notebooks.py
checks that the pin equals the package version).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TAG = "colab-install"  # the notebooks' install cell carries this cell tag
PIN = re.compile(r'AVISC_RELEASE = "v[^"]+"')
VERSION = re.compile(r'^(version = |__version__ = )"[^"]+"', re.M)


def set_version(text: str, version: str) -> str:
    """``text`` with its ``version = "..."`` / ``__version__ = "..."`` line set to ``version``."""
    new, count = VERSION.subn(lambda m: f'{m.group(1)}"{version}"', text, count=1)
    if count != 1:
        raise ValueError("no version line found")
    return new


def pin_notebook(path: Path, version: str) -> None:
    """Set the release pinned by ``path``'s install cell to ``v<version>``."""
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if INSTALL_TAG in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name}: expected one cell tagged {INSTALL_TAG!r}, found {len(cells)}")
    cells[0].source = PIN.sub(f'AVISC_RELEASE = "v{version}"', cells[0].source)
    nbformat.write(notebook, path)


def main(version: str) -> None:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SystemExit(f"version must look like 1.2.3, got {version!r}")
    for path in (ROOT / "pyproject.toml", ROOT / "avisc_lib" / "__init__.py"):
        path.write_text(set_version(path.read_text(), version))
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        pin_notebook(path, version)
    print(f"pinned {version}: commit, then `git tag v{version}`")


if __name__ == "__main__":
    main(*sys.argv[1:2] or ["missing"])
