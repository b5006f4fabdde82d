"""The paper's tables per model and dataset, and our POPE rows set beside them dataset by dataset."""

import itertools

import pandas as pd
import pytest

from avisc_lib.course import paper
from avisc_lib.course import tables as views

SPLITS = ["random", "popular", "adversarial"]
# The one POPE row whose printed F1 does not follow from its precision and recall (a typo in the paper).
INCONSISTENT = {("instructblip", "COCO", "random", "VCD")}


@pytest.mark.parametrize("model", paper.PAPER_MODELS)
@pytest.mark.parametrize("dataset", ["COCO", "A-OKVQA", "GQA"])
def test_pope_rows_per_dataset_are_consistent(model, dataset):
    table = paper.paper_pope(dataset, model)
    assert set(table.dataset) == {dataset} and len(table) == 12
    assert list(zip(table.split, table.method)) == list(itertools.product(SPLITS, paper.PAPER_METHODS))
    for row in table.itertuples():
        f1 = 2 * row.precision * row.recall / (row.precision + row.recall)
        if (model, dataset, row.split, row.method) not in INCONSISTENT:
            assert f1 == pytest.approx(row.f1, abs=0.05), row  # the paper rounds P and R first


def test_the_two_models_have_different_numbers():
    llava, instructblip = paper.paper_pope(None, "llava"), paper.paper_pope(None, "instructblip")
    assert len(llava) == len(instructblip) == 36
    assert not llava.accuracy.equals(instructblip.accuracy)


@pytest.mark.parametrize("model", paper.PAPER_MODELS)
def test_mme_total_is_the_sum_of_subtasks(model):
    table = paper.paper_mme(model)
    subtasks = table[["existence", "count", "position", "color"]].sum(axis=1)
    assert (subtasks - table.total).abs().max() < 0.02


@pytest.mark.parametrize("model", paper.PAPER_MODELS)
def test_amber_score_formula_holds(model):
    table = paper.paper_amber(model)
    for method in paper.PAPER_METHODS:
        score = (100 - table.loc["chair", method] + table.loc["f1", method]) / 2
        assert score == pytest.approx(table.loc["amber_score", method], abs=0.03), method


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="no paper numbers for model 'llava-13b'"):
        paper.paper_pope("COCO", "llava-13b")


def _ours() -> pd.DataFrame:
    """Made-up results on two datasets: accuracy = 50 + 10 * (split number) + method number."""
    methods = ["greedy", "vcd", "m3id", "avisc"]
    rows = [
        {"dataset": d, "split": s, "method": m, "accuracy": 50.0 + 10 * i + j, "f1": 40.0 + j}
        for d in ("coco", "gqa")
        for i, s in enumerate(SPLITS)
        for j, m in enumerate(methods)
    ]
    return pd.DataFrame(rows)


def test_pope_beside_paper_takes_the_same_dataset():
    side = views.pope_beside_paper(_ours(), "gqa", base="greedy", model="instructblip")
    reported = paper.paper_pope("GQA", "instructblip").set_index(["split", "method"])
    assert side.loc[("popular", "avisc"), "accuracy (paper)"] == reported.loc[("popular", "AvisC"), "accuracy"]
    assert side.loc[("random", "greedy"), "f1 (paper)"] == reported.loc[("random", "base"), "f1"]
    gain = reported.loc[("adversarial", "VCD"), "accuracy"] - reported.loc[("adversarial", "base"), "accuracy"]
    assert side.loc[("adversarial", "vcd"), "Δ accuracy (paper)"] == pytest.approx(gain)
    assert side["Δ accuracy"].tolist() == [0.0, 1.0, 2.0, 3.0] * 3  # each method minus greedy, per split
    assert len(side) == 12


def test_pope_beside_paper_errors():
    with pytest.raises(ValueError, match="the paper has no POPE dataset 'synthetic'; pass paper_dataset"):
        views.pope_beside_paper(_ours().assign(dataset="synthetic"), "synthetic")
    with pytest.raises(ValueError, match="no 'sample' rows for dataset 'coco'"):
        views.pope_beside_paper(_ours(), "coco")
    synthetic = _ours().query("dataset == 'coco'").assign(dataset="synthetic")
    side = views.pope_beside_paper(synthetic, "synthetic", paper_dataset="COCO", base="greedy")
    assert side.loc[("random", "avisc"), "accuracy (paper)"] == 87.93


def test_beyond_avisc_numbers_carry_sources_and_our_method_names():
    from avisc_lib.course.paper import paper_beyond
    from avisc_lib.decoding import METHODS

    table = paper_beyond()
    assert table.source.str.len().gt(20).all()
    assert set(table.method) <= set(METHODS)
    only = table[table.method == "only"].set_index("metric").value
    assert (only["accuracy"], only["f1"], only["total"]) == (89.70, 89.10, 635.55)


def test_beyond_numbers_cite_papers_or_repositories_not_issues():
    from avisc_lib.course.paper import paper_beyond

    table = paper_beyond()
    assert not table.source.str.contains("issue", case=False).any()
    only = table[table.paper_method == "ONLY"].source
    assert only.str.contains("arXiv 2507.00898").all() and only.str.contains("table").all()
