"""The rule that the committed figures are the notebooks' own (tests/notebook_rules.py)."""

import os

import pytest
from notebook_rules import draws_committed_figures, figure_differences, figures_drawn_into
from PIL import Image


def _pngs(folder, **files):
    """PNGs of one pixel each, its value given per file; a metadata text that differs per folder."""
    folder.mkdir()
    for name, value in files.items():
        image = Image.new("RGB", (1, 1), (value, 0, 0))
        image.save(folder / f"{name}.png", pnginfo=_software(folder.name))
    return folder


def _software(text):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", text)
    return info


def test_the_same_bytes_pass(tmp_path):
    drawn = _pngs(tmp_path / "drawn", **{"05_mme_scores": 1})
    committed = _pngs(tmp_path / "figures", **{"05_mme_scores": 1, "06_amber_metrics": 2})
    assert (drawn / "05_mme_scores.png").read_bytes() != (committed / "05_mme_scores.png").read_bytes()
    assert figure_differences(drawn, committed, "05_mme") == []  # same pixels, other metadata


@pytest.mark.parametrize(
    "drawn, committed, says",
    [
        ({"05_mme_scores": 1}, {"05_mme_scores": 2}, "05_mme_scores.png: differs from figures/"),
        ({"05_mme_scores": 1, "05_extra": 1}, {"05_mme_scores": 1}, "05_extra.png: drawn by 05_mme but not"),
        ({}, {"05_mme_scores": 1}, "figures/05_mme_scores.png: no longer drawn by 05_mme"),
    ],
    ids=["changed", "new", "stale"],
)
def test_changed_new_and_stale_figures_are_named(tmp_path, drawn, committed, says):
    found = figure_differences(_pngs(tmp_path / "drawn", **drawn), _pngs(tmp_path / "figures", **committed), "05_mme")
    assert len(found) == 1 and found[0].startswith(says)


def test_only_the_tiny_profile_on_cpu_draws_the_committed_figures(monkeypatch):
    for name in ("AVISC_PROFILE", "AVISC_MODEL", "AVISC_LIMIT", "AVISC_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert draws_committed_figures()
    monkeypatch.setenv("AVISC_LIMIT", "3")
    assert not draws_committed_figures()
    monkeypatch.delenv("AVISC_LIMIT")
    monkeypatch.setenv("AVISC_PROFILE", "llava")
    assert not draws_committed_figures()


def test_figures_go_to_the_scratch_folder_and_runs_stay_put(tmp_path, monkeypatch):
    monkeypatch.delenv("AVISC_FIGURES", raising=False)
    monkeypatch.delenv("AVISC_RUNS_DIR", raising=False)
    with figures_drawn_into(tmp_path / "scratch", tmp_path / "runs"):
        assert (os.environ["AVISC_FIGURES"], os.environ["AVISC_RUNS_DIR"]) == (
            str(tmp_path / "scratch"),
            str(tmp_path / "runs"),
        )
    assert "AVISC_FIGURES" not in os.environ and "AVISC_RUNS_DIR" not in os.environ
