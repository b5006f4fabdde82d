"""Train the embedded tiny LLaVA in three LLaVA-style stages on the synthetic world.

    python -m avisc_lib.tiny.train --out runs/tiny            # ~10-15 min on 2 CPU cores
    python -m avisc_lib.tiny.train --out runs/tiny --install  # also copy into the package

Stage 0 pretrains the vision tower alone (the stand-in for CLIP pretraining): per-patch class
fractions, multi-label presence and object count from mean-pooled patch tokens, through small
heads that are thrown away afterwards. Stage 1 aligns the projector on captions with the tower
and language model frozen (LLaVA stage 1). Stage 2 instruction-tunes projector + language model
on all question families with balanced yes/no answers, tower frozen (LLaVA stage 2).

For the model-organism search, ``--steps-text N`` adds a text-only stage before stage 1 that
pretrains the language model on documents about scenes (:class:`TextStage`: packing, noise, its
optimiser), as LLaVA's language model is a text model before it sees images, and ``--texture``
trains in a world with textured backgrounds; the embedded model uses neither.

Every stage checkpoints to ``--out``; a rerun skips the stages already finished. Deterministic
for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..models.compat import text_attention
from ..tokens.sinks import activation
from ..world import questions as Q
from ..world.scenes import CATEGORIES, CATEGORY_ID, WorldConfig, make_scene, patch_labels
from . import corpora
from .bigram import bb_batch, held_out_rows, world_chain
from .build import PATCH_SIZE, build_model, build_processor, build_tokenizer
from .data import existence_report, pixel_values, training_batch, yes_no_margin

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
STAGE2_MIX = {"existence": 0.45, "caption": 0.15, "colour": 0.1, "shape": 0.1, "count": 0.12, "position": 0.08}
# Scene indices of the train split used by each stage (disjoint ranges).
STAGE_OFFSET = {0: 0, 1: 10_000_000, 2: 20_000_000, "text": 30_000_000}
TEXT_TURNS = 3  # question turns per text-only document
PACK_DOCS = 64  # scene indices reserved per packed text row
TEXT_TOKENS = ("words", "chat-bytes")  # what a language side can read (keys of corpora.TOKENIZERS)


def lr_schedule(step: int, total: int, warmup: int = 100, decay: bool = True) -> float:
    """Linear warm-up, then cosine decay (or constant: ``decay`` off), as a multiplier of the base learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    if not decay:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@dataclass
