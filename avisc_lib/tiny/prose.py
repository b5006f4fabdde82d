"""Does the organism's language model grow a BOS sink on natural English text?

    python -m avisc_lib.tiny.prose --family gpt2 --dropout 0 --lr 3e-3 --wd 0.1
    python -m avisc_lib.tiny.prose --corpus world ...  # the control: the world's chats in the same bytes
    python -m avisc_lib.tiny.prose --tokens words ...  # words, as the world tokenizer splits them
    python -m avisc_lib.tiny.prose --tokens chat-bytes --keep LM.safetensors ...  # for search --text-init
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
tokenisation's. ``--tokens words`` uses the world tokenizer instead, with the prose's most frequent
words added (:func:`.corpora.word_tokenizer`): the vocabulary a language side needs to read both;
``--tokens chat-bytes`` the lower-cased bytes a byte language side reads (:func:`.corpora.byte_tokenizer`
``chat``), and ``--keep`` saves the trained model for it to start from (``search --text-init``).
A corpus's last 5 % is held out; training rows are BOS plus a window of the rest at a seeded random
offset. Runs log and resume as :mod:`.backcopy`'s do (``--log``, ``--work``).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch

from ..world.scenes import make_scene
from .backcopy import describe, even_share, logged_run, probe_parser, recipe_of, top_bos_head, train_and_probe
from .build import LMSize, build_model
from .corpora import TOKENIZERS, encode, prose_rows, split, stdlib_text
from .search import log_rows
from .train import STAGE_OFFSET, text_document

LOG = Path("results/organism/prose_log.jsonl")  # relative to the repository root
VALIDATION_ROWS = 64
WORLD_DOCUMENTS = 10_500


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


def corpus_ids(name: str, tokens: str = "bytes") -> np.ndarray:
    """Corpus ``name`` as ids [N] (no BOS) of the tokenizer ``tokens`` (a key of :data:`.corpora.TOKENIZERS`)."""
    return encode(corpus(name), tokens)


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
    ap.add_argument("--tokens", choices=TOKENIZERS, default="bytes", help="bytes, words or chat-bytes (see corpora)")
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
