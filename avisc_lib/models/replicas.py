"""Replica checkpoints: LLaVA-1.5-7B and InstructBLIP-Vicuna-7B with tiny widths and random weights.

A replica is a saved model folder (safetensors model + processor) that has the real checkpoint's
interface: model class, config switches, tokenizer id layout and pre-tokenisation, chat template,
image processing, image-token count and the language model's 32 layers. Only the widths (and the
vision tower's and Q-Former's depths) are tiny, and the weights are random (seeded). Tests,
notebooks and outside checks can run the GPU profiles' code path on a CPU in seconds::

    folder = build_replica("llava-1.5", "runs/replica-llava")        # or "instructblip-vicuna"
    model, processor = avisc_lib.load_model(folder, device="cpu")

    python -m avisc_lib.models.replicas llava-1.5 OUT_DIR

Every value below that is not a width or a depth comes from the public files of
``llava-hf/llava-1.5-7b-hf`` or ``Salesforce/instructblip-vicuna-7b``; each comment names the
file and key. The language-model tokenizers are Llama-style byte-fallback BPE tokenizers over a
small vocabulary (the words of the project's prompts and of the POPE, MME and AMBER questions),
padded with unused entries so that the special ids sit where the real ones do.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AddedToken,
    BertTokenizer,
    BlipImageProcessorPil,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GenerationConfig,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    ProcessorMixin,
)

from ..world.questions import vocabulary
from .prompts import LLAVA_V1_SYSTEM

REPLICAS = ("llava-1.5", "instructblip-vicuna")
SEED = 0

# ------------------------------------------------------------------ shared by both checkpoints

# preprocessor_config.json (both checkpoints): image_mean, image_std, resample (3 = bicubic)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
BICUBIC = 3
# tokenizer.json / added_tokens_decoder of both: the SentencePiece Llama layout. <unk>, <s>, </s>
# are ids 0, 1, 2, the 256 byte-fallback pieces <0x00>..<0xFF> ids 3..258, and the base
# vocabulary ends at 32000, where the checkpoints' added tokens start.
LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]
LLAMA_BASE_VOCAB = 32000
# config.json text_config.vocab_size (both): the embedding has 32064 rows, more than the tokenizer.
LM_VOCAB_SIZE = 32064

# Widths: ours, as small as bitsandbytes' two CPU paths for 4-bit layers accept. The AVX512-BF16 one
# repacks each quantized weight [out, in] in blocks of 32 outputs (_convert_weight_packed_for_cpu,
# block_n) and 64 inputs (the 4-bit blocksize), so every quantized Linear needs in_features a
# multiple of 64 and out_features one of 32, as every width of the checkpoints is (4096, 11008, 1024,
# 1408, 768, ...).
WIDTH, FFN_WIDTH = 64, 128
# Depths: the language models have the checkpoints' 32 layers (llava-1.5-7b-hf's LlamaConfig default,
# instructblip-vicuna-7b's config.json text_config.num_hidden_layers), so every layer range a method
# gives for 32 layers (PAI 2..31, ClearSight 9..14, VAR's sink search 2..31) runs as on the real
# model. Nothing loops over the vision tower's or the Q-Former's layers: they stay at 2 (LLaVA
# reads the vision tower's second-to-last layer; the Q-Former's first layer cross-attends).
LM_LAYERS = 32
VISION_SIZES = dict(hidden_size=WIDTH, intermediate_size=FFN_WIDTH, num_hidden_layers=2, num_attention_heads=2)
TEXT_SIZES = dict(
    hidden_size=WIDTH,
    intermediate_size=FFN_WIDTH,
    num_hidden_layers=LM_LAYERS,
    num_attention_heads=4,
    num_key_value_heads=4,
)
QFORMER_SIZES = dict(hidden_size=WIDTH, intermediate_size=FFN_WIDTH, num_hidden_layers=2, num_attention_heads=2)
# The speed proxy (:func:`proxy`): llava-1.5-7b-hf's own widths with few layers, where a step's time is
# set by reading weights and multiplying them, as on the 7B model, not by per-operation overhead.
# config.json text_config (LlamaConfig defaults): hidden 4096, intermediate 11008, 32 heads;
# vision_config (CLIP ViT-L/14 at 336 px): hidden 1024, intermediate 4096, 16 heads.
PROXY_TEXT_SIZES = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
PROXY_VISION_SIZES = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16)

# ------------------------------------------------------------------ llava-hf/llava-1.5-7b-hf

LLAVA_IMAGE_TOKEN = "<image>"  # processor_config.json image_token; added_tokens.json "<image>": 32000
LLAVA_IMAGE_ID = 32000  # config.json image_token_index
LLAVA_PAD = "<pad>"  # tokenizer_config.json pad_token; added_tokens.json "<pad>": 32001
LLAVA_PAD_ID = 32001  # config.json pad_token_id; generation_config.json pad_token_id
LLAVA_BOS_ID, LLAVA_EOS_ID = 1, 2  # generation_config.json bos_token_id, eos_token_id
LLAVA_IMAGE_SIZE = 336  # config.json vision_config.image_size; preprocessor_config.json crop_size
LLAVA_PATCH = 14  # config.json vision_config.patch_size; processor_config.json patch_size
# chat_template.json chat_template, verbatim: "USER: <image>\n{question} ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# ------------------------------------------------------------------ Salesforce/instructblip-vicuna-7b

IBLIP_SPECIAL = "</s>"  # tokenizer_config.json bos_token, eos_token and unk_token are all "</s>"
IBLIP_PAD = "[PAD]"  # tokenizer_config.json pad_token; added_tokens.json "[PAD]": 32000
IBLIP_PAD_ID = 32000  # config.json text_config.pad_token_id; generation_config.json pad_token_id
IBLIP_IMAGE_ID = 32001  # config.json image_token_index; added_tokens.json "<image>": 32001
IBLIP_VIDEO = "<video>"  # added_tokens.json "<video>": 32002
# generation_config.json and config.json text_config: bos_token_id 0, eos_token_id 1. These are the
# original LLaMA conversion's values, not the tokenizer's ("</s>" is id 2); mirrored as they are.
IBLIP_BOS_ID, IBLIP_EOS_ID = 0, 1
IBLIP_MAX_LENGTH = 2048  # tokenizer_config.json model_max_length; text_config.max_sequence_length
IBLIP_RMS_EPS = 1e-6  # config.json text_config.rms_norm_eps
IBLIP_QUERIES = 32  # config.json num_query_tokens; processor_config.json num_query_tokens
IBLIP_IMAGE_SIZE = 224  # preprocessor_config.json size; InstructBlipVisionConfig default image_size
IBLIP_PATCH = 14  # InstructBlipVisionConfig default patch_size (config.json keeps the defaults)
# qformer_tokenizer/: bert-base-uncased's special ids (vocab.txt) and "[DEC]" as bos_token
# (special_tokens_map.json; added_tokens.json "[DEC]": 30522); do_lower_case true.
# [PAD] 0, [unused0..98] 1..99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
BERT_SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
QFORMER_BOS = "[DEC]"
QFORMER_MAX_LENGTH = 512  # qformer_tokenizer/tokenizer_config.json model_max_length

# ------------------------------------------------------------------ vocabulary

# The 300 most frequent words of the POPE (COCO, A-OKVQA, GQA), MME (existence, count, position,
# colour) and AMBER questions; together 99.2 % of their word occurrences.
BENCHMARK_WORDS = """
Are Describe Does Is Please a airplane an and answer apple backpack ball banana bananas banner baseball bat bath
beach bear bed bench benches between bicycle bicycles bike bin bird birds black blanket blue boat book bottle
bowl bread bridge broccoli brown building bus buses cabinet cake calm camera car cardboard carpet carrot cars
cat cathole ceiling cell chair chairs child clean clock closed cloud computer concrete contact couch counter cow
cows cup cups curtain curved dense desert dim dining direct dirt dirty dog dogs doll donut door down drier dry
duck electrombile elephant elephants fence fire fish five flat floor flower food football forest fork four
frisbee frisbees fruit giraffe giraffes glass gloomy glove grass gravel gray green ground hair handbag hat hats
hidden horse horses hot house hydrant image in island jump keyboard kite knife lake laptop lemon lie light
lively lounge lush man men messy meter microwave mirror motorbike motorbikes motorcycle mountain mouse narrow
net no of on one only open or orange oven paper parking pavement pen people person phone picture pillow pink
pizza plane planes plant plate plates platform playingfield potted prone racket rail railroad red refrigerator
remote ride right rippling river road rock rolling roof rough round rug run sand sandwich scissors scoon sea
seas seegull sheep shelf ship ships short sign signal sink sit six skate skateboard skis sky small smooth snow
snowboard sofa sparkling sparse spoon sports square stairs stand stop stormy straight streetlamp suitcase sun
sunny surf surfboard surfboards swim table tall tangerine tap teddy television tennis tent the there this three
tidy tie tiger tissue toaster toilet toothbrush towel toy traffic train trains tree trees truck turbulent tv two
umbrella uneven vase wall watch water waters waves wet white wide window wine withered woman women yellow
yellowed yes zebra zebras
"""
ANSWER_WORDS = "Yes No There is are not it shows picture photo USER ASSISTANT"
PUNCTUATION = list("?.,:;!'\"()-/")


def vocabulary_words() -> list[str]:
    """The words the replica tokenizers hold as single pieces, before the "▁" and case variants."""
    words = set(BENCHMARK_WORDS.split()) | set(ANSWER_WORDS.split()) | set(vocabulary())
    words |= set(re.findall(r"[A-Za-z]+", LLAVA_V1_SYSTEM))
    return sorted(words)


def _training_words() -> list[str]:
    """Each word lower-case, capitalised and as written, each with and without the "▁" word start.

    So "Yes", "yes", "▁Yes" and "▁yes" all become single, distinct pieces.
    """
    variants = {v for w in vocabulary_words() for v in (w, w.lower(), w.capitalize())}
    return sorted(variants | {"▁" + v for v in variants})


def _merges_and_pieces() -> tuple[list[tuple[str, str]], list[str]]:
    """BPE merges that build every training word, and the pieces in the order they were learned.

    Trained on the distinct training words (once each) until no pair is left, so each training
    word encodes to one piece. No merge joins across a word start: "▁" only begins training words.
    """
    alphabet = sorted({chr(c) for c in range(33, 127)} | {"▁"})
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=LLAMA_BASE_VOCAB,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
    )
    tokenizer.train_from_iterator(_training_words(), trainer=trainer)
    vocab = tokenizer.get_vocab()
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m) for m in merges], sorted(vocab, key=vocab.get)


def llama_vocab(added: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)`` in the SentencePiece Llama layout, ``added`` from id 32000 on.

    Ids 0..2 the specials, 3..258 the byte pieces, then the trained pieces, then unused
    entries (never produced: no merge leads to them) up to 32000.
    """
    merges, pieces = _merges_and_pieces()
    base = LLAMA_SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + pieces
    base += [f"<unused{i}>" for i in range(LLAMA_BASE_VOCAB - len(base))]
    vocab = {piece: i for i, piece in enumerate(base + added)}
    return vocab, merges


