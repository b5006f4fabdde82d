"""AvisC and its baselines through transformers' ``model.generate(custom_generate=...)``.

``custom_generate(method, **hyper_parameters)`` returns a callable for ``GenerationMixin.generate``.
``generate`` validates the call and builds the ``GenerationConfig`` (max/min new tokens, do_sample,
temperature, top-k, top-p, EOS, pad); the callable maps that config onto ``decode``'s options,
runs ``decode`` and returns what ``generate`` returns: the prompt ids followed by the new tokens
``[B, L + T]``, rows that ended early padded with the config's pad id.

Generation features ``decode`` does not implement (beam search, assisted decoding, logits
processors or stopping criteria other than the ones mapped here, dict outputs, ...) raise
``ValueError`` naming the argument; nothing falls back to plain decoding.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteriaList,
)
from transformers.generation import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.configuration_utils import GenerationMode
from transformers.generation.utils import GenerationMixin

from .. import methods
from ..decoding import decode
from ..settings import DecodeSettings, decode_options

# decode options that come from generate's own arguments (its GenerationConfig), not from custom_generate.
GENERATION_OPTIONS = ("do_sample", "temperature", "top_k", "top_p", "max_new_tokens", "min_new_tokens")
# Model keywords generate prepares for its own loop; decode builds its own mask, positions and caches.
LOOP_KWARGS = ("attention_mask", "position_ids", "cache", "use_cache", "logits_to_keep")
# GenerationConfig fields decode has no counterpart for, with the value that leaves them off.
UNSUPPORTED_CONFIG = {
    "num_beams": 1,
    "num_return_sequences": 1,
    "penalty_alpha": None,
    "dola_layers": None,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "return_dict_in_generate": False,
}
SUPPORTED_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
_GENERATE_CODE = inspect.unwrap(GenerationMixin.generate).__code__


def custom_generate(method: str | Callable = methods.DEFAULT_METHOD, **hyper_parameters) -> DecodeLoop:
    """A callable for ``model.generate(..., custom_generate=...)`` that decodes with ``method``.

    ``hyper_parameters``: ``decode``'s method options (``alpha``, ``beta``, ``lam``, ``layer_gamma``,
    ``seed``, ``noise_step``, ``gamma_decay``, ...). The generation options (``max_new_tokens``,
    ``min_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``) are ``generate``'s own
    arguments and are refused here. Unknown names or invalid values raise ``ValueError`` now.
    """
    misplaced = sorted(set(hyper_parameters) & set(GENERATION_OPTIONS))
    if misplaced:
        raise ValueError(
            f"{misplaced} are generation options: pass them to model.generate(...), not to custom_generate"
        )
    DecodeSettings(method=method, **hyper_parameters)  # raises now for unknown names and invalid values
    return DecodeLoop(method, dict(hyper_parameters))


CARD_METHODS_START = "<!-- methods: generated from the method registry (avisc_lib.methods) by write_card_methods -->"
CARD_METHODS_END = "<!-- end of methods -->"


def card_methods() -> str:
    """The card's list of methods (``custom_generate/README.md``), from the one registry of methods."""
    lines = "\n".join(f"  - `{m.name}`: {m.summary}" for m in methods.registered())
    return (
        f'{CARD_METHODS_START}\n- `method` (default `"{methods.DEFAULT_METHOD}"`), one of:\n{lines}\n{CARD_METHODS_END}'
    )


