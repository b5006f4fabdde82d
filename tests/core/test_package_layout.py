"""The package's shape: few top-level modules, every module importable alone (no import cycle),
no import hidden in a function to dodge one, the library apart from the course, and each built-in
method named in its own file (and the registry's) only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "avisc_lib"
MODULES = sorted(
    ".".join(("avisc_lib", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)
# Imports a function may make: optional or heavy third-party packages, each for its reason.
LAZY_IMPORTS = {
    "nltk": "AMBER's official parsing (extra amber-official)",
    "nltk.stem": "AMBER's official parsing (extra amber-official)",
    "spacy": "AMBER's official parsing (extra amber-official)",
    "datasets": "MME from the hub, only when asked for",
    "huggingface_hub": "downloads, only when asked for",
    "huggingface_hub.errors": "downloads, only when asked for",
    "pycocotools.coco": "building POPE from COCO annotations, only when asked for",
}
# Course and training code that picks methods to run (as notebooks do), and strings that are not methods.
USERS = ("course", "tiny", "world")
NOT_METHODS = {
    ("benchmarks/parsers.py", "avisc"): "AvisC's answer parser",
    ("benchmarks/protocols.py", "avisc"): "AvisC's answer parser",
    ("methods/only.py", "avisc"): "AvisC's answer parser, in ONLY's official settings",
    ("integrations/lmms.py", "avisc"): "lmms-eval's --model name of the package",
}
OWN_FILE = {"random_mask": "controls", "zero_image": "controls"}


def test_at_most_eight_top_level_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top


IMPORT_EACH_ALONE = """
import importlib, json, sys
failed = {}
for module in json.loads(sys.argv[1]):
    for name in [m for m in sys.modules if m == "avisc_lib" or m.startswith("avisc_lib.")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception as error:
        failed[module] = f"{type(error).__name__}: {error}"
print(json.dumps(failed))
"""


@pytest.mark.slow
def test_every_module_imports_alone():
    """Each module first, in a fresh package state: a cycle fails whichever module starts it."""
    modules = [m for m in MODULES if m != "avisc_lib.integrations.lmms"]  # lmms-eval lives in .venv-lmms
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, json.dumps(modules)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


def _function_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    found.append((inner.lineno, "." * inner.level + (inner.module or "")))
                elif isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
    return found


def test_no_import_inside_a_function_but_optional_packages():
    hidden = [
        f"{p.relative_to(PACKAGE)}:{line}: {name}"
        for p in PACKAGE.rglob("*.py")
        for line, name in _function_imports(p)
        if name not in LAZY_IMPORTS
    ]
    assert hidden == []


def test_the_library_loads_without_the_course():
    code = "import sys, avisc_lib; print(sorted(m for m in sys.modules if m.startswith('avisc_lib.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    loaded = eval(done.stdout.strip())  # a list of module names
    assert loaded and not [m for m in loaded if m.split(".")[1] in USERS]


def _literals(path: Path) -> list[tuple[int, str]]:
    """String constants of ``path`` that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_each_built_in_method_is_named_in_its_own_file_only():
    from avisc_lib.decoding import METHODS

    stray = []
    for path in PACKAGE.rglob("*.py"):
        where = path.relative_to(PACKAGE)
        if where.parts[0] in USERS:
            continue
        for line, value in _literals(path):
            own = where == Path("methods", f"{OWN_FILE.get(value, value)}.py")
            if value in METHODS and not own and (str(where), value) not in NOT_METHODS:
                stray.append(f"{where}:{line}: {value!r}")
    assert stray == []
