"""Tiny seeded VLMs built from configs (no downloads), their processors, and batch helpers.

Cases: "llava" (CLIP + Llama, random), "llava_gqa" (grouped-query attention), "instructblip"
(ViT + Q-Former + Llama, 8 query tokens), "embedded" (the trained tiny model when
``avisc_lib/tiny/weights`` exists, else the same architecture with random weights).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from transformers import (
    AddedToken,
    AutoProcessor,
    BlipImageProcessorPil,
    CLIPVisionConfig,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    ProcessorMixin,
)

from avisc_lib.benchmarks import synthetic
from avisc_lib.models.inputs import encode
from avisc_lib.tiny.build import PATCH_SIZE, build_model, build_processor, build_tokenizer
from avisc_lib.world.scenes import IMAGE_SIZE, make_scene

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_WEIGHTS = ROOT / "avisc_lib" / "tiny" / "weights"
# The repository's redistributable benchmark files (POPE, AMBER), as download.fetch finds them.
DATA = Path(__file__).resolve().parents[1] / "data"
QUESTIONS = [
    "Is there a red circle in the image?",
    "What colour is the square?",
    "How many objects are there?",
    "Is the blue triangle to the left of the green square in this picture?",
]


def load_script(name: str, module_name: str | None = None):
    """The module of ``scripts/<name>.py`` (scripts/ is no package), registered in ``sys.modules`` under
    ``module_name`` (default ``name``), as a dataclass or a pickle in it needs."""
    spec = importlib.util.spec_from_file_location(module_name or name, ROOT / "scripts" / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Case:
    """A model, its processor, and (built on first use) an eager-attention twin for references."""

    name: str
    model: PreTrainedModel
    processor: ProcessorMixin
    _eager: PreTrainedModel | None = field(default=None, repr=False)

    @property
    def eager(self) -> PreTrainedModel:
        if self._eager is None:
            self._eager = copy.deepcopy(self.model)
            self._eager.set_attn_implementation("eager")
        return self._eager

    def batch(self, n: int = 4) -> dict[str, torch.Tensor]:
        """``n`` scenes with questions of different lengths, left-padded."""
        images = [make_scene("test", i).image for i in range(n)]
        return encode(self.model, self.processor, images, [QUESTIONS[i % len(QUESTIONS)] for i in range(n)])


def eager_scores(query, key, value, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention parts for test references: ``QK^T / sqrt(d)`` ``[B, H, q, k]`` and the values
    ``[B, H, k, d]``, grouped key/value heads repeated, in ``dtype``."""
    groups = query.shape[1] // key.shape[1]
    keys, values = (t.repeat_interleave(groups, dim=1).to(dtype) for t in (key, value))
    return query.to(dtype) @ keys.transpose(2, 3) / math.sqrt(query.shape[-1]), values


def row(inputs: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """Sample ``b`` of a batch as its own B = 1 input, padding removed."""
    out = {}
    for key, value in inputs.items():
        value = value[b : b + 1]
        if key.endswith(("input_ids", "attention_mask")):
            mask_key = "qformer_attention_mask" if key.startswith("qformer_") else "attention_mask"
            value = value[:, inputs[mask_key][b].bool()]
        out[key] = value
    return out


def _text_config(tokenizer, **sizes) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        max_position_embeddings=256,
        initializer_range=0.2,
        **sizes,  # 10x the default: peaked logits, so no near-ties in argmax
    )


def tiny_llava(tokenizer, kv_heads: int, seed: int) -> LlavaForConditionalGeneration:
    """CLIP + Llama, 3 layers, 4 query heads sharing ``kv_heads`` key/value heads."""
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = _text_config(
        tokenizer,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval()


def tiny_instructblip(tokenizer, seed: int = 2) -> InstructBlipForConditionalGeneration:
    """ViT + Q-Former (8 queries) + Llama, 32 px images."""
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        qformer_config=InstructBlipQFormerConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            pad_token_id=tokenizer.pad_token_id,
        ),
        text_config=_text_config(
            tokenizer,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        ),
        num_query_tokens=8,
        image_token_index=tokenizer.image_token_id,
    )
    torch.manual_seed(seed)
    return InstructBlipForConditionalGeneration(config).eval()


def instructblip_processor() -> InstructBlipProcessor:
    qformer_tokenizer = build_tokenizer()
    qformer_tokenizer.padding_side = "right"  # BERT-style absolute positions
    processor = InstructBlipProcessor(
        BlipImageProcessorPil(size={"height": 32, "width": 32}),
        build_tokenizer(),
        qformer_tokenizer,
        num_query_tokens=8,
    )
    # The processor expects an AddedToken here (it reads ``.content``); ours comes from the tokenizer as a str.
    processor.image_token = AddedToken("<image>", normalized=False, special=True)
    return processor


def scene_images(folder: Path, names: Iterable[str]) -> Path:
    """``folder`` with a synthetic scene saved under each of ``names`` (four scenes, hard-linked in turn)."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes = []
    for i in range(4):
        scenes.append(folder / f"_scene{i}.jpg")
        synthetic.load_image(synthetic.image_name("test", i)).save(scenes[-1])
    for i, name in enumerate(names):
        os.link(scenes[i % 4], folder / name)
    for scene in scenes:
        scene.unlink()
    return folder


def save_model_folder(folder: Path, model: PreTrainedModel, processor: ProcessorMixin) -> Path:
    """``folder`` holding ``model`` and ``processor`` as ``load_model`` reads a local folder."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llava_case() -> Case:
    processor = build_processor()
    return Case("llava", tiny_llava(processor.tokenizer, kv_heads=4, seed=0), processor)


@pytest.fixture(scope="session")
def llava_gqa_case() -> Case:
    processor = build_processor()
    return Case("llava_gqa", tiny_llava(processor.tokenizer, kv_heads=2, seed=1), processor)


@pytest.fixture(scope="session")
def instructblip_case() -> Case:
    processor = instructblip_processor()
    return Case("instructblip", tiny_instructblip(processor.tokenizer), processor)


@pytest.fixture(scope="session")
def embedded_case() -> Case:
    if (EMBEDDED_WEIGHTS / "model.safetensors").exists():
        model = LlavaForConditionalGeneration.from_pretrained(EMBEDDED_WEIGHTS).eval()
        return Case("embedded", model, AutoProcessor.from_pretrained(EMBEDDED_WEIGHTS))
    processor = build_processor()
    return Case("embedded", build_model(processor.tokenizer, seed=3).eval(), processor)


CASES = ["llava", "llava_gqa", "instructblip", "embedded"]


@pytest.fixture(params=CASES)
def case(request) -> Case:
    return request.getfixturevalue(f"{request.param}_case")
