"""Every transformers call whose name, signature or return type moved between releases.

avisc_lib pins transformers 5.24 (pyproject.toml). Each shim says why it exists and when it can go.
Nothing here patches a transformers class; everything goes through public registries and methods.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from transformers import AddedToken, Cache, DynamicCache, InstructBlipProcessor, PreTrainedModel, StaticCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def register_attention(name: str, function: Callable) -> None:
    """Register an SDPA-compatible attention function under ``name``.

    Why: since 5.0 the causal mask is built by a separate registry keyed by the same name. A name
    missing from ``AttentionMaskInterface`` silently gets *no* mask, so left padding is ignored
    (measured: padded rows' logits change by 0.05). We register ``sdpa_mask`` alongside.
    Remove when transformers derives the mask of a custom attention function from its base.
    """
    ALL_ATTENTION_FUNCTIONS.register(name, function)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)


@contextmanager
def text_attention(model: PreTrainedModel, name: str) -> Iterator[None]:
    """Switch only the language model to attention implementation ``name``; restore it on exit.

    Why: switching per sub-config (so the vision tower and Q-Former keep theirs) relies on the dict
    form of ``set_attn_implementation``, 5.x API (4.x only took one string for the whole model).
    Remove if transformers gains a scoped, per-sub-model attention switch.
    """
    key = text_config_key(model)
    previous = model.config.get_text_config()._attn_implementation
    model.set_attn_implementation({key: name})
    try:
        yield
    finally:
        model.set_attn_implementation({key: previous})


def decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The language model's decoder blocks, in order.

    Why: Llama-family decoders (LLaVA-1.5's, InstructBLIP's Vicuna, GPT-NeoX) hold them as ``layers``,
    GPT-2 as ``h``; transformers has no common accessor. Remove when it gains one.
    """
    decoder = model.get_decoder()
    return decoder.layers if hasattr(decoder, "layers") else decoder.h


def text_config_key(model: PreTrainedModel) -> str:
    """Name of the sub-config holding the language model's config ("text_config" for LLaVA/InstructBLIP)."""
    text = model.config.get_text_config()
    for key in model.config.sub_configs:
        if getattr(model.config, key, None) is text:
            return key
    raise ValueError(f"{type(model).__name__} has no language-model sub-config")


def image_token_id(config) -> int:
    """The placeholder id that marks image-token positions in ``input_ids``.

    Why: LLaVA and InstructBLIP configs store it as ``image_token_index``; ``image_token_id`` is a
    5.x alias, and InstructBLIP's defaults to None. Remove the fallback when every supported config
    class exposes ``image_token_id``.
    """
    token_id = getattr(config, "image_token_id", None)
    if token_id is None:
        token_id = getattr(config, "image_token_index", None)
    if token_id is None:
        raise ValueError("the model config has no image_token_id / image_token_index")
    return int(token_id)


# Module that maps vision features to language-model embeddings, per model type. Why: LLaVA moved
# its projector under ``model.model`` in 4.52 (the ``LlavaModel`` split). Remove with 4.x support.
PROJECTORS = {"llava": "model.multi_modal_projector", "instructblip": "language_projection"}


def projector(model: PreTrainedModel) -> torch.nn.Module:
    """The multimodal projector whose output rows are the image tokens' embeddings."""
    path = PROJECTORS.get(model.config.model_type)
    if path is None:
        raise ValueError(f"unsupported model type {model.config.model_type!r}; supported: {sorted(PROJECTORS)}")
    return model.get_submodule(path)


def image_features(model: PreTrainedModel, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Projected image features, ``[B, N, D]``: one row per image token, ready to scatter.

    Why: in 5.x ``get_image_features`` returns an output object whose ``pooler_output`` is a
    per-image list for LLaVA and a tensor for InstructBLIP (4.x returned bare tensors), and the two
    signatures differ. Remove the list handling when LLaVA returns one stacked tensor.
    """
    pixel_values = inputs["pixel_values"].to(model.device, model.dtype)
    if model.config.model_type == "instructblip":
        output = model.get_image_features(
            pixel_values,
            qformer_input_ids=inputs["qformer_input_ids"].to(model.device),
            qformer_attention_mask=_optional(inputs, "qformer_attention_mask", model.device),
            return_dict=True,
        )
    else:
        output = model.get_image_features(pixel_values=pixel_values, return_dict=True)
    features = output.pooler_output
    return torch.stack(list(features)) if isinstance(features, (list, tuple)) else features


def _optional(inputs: Mapping[str, torch.Tensor], key: str, device: torch.device) -> torch.Tensor | None:
    value = inputs.get(key)
    return None if value is None else value.to(device)


def language_model_forward(
    model: PreTrainedModel,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: DynamicCache | None = None,
) -> tuple[torch.Tensor, DynamicCache]:
    """Run the text decoder on ``inputs_embeds [B, q, D]`` and return the last position's logits.

    ``attention_mask [B, past + q]`` covers the cache and the new positions (0 = padding). Returns
    ``(logits [B, V], cache)``. Position ids come from the mask, so left-padded rows get the positions
    they would have alone (``forward`` itself counts from 0 on every row; only ``generate`` corrects it).
    Why a shim: 5.24 renamed ``past_key_values`` to ``cache``, in the signature and in the output;
    the old keyword only warns until 5.40. The lookup keeps older 5.x working if the pin (5.24) is
    ever loosened; remove it, passing ``cache=``, once versions before 5.24 are ruled out for good.
    """
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]
    return decoder_logits(model, inputs_embeds, attention_mask, positions, cache)


def decoder_logits(
    model: PreTrainedModel,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    cache: Cache | None = None,
    cache_name: str | None = None,
) -> tuple[torch.Tensor, Cache]:
    """:func:`language_model_forward` with the position ids ``positions [B, q]`` given, so that a
    mask may cover more than the positions filled (a static cache's). ``cache_name``: the decoder's
    cache keyword when known (:func:`cache_kwarg`; compiled code passes it, as ``torch.compile`` does
    not trace through the lookup's memo)."""
    decoder = model.get_decoder()
    cache_name = cache_name or cache_kwarg(model)
    output = decoder(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        **({} if cache is None else {cache_name: cache}),
    )
    logits = model.get_output_embeddings()(output.last_hidden_state[:, -1])
    return logits, getattr(output, cache_name)


def static_copy(cache: DynamicCache, config, max_cache_len: int) -> StaticCache:
    """A ``StaticCache`` of ``max_cache_len`` positions holding ``cache``'s keys and values (its
    layers filled in order through the public ``update``), for steps under ``torch.compile``."""
    static = StaticCache(config=config, max_cache_len=max_cache_len)
    for layer, (keys, values, *_) in enumerate(cache):
        static.update(keys, values, layer)
    return static


def cache_kwarg(model: PreTrainedModel) -> str:
    """The keyword under which ``model``'s decoder takes and returns its cache (see :func:`language_model_forward`)."""
    return _cache_kwarg(type(model.get_decoder()))


@functools.cache
def _cache_kwarg(decoder_type: type) -> str:
    return "cache" if "cache" in inspect.signature(decoder_type.forward).parameters else "past_key_values"


def concat_caches(first: DynamicCache, second: DynamicCache, config) -> DynamicCache:
    """One cache holding ``first``'s rows then ``second``'s (equal lengths), for one batched decode step.

    ``config``: the model's config, so each layer keeps its type (full or sliding-window attention).

    Why: ``DynamicCache`` has no public batch concatenation; its documented ``ddp_cache_data``
    constructor argument builds one from per-layer ``(keys, values)``, and iterating a cache yields
    them (5.x adds a third, sliding-window item). Remove when ``Cache`` gains a batch ``cat``.
    """
    return DynamicCache(
        [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(first, second, strict=True)],
        config=config,
    )


def normalise_processor(processor):
    """Give an InstructBLIP processor the ``AddedToken`` image token it dereferences (``.content``).

    Why: in 5.24 ``InstructBlipProcessor`` reads ``image_token.content``, but a tokenizer that
    declares its image token through ``extra_special_tokens`` (as the project's word-level
    tokenizer does) hands over a plain string. Hub checkpoints are unaffected. Remove when the
    processor accepts both.
    """
    if isinstance(processor, InstructBlipProcessor) and isinstance(processor.image_token, str):
        processor.image_token = AddedToken(processor.image_token, normalized=False, special=True)
    return processor
