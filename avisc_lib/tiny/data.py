"""Turn synthetic scenes and questions into model batches for training and quick evaluation."""

from __future__ import annotations

import numpy as np
import torch

from ..generation import answer_logits, answer_token_ids
from ..models.batching import batches
from ..models.inputs import encode
from ..world import questions as Q
from ..world.scenes import Scene
from .build import NUM_IMAGE_TOKENS


def pixel_values(images) -> torch.Tensor:
    """PIL images -> ``float32[B, 3, 64, 64]`` normalised like the processor ((x/255-0.5)/0.5)."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).div(255.0).sub(0.5).div(0.5)


def prompt_text(question: str) -> str:
    """The llava-1.5 prompt with the image placeholder expanded, as the processor would build it."""
    return f"USER: {'<image>' * NUM_IMAGE_TOKENS}\n{question} ASSISTANT:"


def training_batch(tokenizer, scenes: list[Scene], qs: list[dict]) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels only on the answer tokens (and the closing EOS)."""
    prompts = tokenizer([prompt_text(q["question"]) for q in qs])["input_ids"]
    answers = tokenizer([" " + q["answer"] for q in qs], add_special_tokens=False)["input_ids"]
    seqs = [p + a + [tokenizer.eos_token_id] for p, a in zip(prompts, answers)]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, len(p) : len(s)] = torch.tensor(s[len(p) :])
        mask[i, : len(s)] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "pixel_values": pixel_values([s.image for s in scenes]),
    }


def yes_no_margin(model, processor, items, batch_size: int = 100) -> torch.Tensor:
    """``float[N]``: logit(yes) - logit(no) at the answer position for (scene, question) items."""
    yes_no = answer_token_ids(model, processor, ["yes", "no"])  # as they start after "ASSISTANT:"
    margins = []
    for _, rows in batches(len(items), batch_size):
        chunk = items[rows]
        inputs = encode(model, processor, [s.image for s, _ in chunk], [q["question"] for _, q in chunk])
        logits = answer_logits(model, inputs, yes_no)
        margins.append(logits[:, 0] - logits[:, 1])
    return torch.cat(margins)


def existence_report(margins: torch.Tensor, items) -> dict[str, float]:
    """Accuracy overall, on positives and per negative kind, plus the yes-ratio."""
    said_yes = (margins > 0).tolist()
    correct = [sy == (q["answer"] == "yes") for sy, (_, q) in zip(said_yes, items)]
    report = {"accuracy": float(np.mean(correct)), "yes_ratio": float(np.mean(said_yes))}
    groups = {"positive": lambda q: q["answer"] == "yes"}
    groups.update({k: (lambda q, k=k: q["negative"] == k) for k in Q.NEGATIVE_KINDS})
    for name, keep in groups.items():
        sel = [c for c, (_, q) in zip(correct, items) if keep(q)]
        report[name] = float(np.mean(sel)) if sel else float("nan")
    return report
