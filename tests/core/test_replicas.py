"""Replica checkpoints: the real LLaVA-1.5 / InstructBLIP-Vicuna interfaces, tiny and random.

Expected values are the public checkpoints' (llava-hf/llava-1.5-7b-hf,
Salesforce/instructblip-vicuna-7b), written here independently of avisc_lib.models.replicas.
"""

import importlib.util
import json
import re
import shutil

import pytest
import torch
from transformers import InstructBlipForConditionalGeneration, LlavaForConditionalGeneration

from avisc_lib import (
    answer_logits,
    answer_token_ids,
    build_prompt,
    candidate_token_ids,
    decode,
    encode,
    image_attention,
    load_model,
    select_blind_tokens,
)
from avisc_lib.models.inputs import embed_prompt
from avisc_lib.models.prompts import LLAVA_V1_SYSTEM
from avisc_lib.models.replicas import build_replica, main
from avisc_lib.scores import contrast_logits
from avisc_lib.world.scenes import make_scene

LLAVA, IBLIP = "llava-1.5", "instructblip-vicuna"
# name -> (class, image token id, image tokens per prompt)
EXPECTED = {
    LLAVA: (LlavaForConditionalGeneration, 32000, 576),  # 24 x 24 patches of 14 px in 336 px
    IBLIP: (InstructBlipForConditionalGeneration, 32001, 32),  # Q-Former queries
}
QUESTIONS = ["Is there a dining table in the image?", "Describe this image."]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
# bitsandbytes' two CPU paths for a 4-bit layer, by the capability check that picks one.
CPU_KERNELS = {"dequantize": False, "avx512_bf16": True}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: build_replica(name, tmp_path_factory.mktemp(name)) for name in EXPECTED}


@pytest.fixture(scope="module", params=[LLAVA, IBLIP])
def fp16(request, folders):
    """``(name, model, processor, batch)`` loaded in float16 on CPU, a batch of two questions."""
    model, processor = load_model(folders[request.param], device="cpu", dtype=torch.float16)
    images = [make_scene("test", i).image for i in range(len(QUESTIONS))]
    return request.param, model, processor, encode(model, processor, images, QUESTIONS)


def tokens(processor, *pieces):
    return processor.tokenizer.convert_tokens_to_ids(list(pieces))


@pytest.mark.parametrize("name", EXPECTED)
def test_builds_are_deterministic_and_record_float16(name, folders, tmp_path):
    again = build_replica(name, tmp_path)
    assert (again / "model.safetensors").read_bytes() == (folders[name] / "model.safetensors").read_bytes()
    assert json.loads((again / "config.json").read_text())["dtype"] == "float16"


def test_command_line_writes_a_loadable_folder(tmp_path):
    main([IBLIP, str(tmp_path / "out")])
    model, _ = load_model(tmp_path / "out", device="cpu")
    assert isinstance(model, InstructBlipForConditionalGeneration)


@pytest.mark.parametrize("name", EXPECTED)
def test_loads_with_the_checkpoint_class_and_image_token_count(name, folders):
    model_class, image_id, count = EXPECTED[name]
    model, processor = load_model(folders[name], device="cpu")
    assert isinstance(model, model_class) and model.dtype == torch.float32
    batch = encode(model, processor, [make_scene("test", i).image for i in range(2)], QUESTIONS)
    assert (batch["input_ids"] == image_id).sum(-1).tolist() == [count, count]
    assert model.config.get_text_config().vocab_size == 32064


