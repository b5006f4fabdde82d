"""Build the embedded tiny LLaVA: word-level tokenizer, processor and model from configs.

The model is a real ``LlavaForConditionalGeneration`` (CLIP vision tower, 2-layer MLP
projector, Llama language model), only small: 1.13 M parameters (1,133,568), 64x64 images cut into
8x8-pixel patches, i.e. 64 image tokens (LLaVA-1.5 uses 576).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

from ..world.questions import vocabulary
from ..world.scenes import IMAGE_SIZE

PATCH_SIZE = 8
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
PUNCTUATION = [".", ",", "?", ":", "!", "'"]
ROLE_WORDS = ["user", "assistant"]

# llava-1.5 style: "USER: <image>\n{question} ASSISTANT: {answer}</s>". BOS comes from the
# tokenizer's post-processor, as with the real Llama tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %} {% else %}ASSISTANT: "
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tokenizer(extra_words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """A lower-casing word-level fast tokenizer over the synthetic world's vocabulary, then any of
    ``extra_words`` it lacks (after it, so that the world's words keep their ids)."""
    words = SPECIAL_TOKENS + PUNCTUATION + ROLE_WORDS + vocabulary()
    words += [w for w in dict.fromkeys(extra_words) if w not in words]
    tk = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()  # splits words from punctuation
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words, tidies " ." and " ,"
    return named_specials(tk, padding_side="left")


def named_specials(tk: Tokenizer, **kwargs) -> PreTrainedTokenizerFast:
    """``tk`` as a transformers tokenizer whose pad, BOS, EOS, unknown and image tokens are
    :data:`SPECIAL_TOKENS`; ``kwargs`` go to ``PreTrainedTokenizerFast``."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        **kwargs,
    )


def build_processor(cls_token: bool = True, tokenizer: PreTrainedTokenizerFast | None = None) -> LlavaProcessor:
    """``LlavaProcessor`` with a CLIP image processor at 64 px and the llava-1.5 chat template.

    ``cls_token=False`` for a tower without one (SigLIP): every tower token is an image token;
    ``tokenizer``: another than the world's (:func:`build_tokenizer`), with the same special tokens.
    """
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy=feature_strategy(cls_token),
        num_additional_image_tokens=int(cls_token),  # the CLS token that the "default" strategy drops
        chat_template=CHAT_TEMPLATE,
    )


LM_FAMILIES = ("llama", "gpt_neox", "gpt2")


@dataclass(frozen=True)
class LMSize:
    """A language model: ``layers`` blocks of ``width`` split into ``heads`` (MLP twice as wide), of
    architecture ``family`` with rotary base ``rope_theta`` and, for Llama, biases on the attention
    projections if ``attention_bias`` (as Qwen2 has; the other families always have them), with ``dropout``
    wherever the family has it (None: the family's default, 0.1 for GPT-2, none for the others)
    (:func:`text_config`); the defaults are the embedded model's."""

    layers: int = 4
    width: int = 128
    heads: int = 4
    family: str = "llama"
    rope_theta: float = 10000.0
    attention_bias: bool = False
    dropout: float | None = None

    def __post_init__(self):
        if self.family not in LM_FAMILIES:
            raise ValueError(f"unknown language-model family {self.family!r}; choose one of {', '.join(LM_FAMILIES)}")
        if self.width % self.heads:
            raise ValueError(f"the language model's width {self.width} does not split into {self.heads} heads")
        if self.family == "gpt2" and self.rope_theta != LMSize.rope_theta:
            raise ValueError("GPT-2 learns absolute positions: it has no rotary base to set")
        if self.attention_bias and self.family != "llama":
            raise ValueError(f"{self.family} always has attention biases; attention_bias sets Llama's")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout is a probability below 1, not {self.dropout}")

    @property
    def architecture(self) -> str:
        """``", gpt2"``, ``", rope 1e+06"``, ``", attention bias"``, ``", dropout 0"``: what differs from the
        embedded model's."""
        family = f", {self.family}" if self.family != LMSize.family else ""
        rope = f", rope {self.rope_theta:g}" if self.rope_theta != LMSize.rope_theta else ""
        dropout = f", dropout {self.dropout:g}" if self.dropout is not None else ""
        return family + rope + (", attention bias" if self.attention_bias else "") + dropout

    @property
    def name(self) -> str:
        """``lm8x256``, then ``h2`` for a head count other than 4, ``-gpt2`` for a family other than
        Llama, ``-rope1e+06`` for another rotary base, ``-bias`` for attention biases and ``-drop0`` for a
        dropout set; ``""`` for the embedded language model."""
        if self == EMBEDDED_LM:
            return ""
        heads = f"h{self.heads}" if self.heads != EMBEDDED_LM.heads else ""
        family = f"-{self.family}" if self.family != "llama" else ""
        rope = f"-rope{self.rope_theta:g}" if self.rope_theta != LMSize.rope_theta else ""
        bias = "-bias" if self.attention_bias else ""
        dropout = f"-drop{self.dropout:g}" if self.dropout is not None else ""
        return f"lm{self.layers}x{self.width}{heads}{family}{rope}{bias}{dropout}"


EMBEDDED_LM = LMSize()  # the embedded tiny model's language model


def text_config(tokenizer: PreTrainedTokenizerFast, lm: LMSize):
    """The language model's config.

    ``lm.family``: "llama" (rotary positions, RMSNorm, gated SiLU MLP, no biases: LLaVA-1.5's and the
    embedded model's), "gpt_neox" (rotary on every dimension, LayerNorm, plain GELU MLP, biases,
    sequential residual) or "gpt2" (learned absolute positions, LayerNorm, plain GELU MLP, biases),
    the architecture of Guo et al.'s Bigram-Backcopy models. ``lm.dropout`` sets every dropout the
    family has: GPT-2's on embeddings, attention and residuals, GPT-NeoX's on attention and residuals,
    Llama's on attention.
    """
    tokens = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
    }
    names = {"gpt2": ["embd_pdrop", "attn_pdrop", "resid_pdrop"], "gpt_neox": ["attention_dropout", "hidden_dropout"]}
    dropout = {} if lm.dropout is None else dict.fromkeys(names.get(lm.family, ["attention_dropout"]), lm.dropout)
    if lm.family == "gpt2":
        size = {"n_embd": lm.width, "n_inner": 2 * lm.width, "n_layer": lm.layers, "n_head": lm.heads}
        return GPT2Config(n_positions=256, **size, **dropout, **tokens)
    size = {
        "hidden_size": lm.width,
        "intermediate_size": 2 * lm.width,
        "num_hidden_layers": lm.layers,
        "num_attention_heads": lm.heads,
        "max_position_embeddings": 256,
    }
    rope = {"rope_type": "default", "rope_theta": lm.rope_theta}
    if lm.family == "gpt_neox":
        rope["partial_rotary_factor"] = 1.0
        return GPTNeoXConfig(rope_parameters=rope, use_parallel_residual=False, **size, **dropout, **tokens)
    return LlamaConfig(
        num_key_value_heads=lm.heads,
        head_dim=lm.width // lm.heads,
        rope_parameters=rope,
        attention_bias=lm.attention_bias,
        **size,
        **dropout,
        **tokens,
    )


def feature_strategy(cls_token: bool) -> str:
    """LLaVA's ``vision_feature_select_strategy``: drop the CLS token ("default") or keep all ("full")."""
    return "default" if cls_token else "full"


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    seed: int = 0,
    vision: CLIPVisionConfig | SiglipVisionConfig | None = None,
    lm: LMSize = EMBEDDED_LM,
) -> LlavaForConditionalGeneration:
    """A randomly initialised tiny LLaVA matching ``tokenizer`` (seeded).

    ``vision``: another tower's config (8-px patches), e.g. one from the organism search; a SigLIP
    tower has no CLS token, so all of its tokens go to the language model. ``lm``: the language
    model's size and architecture (the default: the embedded model's Llama).
    """
    vision = vision or CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=128,
    )
    if (vision.image_size, vision.patch_size) != (IMAGE_SIZE, PATCH_SIZE):
        raise ValueError(
            f"the tiny LLaVA takes {IMAGE_SIZE}-px images in {PATCH_SIZE}-px patches, "
            f"got {vision.image_size} / {vision.patch_size}"
        )
    text = text_config(tokenizer, lm)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=NUM_IMAGE_TOKENS,
        vision_feature_layer=-1,  # a from-scratch tower: its last layer is the trained one
        vision_feature_select_strategy=feature_strategy(not isinstance(vision, SiglipVisionConfig)),
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)
