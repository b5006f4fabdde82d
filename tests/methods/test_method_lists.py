"""Every list of methods shown to a user is generated from the method registry: each names every
registered method (``METHODS``: greedy/sample, the branches, the interventions)."""

import pydoc
from pathlib import Path

import pytest
from conftest import load_script

import avisc_lib
from avisc_lib.benchmarks.cli import main
from avisc_lib.decoding import METHODS
from avisc_lib.integrations.hf_generate import card_methods, write_card_methods
from avisc_lib.methods import registered
from avisc_lib.settings import decode_options, method_help

CARD = Path(__file__).resolve().parents[2] / "custom_generate" / "README.md"
REGISTERED = (
    "greedy",
    "sample",
    "avisc",
    "vcd",
    "m3id",
    "random_mask",
    "zero_image",
    "pai",
    "clearsight",
    "var",
    "only",
)


def test_the_registry_holds_every_registered_method():
    assert tuple(m.name for m in registered()) == METHODS and tuple(METHODS) == REGISTERED


def _missing(text: str) -> list[str]:
    return [m for m in REGISTERED if m not in text]


def test_decode_settings_method_help_lists_every_method():
    assert _missing(method_help()) == []


def test_cli_method_help_lists_every_method(capsys):
    with pytest.raises(SystemExit):
        main(["run", "pope", "--help"])
    help_text = capsys.readouterr().out
    section = help_text[help_text.index("--method") : help_text.index("--out")]
    assert _missing(section) == []


def test_card_lists_every_method_as_generated(tmp_path):
    card = CARD.read_text(encoding="utf-8")
    assert card_methods() in card, "custom_generate/README.md is stale: run hf_generate.write_card_methods on it"
    assert [m for m in REGISTERED if f"`{m}`" not in card_methods()] == []
    stale = tmp_path / "README.md"
    stale.write_text(card.replace("  - `only`", "  - `old`"), encoding="utf-8")
    write_card_methods(stale)
    assert stale.read_text(encoding="utf-8") == card


def test_card_without_markers_is_refused(tmp_path):
    bare = tmp_path / "README.md"
    bare.write_text("# no list here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no .* block"):
        write_card_methods(bare)


def test_help_on_the_package_settings_shows_methods_and_options():
    """help(avisc_lib.DecodeSettings) used to raise AttributeError: the package did not export it."""
    text = pydoc.render_doc(avisc_lib.DecodeSettings, renderer=pydoc.plaintext)
    assert _missing(text[text.index("Methods:") :]) == []
    assert [f.name for f in decode_options() if f"{f.name} = " not in text] == []
    assert avisc_lib.METHODS == METHODS and "DecodeSettings" in avisc_lib.__all__


def test_readme_method_table_is_generated_from_the_registry():
    script = load_script("readme_methods")
    readme = (CARD.parents[1] / "README.md").read_text(encoding="utf-8")
    assert script.with_table(readme) == readme, "README.md's method table is stale: run scripts/readme_methods.py"
    assert [m for m in REGISTERED if f"| `{m}` |" not in readme] == []
