"""load_model: names, local folders (LLaVA and InstructBLIP saved from tiny configs), errors."""

import pytest
import torch
from conftest import instructblip_processor, tiny_instructblip
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor, LlavaForConditionalGeneration

import avisc_lib
from avisc_lib.models import loading as models
from avisc_lib.tiny.build import build_model, build_processor


def test_known_names_resolve_without_downloading():
    assert models.resolve("llava") == ("llava-hf/llava-1.5-7b-hf", LlavaForConditionalGeneration)
    path, cls = models.resolve("Salesforce/instructblip-vicuna-7b")
    assert cls is InstructBlipForConditionalGeneration and path == "Salesforce/instructblip-vicuna-7b"


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model 'gpt-vision'.*tiny.*llava-hf/llava-1.5-7b-hf"):
        avisc_lib.load_model("gpt-vision")


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder at.*known model names"):
        avisc_lib.load_model(str(tmp_path / "nothing" / "here"))


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        avisc_lib.load_model(str(tmp_path))


def test_unsupported_model_type_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="'bert' model; supported model types"):
        avisc_lib.load_model(str(tmp_path))


def test_bad_quantization_is_rejected():
    with pytest.raises(ValueError, match="quantization must be one of"):
        avisc_lib.load_model("tiny", quantization="3bit")


def test_dtype_defaults():
    assert models.default_dtype(torch.device("cuda")) == torch.float16
    assert models.default_dtype(torch.device("cpu")) == torch.float32


def test_local_llava_folder_round_trips(tmp_path):
    processor = build_processor()
    model = build_model(processor.tokenizer, seed=3)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = avisc_lib.load_model(str(tmp_path), device="cpu", dtype=torch.bfloat16)
    assert isinstance(loaded, LlavaForConditionalGeneration) and not loaded.training
    assert loaded.dtype == torch.bfloat16
    assert loaded_processor.tokenizer.image_token_id == processor.tokenizer.image_token_id
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a.to(torch.bfloat16), b, msg=name)


def test_local_instructblip_folder_loads(tmp_path):
    processor = instructblip_processor()
    processor.save_pretrained(tmp_path)
    tiny_instructblip(processor.tokenizer).save_pretrained(tmp_path)
    loaded, processor = avisc_lib.load_model(tmp_path, device="cpu")
    assert isinstance(loaded, InstructBlipForConditionalGeneration)
    assert loaded.dtype == torch.float32
    assert isinstance(processor, InstructBlipProcessor)


def test_embedded_tiny_model_loads_offline():
    model, processor = avisc_lib.load_model("tiny", device="cpu")
    assert isinstance(model, LlavaForConditionalGeneration)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert (models.tiny_model_path() / "model.safetensors").stat().st_size < 30 * 2**20