def write_card_methods(card: str | Path) -> None:
    """Rewrite the generated method list between the markers of the card file ``card``."""
    path = Path(card)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(CARD_METHODS_START), text.find(CARD_METHODS_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {CARD_METHODS_START!r} ... {CARD_METHODS_END!r} block")
    path.write_text(text[:start] + card_methods() + text[end + len(CARD_METHODS_END) :], encoding="utf-8")


def method_options() -> list[str]:
    """Names ``custom_generate`` accepts as hyper-parameters: ``DecodeSettings`` fields minus the generation options."""
    return [o.name for o in decode_options() if o.name not in GENERATION_OPTIONS]


@dataclass(frozen=True)
class DecodeLoop:
    """``decode(method=..., **hyper_parameters)`` as the decoding loop of ``GenerationMixin.generate``.

    Image inputs are parameters of ``__call__``: generate hands a callable's own keywords to it
    instead of encoding the image itself, so VCD can noise the pixels.
    """

    method: str | Callable
    hyper_parameters: dict[str, Any] = field(default_factory=dict)

    def __call__(
        self,
        model: PreTrainedModel,
        input_ids: torch.LongTensor,
        logits_processor: LogitsProcessorList,
        stopping_criteria: StoppingCriteriaList,
        generation_config: GenerationConfig,
        pixel_values: torch.Tensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.LongTensor | None = None,
        **model_kwargs,
    ) -> torch.LongTensor:
        """Prompt and new tokens ``[B, L + T]`` for ``input_ids [B, L]`` (left-padded for B > 1)."""
        check_dropped_arguments(sys._getframe(1))
        check_generation_config(generation_config)
        options = generation_options(generation_config, input_ids.shape[1])
        check_processors(logits_processor, stopping_criteria, options, input_ids.shape[1])
        check_model_inputs(model, pixel_values, model_kwargs)
        check_eos(model, generation_config)
        if (
            isinstance(self.method, str)
            and methods.get(self.method).choice == "sampling"
            and not generation_config.do_sample
        ):
            raise ValueError(
                f"method={self.method!r} samples: call generate with do_sample=True, or use method='greedy'"
            )
        attention_mask = model_kwargs.get("attention_mask")
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask,
            "pixel_values": pixel_values,
        }
        if qformer_input_ids is not None:
            inputs.update(qformer_input_ids=qformer_input_ids, qformer_attention_mask=qformer_attention_mask)
        tokens = decode(model, inputs, method=self.method, **self.hyper_parameters, **options)
        tokens = pad_after_eos(tokens.to(input_ids.device), generation_config)
        return torch.cat([input_ids, tokens], dim=1)


