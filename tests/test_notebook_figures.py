"""The rule that the committed figures are the notebooks' own (tests/notebook_rules.py)."""

import os

import pytest

from notebook_rules import draws_committed_figures, figure_differences, figures_drawn_into


def _pngs(folder, **files):
    folder.mkdir()
    for name, data in files.items():
        (folder / f"{name}.png").write_bytes(data)
    return folder


def test_the_same_bytes_pass(tmp_path):
    drawn = _pngs(tmp_path / "drawn", **{"05_mme_scores": b"png"})
    committed = _pngs(tmp_path / "figures", **{"05_mme_scores": b"png", "06_amber_metrics": b"other notebook"})
    assert figure_differences(drawn, committed, "05_mme") == []


@pytest.mark.parametrize("drawn, committed, says", [
    ({"05_mme_scores": b"new"}, {"05_mme_scores": b"old"}, "05_mme_scores.png: differs from figures/"),
    ({"05_mme_scores": b"png", "05_extra": b"png"}, {"05_mme_scores": b"png"}, "05_extra.png: drawn by 05_mme but not"),
    ({}, {"05_mme_scores": b"png"}, "figures/05_mme_scores.png: no longer drawn by 05_mme"),
], ids=["changed", "new", "stale"])
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
        assert (os.environ["AVISC_FIGURES"], os.environ["AVISC_RUNS_DIR"]) == (str(tmp_path / "scratch"), str(tmp_path / "runs"))
    assert "AVISC_FIGURES" not in os.environ and "AVISC_RUNS_DIR" not in os.environ
