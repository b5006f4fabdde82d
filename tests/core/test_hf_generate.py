"""``model.generate(custom_generate=...)`` gives ``decode``'s tokens, by callable and by local folder."""

from pathlib import Path

import pytest
import torch
from conftest import row
from transformers import LogitsProcessorList, StoppingCriteriaList, TopKLogitsWarper
from transformers.generation.stopping_criteria import MaxLengthCriteria
from transformers.generation.streamers import BaseStreamer
from transformers.generation.utils import GenerationMixin

from avisc_lib import custom_generate, decode
from avisc_lib.decoding import METHODS

FOLDER = Path(__file__).resolve().parents[2] / "custom_generate"
NEW_TOKENS = 4


def sampling_modes(method: str) -> list[bool]:
    """do_sample values that make sense for ``method`` (greedy never samples, sample always does)."""
    return {"greedy": [False], "sample": [True]}.get(method, [False, True])


def hf_generate(case, inputs, loop, **kwargs) -> torch.Tensor:
    """generate with a custom loop; InstructBLIP through the standard generate (its own skips the image)."""
    generate = GenerationMixin.generate if case.name == "instructblip" else type(case.model).generate
    return generate(case.model, **inputs, custom_generate=loop, max_new_tokens=NEW_TOKENS, **kwargs)


def padded_after_eos(tokens: torch.Tensor, eos: set[int], pad: int) -> torch.Tensor:
    """``tokens [B, T]`` with every position after a row's first EOS set to ``pad`` (written out per row)."""
    out = tokens.clone()
    for b in range(out.shape[0]):
        ends = [t for t in range(out.shape[1]) if int(out[b, t]) in eos]
        if ends:
            out[b, ends[0] + 1 :] = pad
    return out


@pytest.fixture(params=["embedded", "llava", "instructblip"])
def gen_case(request):
    return request.getfixturevalue(f"{request.param}_case")


@pytest.mark.parametrize("method", METHODS)
def test_tokens_equal_decode(gen_case, method):
    batch = gen_case.batch(3)
    assert not bool(batch["attention_mask"].all()), "the batch must hold left padding"
    eos = gen_case.model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    for inputs in (row(batch, 1), batch):
        for do_sample in sampling_modes(method):
            torch.manual_seed(7)
            expected = decode(gen_case.model, inputs, method=method, max_new_tokens=NEW_TOKENS, do_sample=do_sample)
            torch.manual_seed(7)
            out = hf_generate(gen_case, inputs, custom_generate(method), do_sample=do_sample, pad_token_id=5)
            prompt = inputs["input_ids"]
            assert torch.equal(out[:, : prompt.shape[1]], prompt)
            assert torch.equal(out[:, prompt.shape[1] :], padded_after_eos(expected, eos, pad=5)), (method, do_sample)


def test_hyper_parameters_and_generation_options_reach_decode(embedded_case):
    inputs = embedded_case.batch(2)
    options = dict(alpha=2.5, beta=0.2, seed=3)
    expected = decode(
        embedded_case.model,
        inputs,
        method="vcd",
        max_new_tokens=6,
        min_new_tokens=2,
        do_sample=True,
        temperature=0.7,
        top_k=5,
        top_p=0.9,
        **options,
    )
    out = embedded_case.model.generate(
        **inputs,
        custom_generate=custom_generate("vcd", **options),
        max_new_tokens=6,
        min_new_tokens=2,
        do_sample=True,
        temperature=0.7,
        top_k=5,
        top_p=0.9,
    )
    assert torch.equal(out[:, inputs["input_ids"].shape[1] :], expected)


def test_instructblip_own_generate_names_the_alternative(instructblip_case):
    with pytest.raises(ValueError, match="GenerationMixin.generate"):
        instructblip_case.model.generate(
            **instructblip_case.batch(2), custom_generate=custom_generate("avisc"), max_new_tokens=2
        )