def generation_options(config: GenerationConfig, prompt_length: int) -> dict[str, Any]:
    """``decode``'s generation options from generate's prepared config (lengths count the prompt)."""
    max_new_tokens = config.max_length - prompt_length
    if max_new_tokens < 1:
        raise ValueError(
            f"max_length={config.max_length} leaves no new token after a {prompt_length}-token prompt; "
            "pass max_new_tokens"
        )
    min_new_tokens = max(config.min_new_tokens or 0, (config.min_length or 0) - prompt_length, 0)
    options = {"max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens, "do_sample": bool(config.do_sample)}
    if config.do_sample:
        sampling = {"temperature": config.temperature, "top_k": config.top_k, "top_p": config.top_p}
        options.update({name: value for name, value in sampling.items() if value is not None})
    return options


def pad_after_eos(tokens: torch.LongTensor, config: GenerationConfig) -> torch.LongTensor:
    """``tokens [B, T]`` with every position after a row's first EOS set to the config's pad id, as generate does."""
    eos, pad = config._eos_token_tensor, config._pad_token_tensor
    if eos is None or pad is None:
        return tokens
    is_eos = torch.isin(tokens, eos.to(tokens.device))
    after = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return tokens.masked_fill(after, int(pad))


def check_dropped_arguments(caller) -> None:
    """Refuse ``assistant_model`` and ``streamer`` of the calling ``generate``.

    transformers 5.24 replaces the generation-mode keywords by the callable's own before calling it,
    so these two never reach a ``custom_generate`` callable; they are read from generate's frame so
    that they raise instead of being ignored. A direct call (not from generate) checks nothing.
    """
    if caller.f_code is not _GENERATE_CODE:
        return
    given = [name for name in ("assistant_model", "streamer") if caller.f_locals.get(name) is not None]
    if given:
        raise ValueError(f"custom_generate does not support {given}: its decoding loop is avisc_lib.decode")


def check_generation_config(config: GenerationConfig) -> None:
    """Raise for config fields that ask for something decode does not do (beams, DoLa, dict outputs, ...)."""
    given = [
        f"{name}={getattr(config, name)!r}"
        for name, neutral in UNSUPPORTED_CONFIG.items()
        if getattr(config, name, None) not in (None, neutral)
    ]
    if given:
        raise ValueError(f"custom_generate does not support {', '.join(given)}: its decoding loop is avisc_lib.decode")
    mode = config.get_generation_mode()
    if mode not in SUPPORTED_MODES:
        raise ValueError(f"custom_generate does not support generation mode {mode.value!r}")


def check_processors(
    processors: LogitsProcessorList, criteria: StoppingCriteriaList, options: dict[str, Any], prompt_length: int
) -> None:
    """Raise for a logits processor or stopping criterion that ``options`` do not reproduce in decode.

    Temperature, top-k and top-p count only when sampling and must equal the options; the minimum
    lengths may not ask for more than ``min_new_tokens``; the length limit must be the config's
    (EOS is checked by ``check_eos``).
    """
    sampled = {
        TemperatureLogitsWarper: ("temperature", lambda p: p.temperature),
        TopKLogitsWarper: ("top_k", lambda p: p.top_k),
        TopPLogitsWarper: ("top_p", lambda p: p.top_p),
    }
    minimum = {
        MinNewTokensLengthLogitsProcessor: lambda p: p.min_new_tokens,
        MinLengthLogitsProcessor: lambda p: p.min_length - prompt_length,
    }
    extra = []
    for processor in processors:
        kind = type(processor)
        if kind in sampled:
            name, value = sampled[kind]
            applied = options["do_sample"] and options.get(name) == value(processor)
        else:
            applied = kind in minimum and minimum[kind](processor) <= options["min_new_tokens"]
        if not applied:
            extra.append(kind.__name__)
    max_length = prompt_length + options["max_new_tokens"]
    extra += [
        type(c).__name__
        for c in criteria
        if not (isinstance(c, EosTokenCriteria) or (isinstance(c, MaxLengthCriteria) and c.max_length == max_length))
    ]
    if extra:
        raise ValueError(
            f"custom_generate does not apply {extra} (from generate's arguments, e.g. repetition_penalty, "
            "logits_processor, stopping_criteria, stop_strings, max_time); supported: max/min_new_tokens, "
            "do_sample, temperature, top_k, top_p, eos_token_id"
        )


def check_model_inputs(model: PreTrainedModel, pixel_values: torch.Tensor | None, model_kwargs: dict) -> None:
    """Raise when the image is missing (InstructBLIP's own generate) or for model keywords decode would drop."""
    if pixel_values is None:
        source = (
            f"generate called custom_generate on {type(model).__name__} with inputs_embeds: InstructBLIP's "
            "generate (transformers 5.24) encodes the image itself and hands only its language model to "
            "custom_generate, so no image branch can be built. Call "
            "transformers.GenerationMixin.generate(model, **inputs, custom_generate=...) instead (the standard "
            "generate, which passes pixel_values through and returns the same prompt + new tokens), "
            "or avisc_lib.decode(model, inputs, method=...)"
            if "inputs_embeds" in model_kwargs
            else "pass the processor's output, pixel_values included, to generate"
        )
        raise ValueError(f"custom_generate needs pixel_values: {source}")
    cache = model_kwargs.get("cache")
    if cache is not None and cache.get_seq_length() > 0:
        raise ValueError(
            "custom_generate does not continue from a filled cache (past_key_values); pass the full prompt"
        )
    # generate always adds ``mm_encoder_outputs``; it stays empty when pixel_values come to us.
    unused = sorted(key for key, value in model_kwargs.items() if key not in LOOP_KWARGS and value not in (None, {}))
    if unused:
        raise ValueError(
            f"custom_generate does not use the model inputs {unused}; supported: input_ids, "
            "attention_mask, pixel_values, qformer_input_ids, qformer_attention_mask"
        )


def check_eos(model: PreTrainedModel, config: GenerationConfig) -> None:
    """Raise when the call sets an EOS other than the model's own, at which decode stops."""
    if _ids(config.eos_token_id) != _ids(model.generation_config.eos_token_id):
        raise ValueError(
            f"eos_token_id={config.eos_token_id!r} differs from the model's {model.generation_config.eos_token_id!r}; "
            "custom_generate stops at the model's own EOS (set model.generation_config.eos_token_id instead)"
        )


def _ids(value) -> set[int]:
    """EOS ids as a set, from None, an int, a list or a tensor."""
    if value is None:
        return set()
    if torch.is_tensor(value):
        value = value.tolist()
    return {value} if isinstance(value, int) else set(value)