def llama_tokenizer(added: list[str], *, legacy: bool, **special) -> LlamaTokenizer:
    """A Llama tokenizer (metaspace "▁", byte fallback) whose ``added`` tokens are special, from 32000.

    ``legacy`` as the checkpoint's tokenizer_config.json: False prepends "▁" to the first piece of
    the text only ("first"), True after every special token too ("always").
    """
    vocab, merges = llama_vocab(added)
    tokenizer = LlamaTokenizer(
        vocab=vocab, merges=merges, legacy=legacy, add_bos_token=True, add_eos_token=False, **special
    )
    tokenizer.init_kwargs["legacy"] = legacy  # saved to tokenizer_config.json, which LlamaTokenizer omits
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=True) for t in added], special_tokens=True)
    return tokenizer


def qformer_tokenizer() -> BertTokenizer:
    """A bert-base-uncased-style WordPiece tokenizer over the replica vocabulary, right-padded."""
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    words = [w.lower() for w in vocabulary_words()] + letters + PUNCTUATION + [f"##{c}" for c in letters]
    tokens = BERT_SPECIALS + list(dict.fromkeys(words))
    tokenizer = BertTokenizer(
        vocab={t: i for i, t in enumerate(tokens)},
        do_lower_case=True,
        padding_side="right",
        truncation_side="left",
        model_max_length=QFORMER_MAX_LENGTH,
    )
    tokenizer.add_special_tokens({"bos_token": QFORMER_BOS})
    return tokenizer


