"""generate(), prompt styles, batch encoding, and first-answer-token logits."""

from __future__ import annotations

import pytest
import torch
from conftest import QUESTIONS, row

from avisc_lib.decoding import decode
from avisc_lib.generation import answer_logits, candidate_token_ids, generate
from avisc_lib.models.inputs import encode
from avisc_lib.models.prompts import LLAVA_V1_SYSTEM, build_prompt
from avisc_lib.world.scenes import make_scene

IMAGES = [make_scene("test", i).image for i in range(5)]
QS = [QUESTIONS[i % len(QUESTIONS)] for i in range(5)]


def test_answers_are_decoded_strings_independent_of_batch_size(case):
    answers = generate(case.model, case.processor, IMAGES, QS, method="avisc", batch_size=2, max_new_tokens=6)
    assert len(answers) == 5 and all(isinstance(a, str) and a == a.strip() for a in answers)
    assert answers == generate(case.model, case.processor, IMAGES, QS, method="avisc", batch_size=5, max_new_tokens=6)
    tokens = decode(
        case.model, encode(case.model, case.processor, IMAGES[:1], QS[:1]), method="avisc", max_new_tokens=6
    )
    assert answers[0] == case.processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()


def test_length_mismatch_is_an_error(llava_case):
    with pytest.raises(ValueError, match="got 5 images for 4 questions"):
        generate(llava_case.model, llava_case.processor, IMAGES, QS[:4], method="greedy")


def test_decode_errors_reach_the_caller(llava_case):
    with pytest.raises(ValueError, match="unknown keyword argument.*cd_beta"):
        generate(llava_case.model, llava_case.processor, IMAGES[:1], QS[:1], method="avisc", cd_beta=0.1)
    with pytest.raises(ValueError, match="batch_size must be"):
        generate(llava_case.model, llava_case.processor, IMAGES[:1], QS[:1], method="avisc", batch_size=0)


def test_llava_prompt_styles(llava_case):
    model, processor = llava_case.model, llava_case.processor
    hf = build_prompt(model, processor, "Is there a cat?")
    assert hf == "USER: <image>\nIs there a cat? ASSISTANT:"  # the processor's chat template
    assert build_prompt(model, processor, "Is there a cat?", "llava_v1") == (
        f"{LLAVA_V1_SYSTEM} USER: <image>\nIs there a cat? ASSISTANT:"
    )
    with pytest.raises(ValueError, match="unknown prompt_style 'raw' for llava"):
        build_prompt(model, processor, "Is there a cat?", "raw")


def test_llava_v1_prompt_is_used_end_to_end(llava_case):
    inputs = encode(llava_case.model, llava_case.processor, IMAGES[:1], QS[:1], "llava_v1")
    text = llava_case.processor.tokenizer.decode(inputs["input_ids"][0])
    # the tiny word-level tokenizer lower-cases and knows few of the system prompt's words
    assert text.startswith("<s> a <unk> <unk> a <unk> <unk> and an") and text.endswith("image? assistant :")


def test_instructblip_prompt_is_the_raw_question(instructblip_case):
    assert build_prompt(instructblip_case.model, instructblip_case.processor, "Is there a cat?") == "Is there a cat?"


def test_instructblip_batches_pad_llm_left_and_qformer_right(instructblip_case):
    inputs = instructblip_case.batch(4)
    mask, qmask = inputs["attention_mask"], inputs["qformer_attention_mask"]
    assert (mask == 0).any() and (mask.diff(dim=-1) >= 0).all()  # left padding
    assert (qmask[:, 0] == 1).all() and (qmask == 0).any()
    padded = int(torch.nonzero(qmask.sum(-1) < qmask.shape[1])[0])
    alone = encode(
        instructblip_case.model, instructblip_case.processor, [make_scene("test", padded).image], [QUESTIONS[padded]]
    )
    for key in alone:
        assert torch.equal(row(inputs, padded)[key], alone[key]), key


def test_answer_logits_for_yes_and_no(case):
    words = ["yes", "no"]
    ids = candidate_token_ids(case.processor, words)
    assert len(set(ids)) == 2
    inputs = case.batch(3)
    got = answer_logits(case.model, inputs, ids)
    assert got.shape == (3, 2) and got.dtype == torch.float32
    alone = answer_logits(case.model, row(inputs, 2), ids)
    torch.testing.assert_close(got[2:], alone, atol=1e-5, rtol=1e-5)


def test_unknown_candidate_word(llava_case):
    with pytest.raises(ValueError, match="does not know"):
        candidate_token_ids(llava_case.processor, ["yes", "zebra"])


def test_answer_tokens_follow_the_prompt(case):
    """On the word-level tokenizers (lower-casing) "Yes" after the prompt is the id of "yes"."""
    from avisc_lib.generation import answer_token_ids

    expected = [case.processor.tokenizer.convert_tokens_to_ids(w) for w in ("yes", "no")]
    assert answer_token_ids(case.model, case.processor) == expected


def test_answer_words_must_start_differently(llava_case):
    from avisc_lib.generation import answer_token_ids

    with pytest.raises(ValueError, match="same token"):
        answer_token_ids(llava_case.model, llava_case.processor, ["Yes", "yes"])
