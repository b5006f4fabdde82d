"""Observation / ablation measurements on hand-made tensors and on the tiny model."""

import matplotlib
import pytest
import torch

import avisc_lib
from avisc_lib.course import ablation as analysis
from avisc_lib.course import plotting
from avisc_lib.world.questions import existence_set

matplotlib.use("Agg")


def test_random_like_keeps_row_counts():
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    rand = analysis.random_like(mask, torch.Generator().manual_seed(0))
    assert rand.sum(-1).tolist() == [2, 1, 0]
    again = analysis.random_like(mask, torch.Generator().manual_seed(0))
    assert torch.equal(rand, again)


def test_attention_summary_by_hand():
    attention = torch.tensor([[[0.1, 0.1, 0.2, 0.0], [0.3, 0.1, 0.0, 0.0]]])  # [1, 2 layers, 4 tokens]
    blind = torch.tensor([[True, False, False, False]])
    on_object = torch.tensor([[True, True, False, False]])
    s = analysis.attention_summary(attention, blind, on_object, top_k=2)
    # mean over layers: [0.2, 0.1, 0.1, 0.0], sum 0.4
    assert s["image_share"].item() == pytest.approx(0.4)
    assert s["top1_share"].item() == pytest.approx(0.5)
    assert s["top2_share"].item() == pytest.approx(0.75)
    assert s["blind_on_object"].item() == 1.0 and s["object_token_rate"].item() == 0.5
    assert s["attention_on_object"].item() == pytest.approx(0.75)


def test_blind_overlap_extremes():
    same = torch.tensor([[1, 1, 0, 0]] * 3, dtype=torch.bool)
    assert analysis.blind_overlap(same)[0] == pytest.approx(1.0)
    disjoint = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    assert analysis.blind_overlap(disjoint)[0] == 0.0


@pytest.fixture(scope="module")
def study_inputs():
    model, processor = avisc_lib.load_model("tiny", device="cpu")
    items = existence_set("test", 3, start=900)
    return model, processor, [s.image for s, _ in items], [q["question"] for _, q in items]


def test_run_study_matches_direct_calls(study_inputs):
    model, processor, images, questions = study_inputs
    study = analysis.run_study(model, processor, images, questions, batch_size=4, seed=1)
    inputs = avisc_lib.encode(model, processor, images, questions)
    ids = avisc_lib.candidate_token_ids(processor, ["yes", "no"])
    torch.testing.assert_close(study.logits["original"], avisc_lib.answer_logits(model, inputs, ids))
    blind = avisc_lib.select_blind_tokens(avisc_lib.image_attention(model, inputs))
    assert torch.equal(study.blind, blind)
    torch.testing.assert_close(
        study.logits["keep blind only"], avisc_lib.answer_logits(model, inputs, ids, replace=~blind)
    )
    assert not torch.allclose(study.logits["zero all"], study.logits["original"])


def test_unknown_condition(study_inputs):
    model, processor, images, questions = study_inputs
    with pytest.raises(ValueError, match="unknown ablation conditions"):
        analysis.run_study(model, processor, images, questions, conditions=("zero half",))


def test_avisc_grid_alpha_zero_is_greedy(study_inputs):
    model, processor, images, questions = study_inputs
    inputs = avisc_lib.encode(model, processor, images[:1], questions[:1])
    ids = avisc_lib.candidate_token_ids(processor, ["yes", "no"])
    grid = analysis.avisc_grid(model, inputs, ids, alphas=[0, 1], betas=[0.1], lams=[1], layer_gammas=[0.5])
    greedy = avisc_lib.decode(model, inputs, method="greedy", max_new_tokens=1)[0, 0].item()
    avisc = avisc_lib.decode(model, inputs, method="avisc", alpha=1.0, max_new_tokens=1)[0, 0].item()
    assert grid.set_index("alpha").loc[0, "choice"] == greedy
    assert grid.set_index("alpha").loc[1, "choice"] == avisc


def test_figures_are_saved(tmp_path, monkeypatch, study_inputs):
    model, processor, images, questions = study_inputs
    monkeypatch.setenv("AVISC_FIGURES", str(tmp_path))
    inputs = avisc_lib.encode(model, processor, images[:1], questions[:1])
    attention = avisc_lib.image_attention(model, inputs)[0]
    fig, axes = matplotlib.pyplot.subplots(1, 3)
    plotting.token_bars(attention.mean(0), ax=axes[0])
    plotting.overlay(plotting.processed_image(processor, inputs["pixel_values"][0]), attention.mean(0), ax=axes[1])
    plotting.layer_heatmap(attention, ax=axes[2])
    path = plotting.save_figure(fig, "check")
    assert path == tmp_path / "check.png" and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="square grid"):
        plotting.overlay(plotting.processed_image(processor, inputs["pixel_values"][0]), torch.ones(32))
