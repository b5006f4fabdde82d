"""From images and questions to answer strings, and first-answer-token logits for yes/no probes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from .decoding import decode
from .models import compat
from .models.batching import batches
from .models.inputs import embed_prompt, encode
from .models.prompts import build_prompt
from .tokens.masking import replace_image_tokens

# How LLaVA-1.5 and InstructBLIP start a yes/no answer; lower-casing tokenizers map them to their own ids.
ANSWER_WORDS = ("Yes", "No")


def generate(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    *,
    method: str,
    prompt_style: str | None = None,
    batch_size: int = 8,
    **decode_kwargs,
) -> list[str]:
    """Answer each ``questions[i]`` about ``images[i]`` with ``decode(method=...)``; stripped strings.

    Prompts follow ``prompt_style`` (see ``build_prompt``). Inputs go through ``decode`` in batches of
    ``batch_size``; with a ``seed``, batch k uses ``seed + k``. A progress bar shows when there is
    more than one batch.
    """
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images for {len(questions)} questions")
    seed = decode_kwargs.pop("seed", None)
    answers: list[str] = []
    for k, rows in batches(len(questions), batch_size, desc=method):
        batch = encode(model, processor, images[rows], questions[rows], prompt_style)
        tokens = decode(model, batch, method=method, seed=None if seed is None else seed + k, **decode_kwargs)
        answers += [text.strip() for text in processor.batch_decode(tokens, skip_special_tokens=True)]
    return answers


def answer_token_ids(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    words: Sequence[str] = ANSWER_WORDS,
    prompt_style: str | None = None,
) -> list[int]:
    """Id of the token each answer in ``words`` starts with when it follows the model's prompt.

    The prompt template decides it: after LLaVA-1.5's "ASSISTANT:" a SentencePiece tokenizer starts
    "Yes" with "▁Yes", which is neither the id of "yes" nor that of "Yes" tokenized alone. The prompt
    is tokenized with and without " <word>" appended; the first id after the common prefix is the one.
    """
    tokenizer = processor.tokenizer
    prompt = build_prompt(model, processor, "Is there a dog in the image?", prompt_style)
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = []
    for word in words:
        full = tokenizer(f"{prompt} {word}", add_special_tokens=False)["input_ids"]
        if full[: len(base)] != base or len(full) == len(base):
            raise ValueError(f"appending {word!r} changes the prompt's own tokens; pass token ids explicitly")
        if full[len(base)] == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer does not know {word!r}")
        ids.append(full[len(base)])
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer words {list(words)} start with the same token {ids}")
    return ids


def candidate_token_ids(processor: ProcessorMixin, words: Sequence[str]) -> list[int]:
    """First token id of each candidate answer word (e.g. ``["Yes", "No"]``) as the model would start it."""
    tokenizer = processor.tokenizer
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words]
    unknown = [w for w, i in zip(words, ids) if i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"the tokenizer does not know {unknown}")
    return ids


@torch.no_grad()
def answer_logits(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    token_ids: Sequence[int],
    *,
    replace: torch.Tensor | None = None,
    scheme: str = "zeros",
) -> torch.Tensor:
    """Logits of ``token_ids`` as the first answer token, float32 ``[B, K]``.

    ``replace [B, N]``: image tokens to replace per ``scheme`` first (e.g. the non-blind ones, which
    gives AvisC's biased branch), or None for the model's own prediction.
    """
    prompt = embed_prompt(model, inputs)
    features = prompt.features if replace is None else replace_image_tokens(prompt.features, replace, scheme)
    logits, _ = compat.language_model_forward(model, prompt.with_images(features), prompt.attention_mask)
    return logits[:, list(token_ids)].float()