class Checkpoint:
    """Where :func:`optimise` saves ``module`` with its optimiser, schedule, history and torch RNG every
    ``every`` steps and at the end, and resumes from: a killed run continues where it stopped, and
    (batches being functions of the step) ends with the weights of an uninterrupted one."""

    path: Path
    module: nn.Module
    every: int = 250

    def save(self, step: int, opt, sched, history: list[dict], seconds: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"module": self.module.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
        state |= {"step": step, "history": history, "seconds": seconds, "rng": torch.get_rng_state()}
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(state, partial)
        partial.replace(self.path)  # a kill mid-save leaves the previous checkpoint whole

    def load(self, opt, sched) -> dict:
        """Restore the saved state into ``module``, ``opt`` and ``sched``: ``{"step", "history", "seconds"}``."""
        saved = torch.load(self.path, weights_only=True)
        self.module.load_state_dict(saved["module"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        torch.set_rng_state(saved["rng"])
        return {key: saved[key] for key in ("step", "history", "seconds")}


def optimise(
    params,
    steps: int,
    lr: float,
    batch_fn,
    loss_fn,
    desc: str,
    on_eval=None,
    every=250,
    weight_decay=0.01,
    decay=True,
    checkpoint: Checkpoint | None = None,
):
    """The shared loop: AdamW(0.9, 0.98), warm-up + cosine (or constant: ``decay`` off), grad-clip 1.0.

    Each ``on_eval`` row gets the step, the loss and the seconds spent so far; with a ``checkpoint``
    the loop resumes from it and saves to it."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_schedule(s, steps, decay=decay))
    state = {"step": 0, "history": [], "seconds": 0.0}
    if checkpoint is not None and checkpoint.path.exists():
        state = checkpoint.load(opt, sched)
    history, start = state["history"], time.time() - state["seconds"]
    bar = tqdm(range(state["step"], steps), desc=desc, mininterval=5, initial=state["step"], total=steps)
    for step in bar:
        loss = loss_fn(batch_fn(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if on_eval is not None and ((step + 1) % every == 0 or step + 1 == steps):
            history.append({"step": step + 1, "loss": loss.item(), **on_eval()})
            history[-1]["seconds"] = round(time.time() - start, 1)
            tqdm.write(f"[{desc}] step {step + 1}: " + json.dumps(history[-1]))
        if checkpoint is not None and ((step + 1) % checkpoint.every == 0 or step + 1 == steps):
            checkpoint.save(step + 1, opt, sched, history, time.time() - start)
    return history


def world(args) -> WorldConfig:
    """The world a run trains in: ``args.texture`` (0: the embedded model's flat background)."""
    return WorldConfig(texture=args.texture)


# ---------------------------------------------------------------- stage 0: the vision tower
class TowerHeads(nn.Module):
    """Throw-away heads: per-patch class (13 incl. background), presence (12), count (3)."""

    def __init__(self, width: int):
        super().__init__()
        self.patch = nn.Linear(width, len(CATEGORIES) + 1)
        self.presence = nn.Linear(width, len(CATEGORIES))
        self.count = nn.Linear(width, 3)


def stage0_targets(scenes) -> dict[str, torch.Tensor]:
    presence = torch.zeros(len(scenes), len(CATEGORIES))
    for i, s in enumerate(scenes):
        for c in s.categories:
            presence[i, CATEGORY_ID[c] - 1] = 1
    return {
        "pixels": pixel_values([s.image for s in scenes]),
        "patch": torch.from_numpy(np.stack([patch_labels(s.label_map, PATCH_SIZE) for s in scenes])),
        "presence": presence,
        "count": torch.tensor([len(s.objects) - 1 for s in scenes]),
    }


def tower_forward(tower, heads, pixels):
    tokens = tower(pixel_values=pixels).last_hidden_state[:, 1:]  # drop CLS, as LLaVA does
    pooled = tokens.mean(1)
    return heads.patch(tokens), heads.presence(pooled), heads.count(pooled)


def stage0_loss(tower, heads, batch):
    patch, presence, count = tower_forward(tower, heads, batch["pixels"])
    patch_ce = -(batch["patch"] * patch.log_softmax(-1)).sum(-1).mean()
    return (
        patch_ce
        + nn.functional.binary_cross_entropy_with_logits(presence, batch["presence"])
        + 0.5 * nn.functional.cross_entropy(count, batch["count"])
    )


@torch.no_grad()
def stage0_eval(tower, heads, world: WorldConfig, n: int = 512) -> dict[str, float]:
    scenes = [make_scene("validation", i, world) for i in range(n)]
    batch = stage0_targets(scenes)
    patch, presence, count = tower_forward(tower, heads, batch["pixels"])
    truth = batch["patch"].argmax(-1)
    on_object = truth > 0
    return {
        "patch_object_acc": (patch.argmax(-1) == truth)[on_object].float().mean().item(),
        "patch_background_acc": (patch.argmax(-1) == truth)[~on_object].float().mean().item(),
        "presence_acc": ((presence > 0).float() == batch["presence"]).float().mean().item(),
        "count_acc": (count.argmax(-1) == batch["count"]).float().mean().item(),
    }


def run_stage0(model, args) -> list[dict]:
    tower = model.model.vision_tower
    heads = TowerHeads(tower.config.hidden_size)
    torch.manual_seed(args.seed)
    nn.init.normal_(heads.patch.weight, std=0.02)

    def batch_fn(step):
        base = STAGE_OFFSET[0] + step * args.bs0
        return stage0_targets([make_scene("train", base + i, world(args)) for i in range(args.bs0)])

    params = list(tower.parameters()) + list(heads.parameters())
    return optimise(
        params,
        args.steps0,
        1e-3,
        batch_fn,
        lambda b: stage0_loss(tower, heads, b),
        "stage 0 (tower)",
        on_eval=lambda: stage0_eval(tower, heads, world(args)),
        every=500,
    )


# ---------------------------------------------------------------- stages 1 and 2: the LM side
def question_batch(tokenizer, stage: int, step: int, bs: int, mix: dict[str, float], seed: int, world: WorldConfig):
    rng = np.random.default_rng([seed, stage, step])
    families, weights = list(mix), np.array(list(mix.values()))
    scenes, qs = [], []
    i = 0
    while len(qs) < bs:
        scene = make_scene("train", STAGE_OFFSET[stage] + step * bs * 2 + i, world)
        i += 1
        q = Q.sample_question(scene, families[rng.choice(len(families), p=weights / weights.sum())], rng)
        if q is not None:
            scenes.append(scene)
            qs.append(q)
    return training_batch(tokenizer, scenes, qs)


def text_document(scene, rng: np.random.Generator) -> str:
    """A text-only chat about ``scene``: its caption where the image would stand, then question turns.

    ``USER: a red circle and a blue square.\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>...``
    Every answer follows from the caption, so the language model learns to read its context.
    """
    families, weights = list(STAGE2_MIX), np.array(list(STAGE2_MIX.values()))
    turns = [
        q
        for q in (Q.sample_question(scene, f, rng) for f in rng.choice(families, TEXT_TURNS, p=weights / weights.sum()))
        if q
    ]
    text = f"USER: {Q.caption(scene)}\n"
    for k, q in enumerate(turns):
        text += ("" if k == 0 else "USER: ") + f"{q['question']} ASSISTANT: {q['answer']}</s>"
    return text


def text_batch(
    tokenizer,
    step: int,
    bs: int,
    seed: int,
    split: str = "train",
    pack: int = 0,
    noise: int = 0,
    backcopy: float = 0.0,
    prose: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Text-only documents (BOS first, as always), with every real token a label.

    ``pack`` = 0: one document per row, right-padded. ``pack`` > 0: each row is a stream of documents
    cut at ``pack`` tokens (BOS only at its start), as language models are pretrained on packed text,
    with up to ``noise`` random words before each document (:func:`packed_text`); of its ``bs`` rows,
    ``round(backcopy * bs)`` are then Bigram-Backcopy rows of ``pack`` tokens over the world's
    vocabulary instead (:func:`.bigram.bb_batch`, chain seeded by ``seed``), and the last
    ``round(prose * bs)`` rows of English prose (:func:`prose_batch`).
    """
    n_bb, n_prose = round(backcopy * bs), round(prose * bs)
    if (n_bb or n_prose) and not pack:
        raise ValueError("Bigram-Backcopy and prose rows are mixed into packed text: set a text pack length too")
    if n_bb + n_prose > bs:
        raise ValueError(f"{n_bb} Bigram-Backcopy and {n_prose} prose rows do not fit a batch of {bs}")
    parts = []
    if n_bb + n_prose < bs:
        parts.append(document_batch(tokenizer, step, bs - n_bb - n_prose, seed, split, pack, noise))
    if n_bb:
        parts.append(bb_batch(world_chain(tokenizer, seed), tokenizer.bos_token_id, step, n_bb, pack, seed))
    if n_prose:
        parts.append(prose_batch(tokenizer, step, n_prose, pack, seed, split))
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def document_batch(
    tokenizer, step: int, bs: int, seed: int, split: str = "train", pack: int = 0, noise: int = 0
) -> dict[str, torch.Tensor]:
    """:func:`text_batch`'s rows of the world's documents alone."""
    rng = np.random.default_rng([seed, 3, step])
    if not pack:
        scenes = [make_scene(split, STAGE_OFFSET["text"] + step * bs + i) for i in range(bs)]
        texts = [text_document(s, rng) for s in scenes]
    else:
        texts = [packed_text(tokenizer, split, step * bs + i, pack, rng, noise) for i in range(bs)]
    batch = tokenizer(
        texts,
        padding="longest",
        padding_side="right",
        truncation=bool(pack),
        max_length=pack or None,
        return_tensors="pt",
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}


def prose_batch(tokenizer, step: int, bs: int, length: int, seed: int, split: str = "train") -> dict[str, torch.Tensor]:
    """``bs`` rows of BOS + ``length - 1`` tokens of English prose (:func:`.corpora.stdlib_text`) in
    ``tokenizer``'s tokens (:func:`prose_tokens`): from the corpus's training part, or for ``split``
    "validation" from its held-out tail."""
    train, held_out = corpora.split(corpora.encode(corpora.stdlib_text(), prose_tokens(tokenizer)))
    ids = train if split == "train" else held_out
    return corpora.prose_rows(ids, tokenizer.bos_token_id, bs, length, np.random.default_rng([seed, 4, step]))


def prose_tokens(tokenizer) -> str:
    """Which of :data:`TEXT_TOKENS` ``tokenizer`` is, by its vocabulary: the tokens prose rows are cut in."""
    vocab = tokenizer.get_vocab()
    for tokens in TEXT_TOKENS:
        if vocab == corpora.TOKENIZERS[tokens]().get_vocab():
            return tokens
    raise ValueError(
        "prose rows need the world tokenizer with the prose words (corpora.word_tokenizer) "
        "or the chat byte tokenizer (corpora.byte_tokenizer(chat=True))"
    )


def packed_text(tokenizer, split: str, row: int, pack: int, rng: np.random.Generator, noise: int = 0) -> str:
    """Documents about consecutive scenes of ``row``'s block, concatenated until they fill ``pack`` tokens.

    ``noise`` > 0 puts 0 to ``noise`` random words of the world's vocabulary before each document:
    unpredictable context, as natural text is, so that averaging over the context is no longer a
    near-constant no-op for an attention head with nothing to read.
    """
    words = Q.vocabulary()
    text = ""
    for k in range(PACK_DOCS):
        if noise:
            text += " ".join(rng.choice(words, rng.integers(0, noise + 1))) + " "
        text += text_document(make_scene(split, STAGE_OFFSET["text"] + row * PACK_DOCS + k), rng)
        if len(tokenizer(text).input_ids) >= pack:
            return text
    raise ValueError(f"{PACK_DOCS} documents do not fill {pack} tokens; lower --text-pack")


@torch.no_grad()
def text_probe(model, batch: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Whether BOS is a sink in text-only ``batch``, per language-model layer.

    ``bos_attention``: head-mean attention that real positions after BOS pay to it (``bos_top_head``:
    the largest of the heads' shares, where one dormant head among several shows); ``phi_bos``:
    the largest |x / rms(x)| entering the layer at BOS (a massive activation makes it approach
    sqrt(width)); ``phi_other``: the same, maximised over the other real tokens of each row.
    """
    with text_attention(model, "eager"):  # the only one that returns attention maps
        out = model.model.language_model(
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_attentions=True,
            output_hidden_states=True,
        )
    real = batch["attention_mask"].bool()[:, 1:]  # [B, L-1]
    probe = {"bos_attention": [], "bos_top_head": [], "phi_bos": [], "phi_other": []}
    for attention, hidden in zip(out.attentions, out.hidden_states):
        to_bos = attention[:, :, 1:, 0].transpose(1, 2)[real]  # [real positions, H]
        phi = activation(hidden).amax(-1)  # [B, L]
        probe["bos_attention"].append(round(float(to_bos.mean()), 4))
        probe["bos_top_head"].append(round(float(to_bos.mean(0).max()), 4))
        probe["phi_bos"].append(round(float(phi[:, 0].mean()), 3))
        probe["phi_other"].append(round(float(phi[:, 1:].masked_fill(~real, 0).amax(1).mean()), 3))
    return probe


@dataclass(frozen=True)
class TextStage:
    """The text-only pretraining stage (``steps`` = 0: none); ``pack``, ``noise`` and ``backcopy`` (the
    share of each batch's rows that are Bigram-Backcopy rows) as in :func:`text_batch`; ``decay`` off
    keeps the learning rate constant after the warm-up; the first ``backcopy_first`` steps are all
    Bigram-Backcopy rows (a curriculum: a model that has grown a sink, then text); ``prose``: the share
    of each batch's rows that are English prose (:func:`prose_batch`; the model then reads the words
    of :func:`.corpora.word_tokenizer`, see :func:`text_processor`); ``tokens``: one of
    :data:`TEXT_TOKENS`, what the language side reads ("chat-bytes": bytes, with its answers' own
    tokens, :func:`.corpora.byte_tokenizer`); ``init``: a safetensors file of a language model the stage
    starts from (:func:`load_language_model`), e.g. one of :mod:`.prose`'s runs, as LLaVA starts from a
    language model pretrained on natural text."""

    steps: int = 0
    pack: int = 0
    noise: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.01
    backcopy: float = 0.0
    decay: bool = True
    backcopy_first: int = 0
    prose: float = 0.0
    tokens: str = "words"
    init: str = ""

    @staticmethod
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        """The ``--steps-text`` and ``--text-*`` flags that :meth:`from_args` reads."""
        ap.add_argument("--steps-text", type=int, default=0, help="text-only LM pretraining before stage 1 (0: none)")
        ap.add_argument(
            "--text-pack",
            type=int,
            default=0,
            help="pack text documents into rows of this many tokens (0: one document per row)",
        )
        ap.add_argument(
            "--text-noise", type=int, default=0, help="up to this many random words before each packed document"
        )
        ap.add_argument("--text-lr", type=float, default=TextStage.lr, help="the text stage's learning rate")
        ap.add_argument("--text-wd", type=float, default=TextStage.weight_decay, help="the text stage's weight decay")
        ap.add_argument(
            "--text-backcopy",
            type=float,
            default=TextStage.backcopy,
            help="the share of the text stage's rows that are Bigram-Backcopy rows (packed text only)",
        )
        ap.add_argument(
            "--text-constant-lr",
            action="store_true",
            help="keep the text stage's learning rate constant after the warm-up (default: cosine decay)",
        )
        ap.add_argument(
            "--text-backcopy-first",
            type=int,
            default=TextStage.backcopy_first,
            help="the text stage's first steps whose rows are all Bigram-Backcopy rows (packed text only)",
        )
        ap.add_argument(
            "--text-prose",
            type=float,
            default=TextStage.prose,
            help="the share of the text stage's rows that are English prose (packed text only; words for a word side)",
        )
        ap.add_argument(
            "--text-tokens",
            choices=TEXT_TOKENS,
            default=TextStage.tokens,
            help="what the language side reads: the world's words, or bytes (packed text only)",
        )
        ap.add_argument(
            "--text-init",
            default=TextStage.init,
            help="a language model (safetensors, e.g. from prose --keep) the text stage starts from",
        )

    @classmethod
    def from_args(cls, args) -> TextStage:
        return cls(
            args.steps_text,
            args.text_pack,
            args.text_noise,
            args.text_lr,
            args.text_wd,
            args.text_backcopy,
            not args.text_constant_lr,
            args.text_backcopy_first,
            args.text_prose,
            args.text_tokens,
            args.text_init,
        )

    def __post_init__(self):
        if (self.noise or self.has_backcopy or self.prose or self.tokens != "words") and not self.pack:
            raise ValueError(
                "text noise, Bigram-Backcopy and prose rows, and bytes go with packed text: set a text pack length"
            )
        if self.tokens not in TEXT_TOKENS:
            raise ValueError(f"unknown text tokens {self.tokens!r}; choose one of {', '.join(TEXT_TOKENS)}")
        if self.init and not self.steps:
            raise ValueError("a language model to start from goes with a text stage: set its steps")
        if not (0 <= self.backcopy <= 1 and 0 <= self.prose <= 1 - self.backcopy):
            shares = f"{self.backcopy} and {self.prose}"
            raise ValueError(f"Bigram-Backcopy and prose shares are fractions of the rows, 1 at most in all: {shares}")
        if not 0 <= self.backcopy_first <= self.steps:
            raise ValueError(f"{self.backcopy_first} Bigram-Backcopy steps do not fit a {self.steps}-step text stage")

    @property
    def settings(self) -> list[str]:
        """Each setting that differs from its default, e.g. ``["pack256", "lr0.003", "bbfirst1000", "constant",
        "chat-bytes", "init-prose9000"]``."""
        default = TextStage()
        fields = (
            ("pack", "pack"),
            ("noise", "noise"),
            ("lr", "lr"),
            ("wd", "weight_decay"),
            ("bb", "backcopy"),
            ("bbfirst", "backcopy_first"),
            ("prose", "prose"),
        )
        numbers = [f"{short}{getattr(self, f):g}" for short, f in fields if getattr(self, f) != getattr(default, f)]
        tokens = [self.tokens] if self.tokens != default.tokens else []
        init = [f"init-{Path(self.init).stem}"] if self.init else []
        return numbers + ([] if self.decay else ["constant"]) + tokens + init

    @property
    def name(self) -> str:
        """``text3000-pack256-lr0.003``: the steps, then :attr:`settings`."""
        return "-".join([f"text{self.steps}", *self.settings])

    @property
    def has_backcopy(self) -> bool:
        """Whether any of the stage's rows are Bigram-Backcopy rows."""
        return bool(self.backcopy or self.backcopy_first)

    def backcopy_share(self, step: int) -> float:
        """The share of ``step``'s rows that are Bigram-Backcopy rows."""
        return 1.0 if step < self.backcopy_first else self.backcopy

    def prose_share(self, step: int) -> float:
        """The share of ``step``'s rows that are English prose (none while they are all Bigram-Backcopy rows)."""
        return 0.0 if step < self.backcopy_first else self.prose


NO_TEXT = TextStage()


def text_processor(text: TextStage, cls_token: bool = True):
    """The processor of a model whose text stage is ``text`` (:func:`.build.build_processor`): its
    tokenizer reads ``text.tokens``, words knowing the prose's words when the stage has prose rows."""
    if text.tokens == "chat-bytes":
        tokenizer = corpora.byte_tokenizer(chat=True, split_special_tokens=False)  # "<image>" is one token
    else:
        tokenizer = build_tokenizer(corpora.prose_words() if text.prose else ())
    return build_processor(cls_token, tokenizer)


LANGUAGE_MODEL_KEYS = ("model.language_model.", "lm_head.")  # a LLaVA state dict's language model and head


@torch.no_grad()
def load_language_model(model, path: Path) -> None:
    """Start ``model``'s language model and head from the safetensors file ``path`` (``prose --keep``
    writes one) of a model with the same language model. Where the vocabulary has grown since (tokens
    appended, as ``chat-bytes`` appends its answers' to the bytes), the new rows of the embedding and
    head start at the mean of the saved rows."""
    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        raise FileNotFoundError(f"no safetensors file to start the language model from at {path}")
    saved = load_file(path)
    for key, own in model.state_dict().items():
        if not key.startswith(LANGUAGE_MODEL_KEYS):
            continue
        if key not in saved:
            raise ValueError(f"{path} holds no {key}: not a checkpoint of this language model")
        old = saved[key]
        if old.shape == own.shape:
            own.copy_(old)
        elif old.shape[1:] == own.shape[1:] and len(old) < len(own):  # token rows appended since
            own[: len(old)] = old
            own[len(old) :] = old.mean(0)
        else:
            raise ValueError(f"{key} is {tuple(old.shape)} in {path} and {tuple(own.shape)} here")


def save_language_model(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write the language model and head of LLaVA state dict ``state`` to the safetensors file ``path``
    (what :func:`load_language_model` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items() if k.startswith(LANGUAGE_MODEL_KEYS)}, path)


def train_language_model_only(model) -> None:
    """Make the language model and its head the only trainable parameters of ``model``."""
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(("model.language_model.", "lm_head."))


def run_text_stage(model, processor, text: TextStage, bs: int, seed: int, checkpoint: Path | None = None) -> list[dict]:
    """Pretrain the language model (and its head) on text alone, as LLaVA's LM is pretrained before it sees images.

    Every 1000 steps: the held-out loss and :func:`text_probe` on held-out documents (text only, so
    that runs with and without Bigram-Backcopy or prose rows compare), and where the stage has
    Bigram-Backcopy rows also :func:`text_probe` on 64 held-out ones (keys prefixed ``bb_``), where it
    has prose rows on 64 rows of the prose's held-out tail (keys prefixed ``prose_``).
    """
    train_language_model_only(model)
    if text.init:
        load_language_model(model, Path(text.init))
    tokenizer = processor.tokenizer
    held_out = text_batch(tokenizer, 0, 64 if text.pack else 256, seed, "validation", text.pack, text.noise)
    if text.has_backcopy:
        held_out_bb = held_out_rows(world_chain(tokenizer, seed), tokenizer.bos_token_id, text.pack, seed)
    if text.prose:
        held_out_prose = prose_batch(tokenizer, 0, 64, text.pack, seed, "validation")

    @torch.no_grad()
    def validation() -> dict:
        model.eval()
        loss = model(**held_out).loss.item()
        probe = text_probe(model, held_out)
        if text.has_backcopy:
            probe |= {f"bb_{key}": value for key, value in text_probe(model, held_out_bb).items()}
        if text.prose:
            probe |= {f"prose_{key}": value for key, value in text_probe(model, held_out_prose).items()}
        model.train()
        return {"validation_loss": round(loss, 4), **probe}

    def batch(step: int) -> dict[str, torch.Tensor]:
        shares = {"backcopy": text.backcopy_share(step), "prose": text.prose_share(step)}
        return text_batch(tokenizer, step, bs, seed, pack=text.pack, noise=text.noise, **shares)

    torch.manual_seed(seed + 3)
    model.train()
    return optimise(
        model.parameters(),
        text.steps,
        text.lr,
        batch,
        lambda b: model(**b).loss,
        "text stage (LM)",
        on_eval=validation,
        every=1000,
        weight_decay=text.weight_decay,
        decay=text.decay,
        checkpoint=Checkpoint(checkpoint, model) if checkpoint else None,
    )


def lm_eval(model, processor, items) -> dict[str, float]:
    model.eval()
    report = existence_report(yes_no_margin(model, processor, items), items)
    model.train()
    return {k: round(v, 4) for k, v in report.items()}


def run_lm_stage(model, processor, stage: int, args, items, checkpoint: Path | None = None) -> list[dict]:
    """LLaVA stage 1 (projector on captions) or 2 (projector + LM on every question family), validated on
    ``items`` every 250 steps; with a ``checkpoint`` path it saves there as often and resumes from it."""
    trainable = {1: ["multi_modal_projector"], 2: ["multi_modal_projector", "language_model"]}[stage]
    for name, p in model.named_parameters():
        p.requires_grad = any(f".{t}." in f".{name}" for t in trainable)
    steps, mix = (args.steps1, {"caption": 1.0}) if stage == 1 else (args.steps2, STAGE2_MIX)
    torch.manual_seed(args.seed + stage)
    model.train()
    return optimise(
        model.parameters(),
        steps,
        5e-4,
        lambda step: question_batch(processor.tokenizer, stage, step, args.bs, mix, args.seed, world(args)),
        lambda b: model(**b).loss,
        f"stage {stage} ({'projector' if stage == 1 else 'projector + LM'})",
        on_eval=lambda: lm_eval(model, processor, items),
        checkpoint=Checkpoint(checkpoint, model) if checkpoint else None,
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/tiny"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps0", type=int, default=1500)
    ap.add_argument("--steps1", type=int, default=200)
    ap.add_argument("--steps2", type=int, default=2000)
    TextStage.add_arguments(ap)
    ap.add_argument("--bs0", type=int, default=64)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texture", type=int, default=0, help="the world's background texture (0: the embedded model's)")
    ap.add_argument("--install", action="store_true", help=f"copy the final model to {PACKAGE_WEIGHTS}")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {"args": {}, "stages": {}}
    log["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}

    processor = text_processor(TextStage.from_args(args))
    model = build_model(processor.tokenizer, seed=args.seed)
    items = Q.existence_set("validation", 300, world=world(args))
    for stage in (0, "text", 1, 2) if args.steps_text else (0, 1, 2):
        ckpt = args.out / f"stage{stage}.pt"
        if ckpt.exists():
            model.load_state_dict(torch.load(ckpt, weights_only=True))
            print(f"stage {stage}: reusing {ckpt}")
            continue
        start = time.time()
        if stage == 0:
            history = run_stage0(model, args)
        elif stage == "text":
            history = run_text_stage(model, processor, TextStage.from_args(args), args.bs, args.seed)
        else:
            history = run_lm_stage(model, processor, stage, args, items)
        log["stages"][str(stage)] = {"minutes": round((time.time() - start) / 60, 2), "history": history}
        torch.save(model.state_dict(), ckpt)
        log_path.write_text(json.dumps(log, indent=1))

    final = args.out / "model"
    model.eval()
    for p in model.parameters():
        p.requires_grad = True
    model.save_pretrained(final)
    processor.save_pretrained(final)
    print(f"saved {final}")
    if args.install:
        shutil.rmtree(PACKAGE_WEIGHTS, ignore_errors=True)
        shutil.copytree(final, PACKAGE_WEIGHTS)
        shutil.copy(log_path, PACKAGE_WEIGHTS / "train_log.json")
        print(f"installed into {PACKAGE_WEIGHTS}")


if __name__ == "__main__":
    main()