# ------------------------------------------------------------------ processors


def llava_processor() -> LlavaProcessor:
    """``LlavaProcessor`` with llava-1.5-7b-hf's image processing, token layout and chat template."""
    tokenizer = llama_tokenizer(  # tokenizer_config.json
        [LLAVA_IMAGE_TOKEN, LLAVA_PAD], legacy=False, pad_token=LLAVA_PAD, padding_side="left"
    )
    image_processor = CLIPImageProcessorPil(  # preprocessor_config.json
        size={"shortest_edge": LLAVA_IMAGE_SIZE},
        crop_size={"height": LLAVA_IMAGE_SIZE, "width": LLAVA_IMAGE_SIZE},
        do_center_crop=True,
        resample=BICUBIC,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )
    return LlavaProcessor(  # processor_config.json
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=LLAVA_IMAGE_TOKEN,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def instructblip_processor() -> InstructBlipProcessor:
    """``InstructBlipProcessor`` with instructblip-vicuna-7b's image processing and both tokenizers."""
    tokenizer = llama_tokenizer(  # tokenizer_config.json
        [IBLIP_PAD, LLAVA_IMAGE_TOKEN, IBLIP_VIDEO],
        legacy=True,
        bos_token=IBLIP_SPECIAL,
        eos_token=IBLIP_SPECIAL,
        unk_token=IBLIP_SPECIAL,
        pad_token=IBLIP_PAD,
        truncation_side="left",
        model_max_length=IBLIP_MAX_LENGTH,
    )
    image_processor = BlipImageProcessorPil(  # preprocessor_config.json
        size={"height": IBLIP_IMAGE_SIZE, "width": IBLIP_IMAGE_SIZE},
        resample=BICUBIC,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )
    return InstructBlipProcessor(image_processor, tokenizer, qformer_tokenizer(), num_query_tokens=IBLIP_QUERIES)


# ------------------------------------------------------------------ models


def llama_config(
    layers: int, max_positions: int, rms_eps: float, widths: dict = TEXT_SIZES, **token_ids: int
) -> LlamaConfig:
    """A language model's config: ``widths`` (the replica's), the checkpoint's depth, positions, eps and ids."""
    sizes = {**widths, "num_hidden_layers": layers}
    return LlamaConfig(
        **sizes,
        vocab_size=LM_VOCAB_SIZE,
        max_position_embeddings=max_positions,
        rms_norm_eps=rms_eps,
        tie_word_embeddings=False,
        **token_ids,
    )


def llava_model(
    layers: int = LM_LAYERS, text_widths: dict = TEXT_SIZES, vision_sizes: dict = VISION_SIZES
) -> LlavaForConditionalGeneration:
    """A random LLaVA-1.5 (CLIP 336/14 tower, GELU projector, Llama LM of ``layers``), seeded, float32."""
    vision = CLIPVisionConfig(**vision_sizes, image_size=LLAVA_IMAGE_SIZE, patch_size=LLAVA_PATCH)
    # config.json text_config; bos/eos are LlamaConfig defaults there
    text = llama_config(layers, 4096, 1e-5, text_widths, bos_token_id=LLAVA_BOS_ID, eos_token_id=LLAVA_EOS_ID)
    config = LlavaConfig(  # config.json
        vision_config=vision,
        text_config=text,
        image_token_id=LLAVA_IMAGE_ID,
        image_seq_length=(LLAVA_IMAGE_SIZE // LLAVA_PATCH) ** 2,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        pad_token_id=LLAVA_PAD_ID,
        tie_word_embeddings=False,
    )
    return seeded(LlavaForConditionalGeneration, config, LLAVA_BOS_ID, LLAVA_EOS_ID, LLAVA_PAD_ID)


def instructblip_model(qformer_vocab_size: int, layers: int = LM_LAYERS) -> InstructBlipForConditionalGeneration:
    """A random InstructBLIP-Vicuna (ViT 224/14, Q-Former with 32 queries, Llama LM of ``layers``), seeded, float32."""
    vision = InstructBlipVisionConfig(**VISION_SIZES, image_size=IBLIP_IMAGE_SIZE, patch_size=IBLIP_PATCH)
    qformer = InstructBlipQFormerConfig(
        **QFORMER_SIZES, vocab_size=qformer_vocab_size, max_position_embeddings=QFORMER_MAX_LENGTH
    )
    ids = dict(bos_token_id=IBLIP_BOS_ID, eos_token_id=IBLIP_EOS_ID, pad_token_id=IBLIP_PAD_ID)
    text = llama_config(layers, IBLIP_MAX_LENGTH, IBLIP_RMS_EPS, **ids)  # config.json text_config
    config = InstructBlipConfig(  # config.json
        vision_config=vision,
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=IBLIP_QUERIES,
        image_token_index=IBLIP_IMAGE_ID,
        tie_word_embeddings=False,
    )
    return seeded(InstructBlipForConditionalGeneration, config, IBLIP_BOS_ID, IBLIP_EOS_ID, IBLIP_PAD_ID)


def seeded(model_class, config, bos: int, eos: int, pad: int):
    """``model_class(config)`` with random weights from :data:`SEED` and the checkpoint's
    generation_config.json ids."""
    torch.manual_seed(SEED)
    model = model_class(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    return model


def build(name: str, layers: int = LM_LAYERS) -> tuple[PreTrainedModel, ProcessorMixin]:
    """``(model, processor)`` of replica ``name`` (see ``REPLICAS``), model in float32.

    ``layers``: the language model's depth; fewer than the checkpoints' 32 only where a run's cost
    matters more than reaching every layer range (the replica benchmark runs of the test suite).
    """
    if layers < 1:
        raise ValueError(f"a replica needs at least one language-model layer, got {layers}")
    if name == "llava-1.5":
        return llava_model(layers), llava_processor()
    if name == "instructblip-vicuna":
        processor = instructblip_processor()
        return instructblip_model(len(processor.qformer_tokenizer), layers), processor
    raise ValueError(f"unknown replica {name!r}; expected one of {REPLICAS}")


def proxy(
    layers: int = 2, vision_layers: int = 2, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """``(model, processor)``: a random LLaVA-1.5 at llava-1.5-7b-hf's widths (:data:`PROXY_TEXT_SIZES`,
    :data:`PROXY_VISION_SIZES`, vocabulary 32064, 576 image tokens) with ``layers`` language-model and
    ``vision_layers`` vision layers (0.7 B parameters at the defaults: 2.8 GB in float32; 32 and 24 are
    llava-1.5-7b-hf's own depths, 7.1 B). The weights are drawn on ``device`` (a 7B model never passes
    through CPU memory), then cast to ``dtype``."""
    if layers < 1 or vision_layers < 2:
        raise ValueError(f"need >= 1 language-model and >= 2 vision layers, got {layers} and {vision_layers}")
    vision = {**PROXY_VISION_SIZES, "num_hidden_layers": vision_layers}
    with torch.device(device):
        model = llava_model(layers, PROXY_TEXT_SIZES, vision)
    return model.to(dtype), llava_processor()


def build_replica(name: str, folder: str | Path, dtype: torch.dtype = torch.float16, layers: int = LM_LAYERS) -> Path:
    """Save replica ``name`` to ``folder`` (created if missing) with weights in ``dtype``; returns it.

    ``dtype`` is recorded in config.json, as the checkpoints record float16. ``layers``: see :func:`build`.
    """
    model, processor = build(name, layers)
    folder = Path(folder)
    model.to(dtype).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m avisc_lib.models.replicas", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=REPLICAS)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    print(build_replica(args.name, args.out_dir))


if __name__ == "__main__":
    main()
