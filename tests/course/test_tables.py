"""The notebooks' helpers: paper tables, caption marking, mean ± std, preloaded runs, first-token controls."""

import json

import pandas as pd
import pytest

from avisc_lib.benchmarks import run_benchmark
from avisc_lib.benchmarks.store import ConfigMismatch
from avisc_lib.course import paper
from avisc_lib.course import tables as views
from avisc_lib.models.loading import load_model


def test_paper_pope_is_consistent():
    table = paper.paper_pope(None)
    assert len(table) == 36 and set(table.dataset) == {"COCO", "A-OKVQA", "GQA"}
    f1 = 2 * table.precision * table.recall / (table.precision + table.recall)
    assert (f1 - table.f1).abs().max() < 0.02  # every LLaVA row satisfies F1 = 2PR/(P+R) within rounding
    coco = paper.paper_pope()
    row = coco[(coco.split == "adversarial") & (coco.method == "AvisC")].iloc[0]
    assert (row.accuracy, row.f1) == (77.53, 79.64)
    with pytest.raises(ValueError, match="unknown POPE dataset"):
        paper.paper_pope("VQAv2")


def test_paper_mme_and_amber():
    mme = paper.paper_mme()
    assert mme.loc["AvisC", "total"] == 528.09 and mme.loc["base", "existence_std"] == 8.16
    parts = mme[["existence", "count", "position", "color"]].sum(axis=1)
    assert (parts - mme.total).abs().max() < 0.05
    amber = paper.paper_amber()
    score = (100 - amber.loc["chair"] + amber.loc["f1"]) / 2
    for method in paper.PAPER_METHODS:
        assert abs(score[method] - amber.loc["amber_score", method]) < 0.03


def test_mean_std():
    frame = pd.DataFrame({"m": ["a", "a", "b"], "x": [1.0, 3.0, 5.0]})
    out = views.mean_std(frame, "m", ["x"])
    assert out.loc["a", "x"] == "2.00 ± 1.41" and out.loc["b", "x"] == "5.00 ± 0.00"


def test_mark_caption_world_phrases():
    text, hallucinated = views.mark_caption(
        "A red circle, two blue squares and a green triangle.", ["red circle", "blue square"]
    )
    assert text == "A **red circle**, two **blue squares** and a ~~green triangle~~."
    assert hallucinated == ["green triangle"]


def test_mark_caption_with_a_vocabulary():
    pattern = views.phrase_pattern(["dog", "bench", "tree"])
    text, hallucinated = views.mark_caption("Two dogs sit on a bench near a tree.", ["dog", "bench"], pattern)
    assert text == "Two **dogs** sit on a **bench** near a ~~tree~~." and hallucinated == ["tree"]
    with pytest.raises(ValueError):
        views.phrase_pattern([])


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def _run_loaded(model, processor, benchmark, **kwargs):
    return run_benchmark(benchmark, model=model, processor=processor, **kwargs)


def test_preloaded_model_matches_run_benchmark(tiny, tmp_path):
    kwargs = dict(model_name="tiny", method="avisc", split="adversarial", limit=12, batch_size=5, seed=3)
    reference = run_benchmark("pope", out_dir=tmp_path / "a", **kwargs)
    ours = _run_loaded(*tiny, "pope", out_dir=tmp_path / "b", progress=False, **kwargs)
    assert ours == reference
    assert (tmp_path / "a" / "answers.jsonl").read_text() == (tmp_path / "b" / "answers.jsonl").read_text()
    assert _run_loaded(*tiny, "pope", out_dir=tmp_path / "a", progress=False, **kwargs) == reference  # resumes
    with pytest.raises(ConfigMismatch):
        _run_loaded(*tiny, "pope", out_dir=tmp_path / "a", progress=False, **{**kwargs, "method": "vcd"})


def test_question_seed_fixes_the_questions(tiny, tmp_path):
    kwargs = dict(model_name="tiny", method="greedy", split="hallucination", limit=4, batch_size=8, progress=False)
    _run_loaded(*tiny, "mme", out_dir=tmp_path / "a", seed=1, question_seed=0, **kwargs)
    _run_loaded(*tiny, "mme", out_dir=tmp_path / "b", seed=0, **kwargs)

    def read(folder):
        return [json.loads(x)["question"] for x in (tmp_path / folder / "answers.jsonl").read_text().splitlines()]

    assert read("a") == read("b")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["question_seed"] == 0
