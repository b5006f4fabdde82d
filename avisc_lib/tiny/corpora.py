"""English prose for the organism's language model: the text, its tokenizers, and rows cut from it.

Every Python install carries the same prose: the standard library's docstrings and the pydoc topics
(:func:`stdlib_text`). :mod:`.prose` trains a language model on it alone; a text stage with prose rows
(:class:`.train.TextStage` ``prose``) mixes it into the world's chats, in :func:`word_tokenizer`'s words
or in the bytes of :func:`byte_tokenizer` ``chat``.
"""

from __future__ import annotations

import ast
import functools
import pydoc_data.topics
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from .build import SPECIAL_TOKENS, build_tokenizer, named_specials

HELD_OUT = 0.05  # a corpus's last share, for validation
PROSE_WORDS = 4096  # 95 % of the stdlib corpus's words and punctuation runs


@functools.cache
def stdlib_text() -> str:
    """The standard library's docstrings, then the pydoc topics (about 2.3 M characters on 3.11): every
    ``.py`` file under the stdlib folder, tests and site-packages left out, in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if "site-packages" in parts or any(p.startswith("test") for p in parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))  # the broken fixtures live in tests
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        docs += [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))]
    topics = pydoc_data.topics.topics
    return "\n\n".join(docs + [topics[key] for key in sorted(topics)])


ANSWER_MERGES = [("Ġ", "y"), ("Ġy", "e"), ("Ġye", "s"), ("Ġ", "n"), ("Ġn", "o")]  # " yes", " no"


def byte_tokenizer(chat: bool = False, split_special_tokens: bool = True):
    """One token per byte (GPT-2's byte alphabet) after the world tokenizer's special tokens, with BOS
    prepended as the world tokenizer does.

    ``chat``: the byte tokenizer a language side can read, lower-casing as the world tokenizer does and
    merging " yes" and " no" (:data:`ANSWER_MERGES`, tokens appended after the bytes, whose ids stay) so
    that each answer starts with a token of its own after "ASSISTANT:", as "▁Yes" and "▁No" do for
    LLaVA's tokenizer. ``split_special_tokens``: "<s>" in a text is four bytes, not BOS (a processor
    needs it off, to find "<image>").
    """
    merges = ANSWER_MERGES if chat else []
    vocab = SPECIAL_TOKENS + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["".join(pair) for pair in merges]
    tk = Tokenizer(BPE({t: i for i, t in enumerate(vocab)}, merges=merges))
    if chat:
        tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return named_specials(tk, split_special_tokens=split_special_tokens)


@functools.cache
def prose_words() -> tuple[str, ...]:
    """The :data:`PROSE_WORDS` most frequent words of :func:`stdlib_text`, split and lower-cased as the
    world tokenizer splits and lower-cases text."""
    words = pre_tokenizers.Whitespace().pre_tokenize_str(stdlib_text().lower())
    return tuple(word for word, _ in Counter(w for w, _ in words).most_common(PROSE_WORDS))


@functools.cache
def word_tokenizer():
    """The world tokenizer (:func:`.build.build_tokenizer`) with :func:`prose_words` added after the
    world's words, whose ids stay; "<s>" and "</s>" in a text are BOS and EOS, as in the text stage."""
    return build_tokenizer(prose_words())


TOKENIZERS = {
    "bytes": byte_tokenizer,
    "words": word_tokenizer,
    "chat-bytes": functools.partial(byte_tokenizer, chat=True),  # a corpus's "<s>" still split into bytes
}


@functools.cache
def encode(text: str, tokens: str) -> np.ndarray:
    """``text`` as ids [N] (no BOS) of the tokenizer ``tokens`` (a key of :data:`TOKENIZERS`)."""
    return np.asarray(TOKENIZERS[tokens]()(text, add_special_tokens=False).input_ids, dtype=np.int64)


def split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) parts of ``ids``: the held-out part is the last :data:`HELD_OUT` share."""
    cut = int(len(ids) * (1 - HELD_OUT))
    return ids[:cut], ids[cut:]


def prose_rows(ids: np.ndarray, bos: int, bs: int, length: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``bs`` rows of BOS + ``length - 1`` consecutive tokens of ``ids`` from random offsets; every
    token a label."""
    starts = rng.integers(0, len(ids) - length, bs)
    windows = np.stack([ids[s : s + length - 1] for s in starts])
    rows = torch.tensor(np.concatenate([np.full((bs, 1), bos), windows], axis=1))
    return {"input_ids": rows, "attention_mask": torch.ones_like(rows), "labels": rows}
