"""The environment `make` builds, used as the README says: each named command runs from the
environment's own scripts folder in a fresh process, and every installed distribution built on
torch imports (a torchvision wheel built for another torch breaks ``import transformers``).

``make test`` runs this file in ``.venv`` and again in ``.venv-lmms``, the environment that holds
lmms-eval.
"""

import importlib.metadata as metadata
import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow  # fresh interpreters that import torch: about 20 s in all
SCRIPTS = Path(sysconfig.get_path("scripts"))
TORCH = {"torch", "torchvision"}


def run_script(*argv: str) -> subprocess.CompletedProcess:
    """Run the console script ``argv[0]`` of this environment, as a shell would, and return the result."""
    script = SCRIPTS / argv[0]
    assert script.is_file(), f"{argv[0]} is not installed in {SCRIPTS}"
    return subprocess.run([str(script), *argv[1:]], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("argv, expected", [
    (["avisc-eval", "--help"], r"usage: avisc-eval"),
    (["accelerate", "launch", "--help"], r"usage: accelerate <command> \[<args>\] launch"),
    (["jupyter", "lab", "--version"], rf"^{re.escape(metadata.version('jupyterlab'))}$"),
])  # fmt: skip
def test_readme_commands_run(argv, expected):
    done = run_script(*argv)
    assert done.returncode == 0, f"`{' '.join(argv)}` failed:\n{done.stderr[-3000:]}"
    assert re.search(expected, done.stdout.strip(), re.M), done.stdout[-2000:]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def torch_dependents() -> dict[str, list[str]]:
    """Installed distributions that are torch or torchvision or name one of them among their
    requirements (extras included), each with the top-level modules it installs."""
    modules: dict[str, list[str]] = {}
    for module, owners in metadata.packages_distributions().items():
        for owner in owners:
            modules.setdefault(_name(owner), []).append(module)
    found = {}
    for dist in metadata.distributions():
        name = _name(dist.metadata["Name"])
        if name in TORCH or TORCH & {_name(r) for r in dist.requires or []}:
            found[name] = sorted(m for m in set(modules.get(name, [])) if m.isidentifier() and m[0] != "_")
    return found


def test_torch_dependents_are_found():
    found = torch_dependents()
    assert {"torch", "transformers", "accelerate", "avisc-tutorial"} <= found.keys()
    assert found["transformers"] == ["transformers"] and "avisc_lib" in found["avisc-tutorial"]


# Imports every module named in argv[1] ({distribution: [modules]}) in one fresh interpreter and
# prints {distribution: "import <module>: <error>"} for those that fail.
IMPORT_ALL = """
import importlib, json, sys
failed = {}
for name, modules in json.loads(sys.argv[1]).items():
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:
            failed[name] = f"import {module}: {type(error).__name__}: {error}"
            break
print(json.dumps(failed))
"""


def test_every_torch_dependent_distribution_imports():
    dependents = json.dumps(torch_dependents())
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, dependents], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failed, f"installed in {sys.prefix} but failing to import: {failed}"
