"""Does the tiny LLaVA's language model grow a BOS sink on the Bigram-Backcopy task?

    python -m avisc_lib.tiny.backcopy --layers 1 --heads 1 --steps 3000 --batch 128
    python -m avisc_lib.tiny.backcopy --summary    # the log as a markdown table

Guo et al. (arXiv 2410.13835) grow attention sinks in one- to three-layer transformers trained on
Bigram-Backcopy (BB): tokens follow a fixed bigram chain, except that after one of a few trigger
tokens the next token repeats the one before the trigger. A head that serves the copy has nothing
to read at the other positions; in their models it parks that attention on BOS (the "dormant"
state), and BOS grows a large residual norm. This is the organism search's cheapest test of its
language side: if the organism's language model (:func:`.build.build_model`'s Llama, any size)
grows no BOS sink on the task built to grow one, it will not grow one on the world's text either.
``--family`` swaps the Llama for GPT-NeoX (rotary, plain GELU MLP) or GPT-2 (learned absolute
positions, plain GELU MLP, as in Guo et al.'s models), to tell the architecture's part from the budget's.

The probe reports, per layer and head, where the attention of the positions after the first two
goes: to BOS, to the token itself, and to the token before it (the copy head's target), plus the
largest |x / rms(x)| at BOS and elsewhere. A finished run writes one JSON line to ``--log``; an
interrupted one resumes from its checkpoint under ``--work`` when the same command is rerun.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from ..models.compat import text_attention
from ..tokens.sinks import activation
from .bigram import bb_batch, held_out_rows, ideal_loss, world_chain
from .build import LM_FAMILIES, LMSize, build_model, build_tokenizer
from .search import log_row, log_rows
from .train import Checkpoint, optimise, save_language_model, train_language_model_only

LOG = Path("results/organism/backcopy_log.jsonl")  # relative to the repository root
WORK = Path("runs/organism/probes")
LM_FIELDS = [f.name for f in fields(LMSize)]  # a log row's recipe holds these, then the training settings
TRAINING = ("steps", "batch", "length", "lr", "wd", "seed")


@torch.no_grad()
def head_probe(model, input_ids: torch.Tensor, copy: torch.Tensor | None = None) -> dict[str, list]:
    """Where each head of ``model``'s language model looks, on ``input_ids`` [B, L] (no padding).

    ``bos``, ``self``, ``previous``: per layer, per head, the mean attention that positions 2..L-1
    pay to BOS, to themselves and to the position before them; ``phi_bos`` / ``phi_other``: per
    layer, the largest |x / rms(x)| entering it at BOS / elsewhere (the row's maximum, batch mean).
    With ``copy`` [B, L] (:meth:`Chain.copy_positions`), also ``bos_copy`` / ``bos_other``: the BOS
    share at those positions and at the other positions 2..L-1 (a dormant head: high at the others only).
    """
    with text_attention(model, "eager"):  # the only one that returns attention maps
        out = model.model.language_model(input_ids, output_attentions=True, output_hidden_states=True)
    positions = torch.arange(2, input_ids.shape[1])
    probe = {"bos": [], "self": [], "previous": [], "phi_bos": [], "phi_other": []}
    if copy is not None:
        probe |= {"bos_copy": [], "bos_other": []}
        split = {"bos_copy": copy[:, positions], "bos_other": ~copy[:, positions]}  # [B, L-2] each
    for attention, hidden in zip(out.attentions, out.hidden_states):  # attention [B, H, L, L]
        for key, columns in (("bos", 0), ("self", positions), ("previous", positions - 1)):
            share = attention[:, :, positions, columns].mean((0, 2))  # [H]
            probe[key].append([round(float(x), 4) for x in share])
        if copy is not None:
            to_bos = attention[:, :, positions, 0].transpose(1, 2)  # [B, L-2, H]
            for key, where in split.items():
                probe[key].append([round(float(x), 4) for x in to_bos[where].mean(0)])
        phi = activation(hidden).amax(-1)  # [B, L]
        probe["phi_bos"].append(round(float(phi[:, 0].mean()), 3))
        probe["phi_other"].append(round(float(phi[:, 1:].amax(1).mean()), 3))
    return probe


def train_and_probe(
    model,
    held_out: dict[str, torch.Tensor],
    batch_fn,
    desc: str,
    recipe: dict,
    every: int,
    checkpoint: Path,
    copy: torch.Tensor | None = None,
) -> list[dict]:
    """Train ``model``'s language model alone on ``batch_fn(step)`` for the ``recipe``'s steps, lr, wd
    and seed; every ``every`` steps the loss and :func:`head_probe` on ``held_out`` rows (``copy``
    [B, L]: their copy positions, if any). The run saves itself to ``checkpoint`` every 250 steps and
    resumes from it."""
    train_language_model_only(model)

    def validation() -> dict:
        model.eval()
        loss = model(**held_out).loss.item()
        probe = head_probe(model, held_out["input_ids"], copy)
        model.train()
        return {"validation_loss": round(loss, 4), **probe}

    torch.manual_seed(recipe["seed"])
    model.train()
    return optimise(
        model.parameters(),
        recipe["steps"],
        recipe["lr"],
        batch_fn,
        lambda b: model(**b).loss,
        desc,
        on_eval=validation,
        every=every,
        weight_decay=recipe["wd"],
        checkpoint=Checkpoint(checkpoint, model),
    )


def run(lm: LMSize, recipe: dict, every: int, checkpoint: Path) -> list[dict]:
    """Train language model ``lm`` on BB from scratch (``recipe``: :func:`recipe_of`'s), probed on
    :func:`.bigram.held_out_rows`."""
    tokenizer, seed, length = build_tokenizer(), recipe["seed"], recipe["length"]
    chain = world_chain(tokenizer, seed)
    rows = held_out_rows(chain, tokenizer.bos_token_id, length, seed)
    return train_and_probe(
        build_model(tokenizer, seed=seed, lm=lm),
        rows,
        lambda step: bb_batch(chain, tokenizer.bos_token_id, step, recipe["batch"], length, seed),
        "bigram-backcopy (LM)",
        recipe,
        every,
        checkpoint,
        copy=chain.copy_positions(rows["input_ids"]),
    )


def even_share(length: int) -> float:
    """The share :func:`head_probe` gives BOS (or self, or previous) under uniform causal attention."""
    return float(np.mean([1 / (t + 1) for t in range(2, length)]))


def summary(log: Path) -> str:
    """A markdown table of the logged runs at their last probe: the held-out loss against the ideal
    (the copy learned?), the head that gives BOS the largest share (a sink?) against the even share,
    with that head's share at copy / other positions where logged (a dormant head parks on BOS at the
    others), the largest share any head gives the previous token (the copy head), and the largest |x / rms(x)|."""
    tokenizer = build_tokenizer()
    header = (
        "| language model | steps | batch x length | tokens | lr / wd | minutes | held-out loss (ideal) "
        "| top BOS head (layer.head): share (even); at copy / other positions "
        "| top previous-token share | phi at BOS / elsewhere |\n" + "|---" * 10 + "|"
    )
    rows = [header]
    for row in log_rows(log):
        r, last = row["recipe"], row["history"][-1]
        chain = world_chain(tokenizer, r["seed"])
        ideal = ideal_loss(chain, held_out_rows(chain, tokenizer.bos_token_id, r["length"], r["seed"])["input_ids"])
        layer, head = top_bos_head(last)
        split = (
            "–"
            if "bos_copy" not in last
            else f"{last['bos_copy'][layer][head]:.3f} / {last['bos_other'][layer][head]:.3f}"
        )
        rows.append(
            f"| {describe(r)} | {r['steps']} | {r['batch']} x {r['length']} "
            f"| {r['steps'] * r['batch'] * r['length'] / 1e6:.0f} M | {r['lr']:g} / {r['wd']:g} | {row['minutes']:.0f} "
            f"| {last['validation_loss']:.3f} ({ideal:.3f}) "
            f"| {layer}.{head}: {last['bos'][layer][head]:.3f} ({even_share(r['length']):.3f}); {split} "
            f"| {max(max(h) for h in last['previous']):.3f} "
            f"| {max(last['phi_bos']):.1f} / {max(last['phi_other']):.1f} |"
        )
    return "\n".join(rows)


def probe_parser(doc: str, log: Path, **defaults) -> argparse.ArgumentParser:
    """The command line of a from-scratch language-model probe (this one and :mod:`.prose`): the
    model's size and architecture, the training settings (``defaults`` override theirs) and the log."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--family", choices=LM_FAMILIES, default="llama", help="the language model's architecture")
    ap.add_argument("--rope-theta", type=float, default=LMSize.rope_theta, help="the rotary base (rotary families)")
    ap.add_argument("--attention-bias", action="store_true", help="biases on Llama's attention projections")
    ap.add_argument("--dropout", type=float, help="every dropout the model has (default: the family's; GPT-2's 0.1)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128, help="tokens per row, BOS included")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", type=Path, default=log)
    ap.add_argument("--work", type=Path, default=WORK, help="where an unfinished run keeps its checkpoint")
    ap.add_argument(
        "--keep",
        type=Path,
        help="save the finished run's language model here (safetensors, for search --text-init)",
    )
    ap.add_argument("--summary", action="store_true", help="print the log as a markdown table, then stop")
    ap.set_defaults(**defaults)
    return ap


def recipe_of(args: argparse.Namespace) -> tuple[LMSize, dict]:
    """The language model a probe's command line asks for, and the recipe its log row records."""
    lm = LMSize(**{k: getattr(args, k) for k in LM_FIELDS})
    return lm, asdict(lm) | {k: getattr(args, k) for k in TRAINING}


def logged_run(args: argparse.Namespace, recipe: dict, train, **extra) -> None:
    """Run ``train(checkpoint)`` (the history) and log its row to ``args.log``: ``recipe``, ``extra``,
    the minutes of training (summed over resumed sessions) and the history. An interrupted run resumes
    from its checkpoint under ``args.work`` (named by the log and the recipe) when rerun; the
    checkpoint goes once the row is logged, its language model saved to ``args.keep`` first if set."""
    key = hashlib.sha256(json.dumps(recipe | extra, sort_keys=True).encode()).hexdigest()[:12]
    checkpoint = args.work / f"{args.log.stem}-{key}.pt"
    history = train(checkpoint)
    row = {"recipe": recipe, **extra, "minutes": round(history[-1]["seconds"] / 60, 1), "history": history}
    log_row(args.log, row)
    if args.keep:
        save_language_model(torch.load(checkpoint, weights_only=True)["module"], args.keep)
    checkpoint.unlink()
    print(f"logged to {args.log}")


def describe(recipe: dict) -> str:
    """A logged recipe's language model, e.g. ``4 x 128, 2 heads, gpt2, dropout 0``."""
    lm = LMSize(**{k: recipe[k] for k in LM_FIELDS if k in recipe})
    return f"{lm.layers} x {lm.width}, {lm.heads} head" + "s" * (lm.heads != 1) + lm.architecture


def top_bos_head(probe: dict) -> tuple[int, int]:
    """(layer, head) of the head that gives BOS the largest share in a :func:`head_probe` result."""
    bos = np.array(probe["bos"])  # [layers, heads]
    layer, head = np.unravel_index(bos.argmax(), bos.shape)
    return int(layer), int(head)


def main(argv=None) -> None:
    args = probe_parser(__doc__, LOG).parse_args(argv)
    if args.summary:
        print(summary(args.log))
        return
    torch.set_num_threads(args.threads)
    lm, recipe = recipe_of(args)
    logged_run(args, recipe, lambda checkpoint: run(lm, recipe, args.every, checkpoint))


if __name__ == "__main__":
    main()