@pytest.mark.parametrize(
    "arguments, named",
    [
        (dict(num_beams=2), "num_beams"),
        (dict(num_return_sequences=2, do_sample=True), "num_return_sequences"),
        (dict(penalty_alpha=0.6, top_k=4), "penalty_alpha"),
        (dict(return_dict_in_generate=True), "return_dict_in_generate"),
        (dict(repetition_penalty=1.3), "RepetitionPenaltyLogitsProcessor"),
        (dict(logits_processor=LogitsProcessorList([TopKLogitsWarper(3)])), "TopKLogitsWarper"),
        (dict(max_time=5.0), "MaxTimeCriteria"),
        (dict(eos_token_id=7), "eos_token_id"),
        (dict(max_length=10), "max_length"),
    ],
)
def test_unsupported_generate_arguments_raise(embedded_case, arguments, named):
    inputs = embedded_case.batch(1)
    arguments = {"max_new_tokens": 2, **arguments}
    if "max_length" in arguments:
        del arguments["max_new_tokens"]
    with pytest.raises(ValueError, match=named):
        embedded_case.model.generate(**inputs, custom_generate=custom_generate("avisc"), **arguments)


class SilentStreamer(BaseStreamer):
    def put(self, value):
        pass

    def end(self):
        pass


def test_arguments_transformers_drops_still_raise(embedded_case, llava_case):
    inputs = embedded_case.batch(1)
    loop = custom_generate("avisc")
    with pytest.raises(ValueError, match="assistant_model"):
        embedded_case.model.generate(**inputs, custom_generate=loop, max_new_tokens=2, assistant_model=llava_case.model)
    with pytest.raises(ValueError, match="streamer"):
        embedded_case.model.generate(**inputs, custom_generate=loop, max_new_tokens=2, streamer=SilentStreamer())
    stop = StoppingCriteriaList([MaxLengthCriteria(max_length=200)])
    with pytest.raises(ValueError, match="stopping_criteria"):
        embedded_case.model.generate(**inputs, custom_generate=loop, max_new_tokens=2, stopping_criteria=stop)


def test_custom_generate_validates_its_own_arguments(embedded_case):
    with pytest.raises(ValueError, match="max_new_tokens"):
        custom_generate("avisc", max_new_tokens=8)
    with pytest.raises(ValueError, match="unknown method"):
        custom_generate("beam")
    with pytest.raises(ValueError, match="alpha"):
        custom_generate("avisc", alpha=-1)
    with pytest.raises(ValueError, match="do_sample=True"):
        embedded_case.model.generate(
            **embedded_case.batch(1), custom_generate=custom_generate("sample"), max_new_tokens=2, do_sample=False
        )


def test_local_folder_form(embedded_case, tmp_path, monkeypatch):
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE", str(tmp_path))
    inputs = embedded_case.batch(2)
    expected = decode(embedded_case.model, inputs, method="avisc", alpha=2.5, max_new_tokens=NEW_TOKENS)
    out = embedded_case.model.generate(
        **inputs,
        custom_generate=str(FOLDER),
        trust_remote_code=True,
        method="avisc",
        alpha=2.5,
        max_new_tokens=NEW_TOKENS,
    )
    assert torch.equal(out[:, inputs["input_ids"].shape[1] :], expected)
    with pytest.raises(ValueError, match="trust_remote_code"):  # opt-in remote code, even from a local folder
        embedded_case.model.generate(**inputs, custom_generate=str(FOLDER), method="avisc", max_new_tokens=2)


def test_folder_is_a_hub_repository():
    card = (FOLDER / "README.md").read_text()
    metadata = card.split("---")[1]
    assert "custom_generate" in metadata
    assert (FOLDER / "custom_generate" / "generate.py").is_file()
    requirements = (FOLDER / "custom_generate" / "requirements.txt").read_text().split()
    assert any(line.startswith("avisc-tutorial") for line in requirements)
