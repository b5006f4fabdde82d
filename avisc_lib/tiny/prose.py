"""Does the organism's language model grow a BOS sink on natural English text?

    python -m avisc_lib.tiny.prose --family gpt2 --dropout 0 --lr 3e-3 --wd 0.1
    python -m avisc_lib.tiny.prose --corpus world ...  # the control: the world's chats in the same bytes
    python -m avisc_lib.tiny.prose --tokens words ...  # words, as the world tokenizer splits them
    python -m avisc_lib.tiny.prose --summary           # the log as a markdown table

On the world's templated text no language model of the organism search has grown a BOS sink, while
the same models grow one on Bigram-Backcopy (:mod:`.backcopy`). This probe asks which of the two the
world's text lacks: natural text or a bigger budget. It trains the organism's language model
(:func:`.build.build_model`, any size and family) from scratch on English prose that every Python
install carries, byte by byte, with the text stage's batch and row length, and probes where its heads
look (:func:`.backcopy.head_probe`). Gu et al. (arXiv 2410.10781) see sinks emerge in small language
models trained on natural text; if this one grows none at this budget either, the budget is short.

The corpus (``--corpus stdlib``): the standard library's docstrings (every ``.py`` file under the
stdlib folder, tests and site-packages left out, in sorted path order) followed by
``pydoc_data.topics``. Its control (``--corpus world``): as many characters of the world's chats,
the text stage's documents, in the same byte tokens, which tells the text's part from the
tokenisation's. ``--tokens words`` uses the world tokenizer instead, with the prose's
:data:`PROSE_WORDS` most frequent words added (:func:`word_tokenizer`): the vocabulary a language side
would need to read both, on which "<s>" and "</s>" in the text are BOS and EOS as in the text stage.
A corpus's last 5 % is held out; training rows are BOS plus a window of the rest at
a seeded random offset. Runs log and resume as :mod:`.backcopy`'s do (``--log``, ``--work``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import pydoc_data.topics
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from ..world.scenes import make_scene
from .backcopy import describe, even_share, logged_run, probe_parser, recipe_of, top_bos_head, train_and_probe
from .build import SPECIAL_TOKENS, LMSize, build_model, build_tokenizer, named_specials
from .search import log_rows
from .train import STAGE_OFFSET, text_document

LOG = Path("results/organism/prose_log.jsonl")  # relative to the repository root
HELD_OUT = 0.05  # the corpus's last share, for validation
VALIDATION_ROWS = 64
WORLD_DOCUMENTS = 10_500
PROSE_WORDS = 4096  # 95 % of the stdlib corpus's words and punctuation runs


def byte_tokenizer():
    """One token per byte (GPT-2's byte alphabet, no merges) after the world tokenizer's special
    tokens, with BOS prepended as the world tokenizer does."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + sorted(alphabet))}
    tk = Tokenizer(BPE(vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return named_specials(tk, split_special_tokens=True)  # "<s>" in a docstring is four bytes, not BOS


def stdlib_text() -> str:
    """The standard library's docstrings, then the pydoc topics (about 2.3 M characters on 3.11)."""
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


def world_text() -> str:
    """The text stage's chats about :data:`WORLD_DOCUMENTS` training scenes, back to back as it packs
    them (:func:`.train.text_document`; about as many characters as :func:`stdlib_text`)."""
    rng = np.random.default_rng(0)
    scenes = (make_scene("train", STAGE_OFFSET["text"] + i) for i in range(WORLD_DOCUMENTS))
    return "".join(text_document(scene, rng) for scene in scenes)


CORPORA = {"stdlib": stdlib_text, "world": world_text}


@functools.cache
def corpus(name: str) -> str:
    """The text of corpus ``name`` (a key of :data:`CORPORA`)."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
    return CORPORA[name]()


@functools.cache
def word_tokenizer():
    """The world tokenizer (:func:`.build.build_tokenizer`) with the :data:`PROSE_WORDS` most frequent
    words of the stdlib corpus added, split and lower-cased as it splits and lower-cases text."""
    words = pre_tokenizers.Whitespace().pre_tokenize_str(corpus("stdlib").lower())
    return build_tokenizer([word for word, _ in Counter(w for w, _ in words).most_common(PROSE_WORDS)])


TOKENIZERS = {"bytes": byte_tokenizer, "words": word_tokenizer}


@functools.cache
def corpus_ids(name: str, tokens: str = "bytes") -> np.ndarray:
    """Corpus ``name`` as ids [N] (no BOS) of the tokenizer ``tokens`` (a key of :data:`TOKENIZERS`)."""
    return np.asarray(TOKENIZERS[tokens]()(corpus(name), add_special_tokens=False).input_ids, dtype=np.int64)


def prose_rows(ids: np.ndarray, bos: int, bs: int, length: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``bs`` rows of BOS + ``length - 1`` consecutive tokens of ``ids`` from random offsets; every
    token a label."""
    starts = rng.integers(0, len(ids) - length, bs)
    windows = np.stack([ids[s : s + length - 1] for s in starts])
    rows = torch.tensor(np.concatenate([np.full((bs, 1), bos), windows], axis=1))
    return {"input_ids": rows, "attention_mask": torch.ones_like(rows), "labels": rows}


def split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) parts of ``ids``: the held-out part is the last :data:`HELD_OUT` share."""
    cut = int(len(ids) * (1 - HELD_OUT))
    return ids[:cut], ids[cut:]


def run(lm: LMSize, text: str, tokens: str, recipe: dict, every: int, checkpoint: Path) -> list[dict]:
    """Train language model ``lm`` on corpus ``text`` in ``tokens`` from scratch (``recipe``:
    :func:`.backcopy.recipe_of`'s), probed on :data:`VALIDATION_ROWS` held-out rows."""
    tokenizer, seed, length = TOKENIZERS[tokens](), recipe["seed"], recipe["length"]
    train, held_out = split(corpus_ids(text, tokens))
    bos = tokenizer.bos_token_id
    return train_and_probe(
        build_model(tokenizer, seed=seed, lm=lm),
        prose_rows(held_out, bos, VALIDATION_ROWS, length, np.random.default_rng([seed, 1])),
        lambda step: prose_rows(train, bos, recipe["batch"], length, np.random.default_rng([seed, 0, step])),
        "prose (LM)",
        recipe,
        every,
        checkpoint,
    )


def summary(log: Path) -> str:
    """A markdown table of the logged runs at their last probe: the held-out loss (nats per token), the
    head that gives BOS the largest share against the even share, the largest share any head gives
    the previous token, and the largest |x / rms(x)| at BOS and elsewhere."""
    header = (
        "| corpus | tokens | language model | steps | batch x length | tokens (epochs) | lr / wd | minutes "
        "| held-out loss | top BOS head (layer.head): share (even) | top previous-token share "
        "| phi at BOS / elsewhere |\n" + "|---" * 12 + "|"
    )
    rows = [header]
    for row in log_rows(log):
        r, last = row["recipe"], row["history"][-1]
        layer, head = top_bos_head(last)
        tokens = r["steps"] * r["batch"] * r["length"]
        name = row["corpus"].get("name", "stdlib")  # the first row was logged before --corpus existed
        kind = row["corpus"].get("tokens", "bytes")  # and the first three before --tokens
        rows.append(
            f"| {name} | {kind} | {describe(r)} | {r['steps']} | {r['batch']} x {r['length']} "
            f"| {tokens / 1e6:.0f} M ({tokens / row['corpus']['train_tokens']:.0f}) | {r['lr']:g} / {r['wd']:g} "
            f"| {row['minutes']:.0f} | {last['validation_loss']:.3f} "
            f"| {layer}.{head}: {last['bos'][layer][head]:.3f} ({even_share(r['length']):.3f}) "
            f"| {max(max(h) for h in last['previous']):.3f} "
            f"| {max(last['phi_bos']):.1f} / {max(last['phi_other']):.1f} |"
        )
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = probe_parser(__doc__, LOG, length=256, lr=3e-3, wd=0.1)
    ap.add_argument("--corpus", choices=CORPORA, default="stdlib", help="English prose, or the world's chats")
    ap.add_argument("--tokens", choices=TOKENIZERS, default="bytes", help="bytes, or words (see word_tokenizer)")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(args.log))
        return
    torch.set_num_threads(args.threads)
    lm, recipe = recipe_of(args)
    source = {
        "name": args.corpus,
        "characters": len(corpus(args.corpus)),
        "sha256": hashlib.sha256(corpus(args.corpus).encode()).hexdigest(),
        "tokens": args.tokens,
        "vocabulary": len(TOKENIZERS[args.tokens]()),
        "train_tokens": len(split(corpus_ids(args.corpus, args.tokens))[0]),
    }

    def train(checkpoint: Path) -> list[dict]:
        return run(lm, args.corpus, args.tokens, recipe, args.every, checkpoint)

    logged_run(args, recipe, train, corpus=source)


if __name__ == "__main__":
    main()