@pytest.mark.parametrize("name", EXPECTED)
def test_language_model_has_the_checkpoint_depth_and_kernel_valid_widths(name, folders):
    """32 decoder layers, as both 7B checkpoints; every linear layer 4-bit kernels accept.

    bitsandbytes' AVX512-BF16 path needs in_features divisible by 64 (the 4-bit block) and
    out_features by 32 (its packing block).
    """
    model, _ = load_model(folders[name], device="cpu")
    assert model.config.get_text_config().num_hidden_layers == len(model.get_decoder().layers) == 32
    linears = [(n, m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert [row for row in linears if row[1] % 64 or row[2] % 32] == []


def test_llava_config_and_image_processing(folders):
    model, processor = load_model(folders[LLAVA], device="cpu")
    config = model.config
    assert (config.vision_feature_layer, config.vision_feature_select_strategy) == (-2, "default")
    assert config.projector_hidden_act == "gelu" and config.pad_token_id == 32001
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (336, 14)
    image_processor = processor.image_processor
    assert image_processor.size == {"shortest_edge": 336} and image_processor.do_center_crop
    assert image_processor.image_mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    image = make_scene("test", 0).image.resize((500, 375))
    pixels = processor(images=image, text="<image>", return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 336, 336)


def test_llava_tokenizer_id_layout(folders):
    _, processor = load_model(folders[LLAVA], device="cpu")
    tokenizer = processor.tokenizer
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokens(processor, "<image>", "<pad>", "<0x00>", "<0x0A>", "<0xFF>") == [32000, 32001, 3, 13, 258]
    assert tokenizer.pad_token_id == 32001 and tokenizer.padding_side == "left"
    assert tokenizer("\n", add_special_tokens=False)["input_ids"][-1] == 13  # byte fallback


def test_instructblip_tokenizers_id_layout(folders):
    model, processor = load_model(folders[IBLIP], device="cpu")
    tokenizer, qformer = processor.tokenizer, processor.qformer_tokenizer
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.unk_token_id == 2  # all "</s>"
    assert tokens(processor, "[PAD]", "<image>", "<video>") == [32000, 32001, 32002]
    assert tokenizer.pad_token_id == 32000
    assert qformer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 100, 101, 102, 103]
    assert qformer.bos_token == "[DEC]" and qformer.padding_side == "right"
    assert model.config.qformer_config.vocab_size == len(qformer)
    ids = processor(images=make_scene("test", 0).image, text="Is there a Dog?")["qformer_input_ids"][0]
    assert qformer.convert_ids_to_tokens(ids) == ["[CLS]", "is", "there", "a", "dog", "?", "[SEP]"]
    assert processor.image_processor.size == {"height": 224, "width": 224}


@pytest.mark.parametrize("name", EXPECTED)
def test_yes_and_no_are_four_distinct_pieces_each(name, folders):
    _, processor = load_model(folders[name], device="cpu")
    for word in ("Yes", "No"):
        ids = tokens(processor, word, word.lower(), "▁" + word, "▁" + word.lower())
        assert len(set(ids)) == 4 and processor.tokenizer.unk_token_id not in ids


def test_llava_prompt_is_the_checkpoint_template(folders):
    model, processor = load_model(folders[LLAVA], device="cpu")
    question = QUESTIONS[0]
    assert build_prompt(model, processor, question) == f"USER: <image>\n{question} ASSISTANT:"
    assert build_prompt(model, processor, question, "llava_v1").startswith(LLAVA_V1_SYSTEM + " USER: <image>\n")


@pytest.mark.parametrize("name", EXPECTED)
def test_answers_start_with_the_space_prefixed_piece(name, folders):
    """The prompt ends without a space, so "Yes" follows as "▁Yes", not as "Yes" or "▁yes"."""
    model, processor = load_model(folders[name], device="cpu")
    text = build_prompt(model, processor, QUESTIONS[0])
    ids = processor(images=make_scene("test", 0).image, text=text)["input_ids"][0]
    last_word = text.split()[-1]  # "ASSISTANT:" (LLaVA) or "image?" (InstructBLIP's raw question)
    spaced, bare = tokens(processor, "▁Yes", "Yes")
    assert processor.tokenizer.decode(ids + [spaced]).endswith(f"{last_word} Yes")
    assert processor.tokenizer.decode(ids + [bare]).endswith(f"{last_word}Yes")
    assert candidate_token_ids(processor, ["Yes", "No"]) == tokens(processor, "▁Yes", "▁No")
    assert answer_token_ids(model, processor, ["Yes", "No"]) == tokens(processor, "▁Yes", "▁No")
    assert candidate_token_ids(processor, ["yes"]) != candidate_token_ids(processor, ["Yes"])


@pytest.mark.parametrize("name", EXPECTED)
def test_prompt_words_are_single_pieces_not_bytes(name, folders):
    _, processor = load_model(folders[name], device="cpu")
    text = f"{LLAVA_V1_SYSTEM} Is there a red circle to the left of the dining table in this image?"
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(re.findall(r"\w+|[^\w\s]", text))  # one piece per word or punctuation mark
    assert not any(3 <= i <= 258 for i in ids)  # no byte-fallback pieces


def test_float16_attention_is_finite_on_the_image_grid(fp16):
    name, model, _, batch = fp16
    attention = image_attention(model, batch)
    assert model.get_input_embeddings().weight.dtype == torch.float16
    assert tuple(attention.shape) == (2, 32, EXPECTED[name][2])  # [B, LM layers, image tokens]
    assert torch.isfinite(attention).all() and (attention.sum(-1) <= 1 + 1e-5).all()
    if name == LLAVA:
        assert attention.reshape(2, 32, 24, 24).shape[-2:] == (24, 24)


def test_float16_avisc_contrast_is_finite(fp16):
    _, model, _, batch = fp16
    blind = select_blind_tokens(image_attention(model, batch))
    vocabulary = range(model.config.get_text_config().vocab_size)
    original = answer_logits(model, batch, vocabulary)
    biased = answer_logits(model, batch, vocabulary, replace=~blind)
    assert torch.isfinite(original).all() and torch.isfinite(biased).all()
    assert torch.isfinite(contrast_logits(original, biased, alpha=2.5)).all()
    out = decode(model, batch, method="avisc", max_new_tokens=3)
    assert out.shape == (2, 3) and bool((out < len(vocabulary)).all())


@pytest.mark.parametrize("name", EXPECTED)
def test_processor_with_another_image_token_count_is_rejected(name, folders, tmp_path):
    folder = shutil.copytree(folders[name], tmp_path / "bad")
    config_file = folder / "processor_config.json"
    config = json.loads(config_file.read_text())
    key, value, found = ("patch_size", 16, 441) if name == LLAVA else ("num_query_tokens", 16, 16)
    config[key] = value
    config_file.write_text(json.dumps(config))
    expected = EXPECTED[name][2]
    with pytest.raises(ValueError, match=rf"bad: the processor puts {found} image tokens .* produces {expected}"):
        load_model(folder, device="cpu")


@pytest.fixture(params=CPU_KERNELS)
def cpu_kernel(request, monkeypatch):
    """Force the CPU path ``Linear4bit`` layers built from here on take, whatever this host has.

    bitsandbytes 0.50.2 (``nn/modules.py``): ``Linear4bit.__init__`` stores ``has_avx512bf16()``,
    and ``forward`` then repacks the weight for the AVX512-BF16 kernel, or else dequantizes it.
    """
    from bitsandbytes.nn import modules

    monkeypatch.setattr(modules, "has_avx512bf16", lambda: CPU_KERNELS[request.param])
    return request.param


def linear4bit_packing(model) -> set[bool]:
    """Whether each quantized layer's weight is in the AVX512-BF16 kernel's packed layout (as a set)."""
    from bitsandbytes.nn import Linear4bit

    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert layers, "no 4-bit layer in the model"
    return {bool(getattr(m.weight.quant_state, "packing_format_for_cpu", False)) for m in layers}


def load_4bit(folder, dtype=torch.float32):
    model, processor = load_model(folder, device="cpu", quantization="4bit", dtype=dtype)
    return model, encode(model, processor, [make_scene("test", i).image for i in range(2)], QUESTIONS)


@needs_bnb
@pytest.mark.parametrize("name", EXPECTED)
def test_4bit_decode_on_cpu(name, folders, cpu_kernel):
    """Both CPU paths run on every host: which CPU the tests land on no longer picks one."""
    model, batch = load_4bit(folders[name])
    assert linear4bit_packing(model) == {False}  # nothing is packed before the first forward
    assert torch.isfinite(image_attention(model, batch)).all()
    assert decode(model, batch, method="avisc", max_new_tokens=3).shape == (2, 3)
    # every quantized layer ran through the forced path (the packed layout is kept once made)
    assert linear4bit_packing(model) == {CPU_KERNELS[cpu_kernel]}
    # with grad mode on, as in a notebook cell: the packed path adds a bias in place, which autograd refuses
    assert embed_prompt(model, batch).features.isfinite().all()


def packed_gemv_reference(A, B, out=None, transposed_A=False, transposed_B=False, state=None):
    """``A`` [..., K] times a 4-bit weight in bitsandbytes' CPU packed layout, with bf16 products.

    Written from the layout ``_convert_weight_packed_for_cpu`` makes (bitsandbytes 0.50.2): B [N, K/2]
    holds, per block of 32 output rows and per pair of input columns, their 64 codes row by row, the
    first 32 in low nibbles and the last 32 in high ones; ``state.absmax`` is [K / blocksize, N] in bf16. It stands in
    for the AVX512-BF16 kernel on hosts that lack it, so the packed path is checked everywhere.
    """
    assert out is None and not transposed_A and not transposed_B  # what ``matmul_4bit`` passes on this path
    n, k = state.shape
    nibbles = torch.cat([B.reshape(-1, 32) & 0xF, B.reshape(-1, 32) >> 4], dim=-1)  # [N/32 * K/2, 64]
    codes = nibbles.reshape(n // 32, k // 2, 32, 2).transpose(1, 2).reshape(n, k).long()  # [N, K]
    scale = state.absmax.T.repeat_interleave(state.blocksize, dim=1)  # [N, K]
    weight = (state.code.to(torch.bfloat16)[codes] * scale).to(torch.bfloat16)
    return (A.to(torch.bfloat16) @ weight.T).to(A.dtype)


@needs_bnb
@pytest.mark.parametrize("name", EXPECTED)
def test_4bit_cpu_kernels_agree(name, folders, monkeypatch):
    """The packed path (bf16 products) gives the dequantizing path's logits, in float16.

    Where the CPU has AVX512-BF16, bitsandbytes' own kernel runs; elsewhere it registers none and
    :func:`packed_gemv_reference` reads the packed weights in its place, so that on every host the
    repacking of each layer our loaders make, and the calls that reach it, are checked.
    """
    from bitsandbytes import functional
    from bitsandbytes.nn import modules

    if not functional.has_avx512bf16():
        monkeypatch.setattr(functional, "gemv_4bit", packed_gemv_reference)
    logits = {}
    for kernel, available in CPU_KERNELS.items():
        monkeypatch.setattr(modules, "has_avx512bf16", lambda available=available: available)
        model, batch = load_4bit(folders[name], torch.float16)
        logits[kernel] = answer_logits(model, batch, range(model.config.get_text_config().vocab_size)).float()
        assert linear4bit_packing(model) == {available}
    torch.testing.assert_close(logits["avx512_bf16"], logits["dequantize"], rtol=0, atol=2e-2)
    assert torch.equal(logits["avx512_bf16"].argmax(-1), logits["dequantize"].argmax(-1))


@needs_bnb
def test_packed_gemv_reference_reads_the_packed_layout():
    """The stand-in above against bitsandbytes' dequantization of the same weight, before packing."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu, dequantize_4bit, quantize_4bit

    torch.manual_seed(0)
    weight, a = torch.randn(64, 128), torch.randn(3, 128)
    qweight, state = quantize_4bit(weight, blocksize=64, quant_type="nf4")
    expected = a @ dequantize_4bit(qweight, state).T
    packed, packed_state = _convert_weight_packed_for_cpu(qweight, state)
    got = packed_gemv_reference(a, packed, state=packed_state)
    # bf16 products: within 1 % of the largest output (a misread layout is off by the outputs' own size)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.01 * expected.abs().max().item())


@needs_bnb
def test_8bit_on_cpu_is_refused(folders):
    with pytest.raises(RuntimeError, match="8bit loading needs a CUDA GPU; on cpu only '4bit'"):
        load_model(folders[LLAVA], device="cpu", quantization="8bit")


def test_instructblip_stops_at_its_tokenizers_end_token(folders):
    """The checkpoint's configs say eos 1, its tokenizer ends with "</s>" = 2: load_model stops at both."""
    model, processor = load_model(folders["instructblip-vicuna"], device="cpu")
    from avisc_lib.decoding import special_token_ids

    eos, _ = special_token_ids(model)
    assert processor.tokenizer.eos_token_id == 2 and 2 in eos and 1 in eos
