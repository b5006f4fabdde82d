"""Packaging: environment.yml agrees with pyproject.toml; the tiny processor matches training."""

import re
from pathlib import Path

import numpy as np
import pytest
import tomllib

from avisc_lib.tiny.build import NUM_IMAGE_TOKENS, build_processor
from avisc_lib.tiny.data import pixel_values, prompt_text
from avisc_lib.world.scenes import make_scene

ROOT = Path(__file__).resolve().parents[2]


def _normalise(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def _conda_pip_requirements() -> list[str]:
    """The ``pip:`` block of environment.yml (a flat list of requirement strings)."""
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = []
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if not stripped.startswith("- "):
            break
        reqs.append(stripped[2:])
    return reqs


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["dev"]
    assert sorted(map(_normalise, _conda_pip_requirements())) == sorted(map(_normalise, expected))


def test_environment_yml_names_the_lmms_extra():
    """The lmms extra stays out of the conda environment, but its comment there lists it in full."""
    lmms = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["lmms"]
    text = _normalise((ROOT / "environment.yml").read_text())
    assert [req for req in lmms if _normalise(req) not in text] == []


def test_environment_yml_python_matches_requires_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"python{project['requires-python']}" in (ROOT / "environment.yml").read_text()


@pytest.fixture(scope="module")
def processor():
    return build_processor()


def test_chat_template_is_llava_15_style(processor):
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a red circle?"}]}
    ]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt == "USER: <image>\nIs there a red circle? ASSISTANT:"


def test_training_inputs_equal_processor_inputs(processor):
    scene = make_scene("test", 0)
    question = "Is there a red circle in the image?"
    enc = processor(images=scene.image, text=f"USER: <image>\n{question} ASSISTANT:", return_tensors="pt")
    assert enc["input_ids"][0].tolist() == processor.tokenizer(prompt_text(question))["input_ids"]
    assert (enc["input_ids"] == processor.tokenizer.image_token_id).sum() == NUM_IMAGE_TOKENS
    np.testing.assert_array_equal(enc["pixel_values"].numpy(), pixel_values([scene.image]).numpy())


def test_tokenizer_round_trips_answers(processor):
    tok = processor.tokenizer
    text = "a red circle, a blue square and a green triangle."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok("Yes")["input_ids"][0] == tok.bos_token_id
    assert tok.unk_token_id not in tok("Is there a yellow triangle in the image?")["input_ids"]
