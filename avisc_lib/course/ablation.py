"""Measurements behind the paper's observation and motivation: where attention goes, and what
masking blind, non-blind or random image tokens does to the first answer token.

These are the numbers the notebooks plot and the tiny model's card reports. Every function takes
batched tensors so that statistics over hundreds of samples cost a few forwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, ProcessorMixin

from ..decoding import decode
from ..generation import ANSWER_WORDS, answer_logits, answer_token_ids
from ..hooks.capture import image_attention
from ..models.batching import batches
from ..models.inputs import encode
from ..scores import contrast_logits, plausibility_cut
from ..tokens.blind import random_like, select_blind_tokens

# Ablation conditions: name -> which image tokens are replaced (zeroed), given the blind mask and
# a random mask with as many tokens per row as the blind one.
CONDITIONS = {
    "original": lambda blind, rand: None,
    "zero blind": lambda blind, rand: blind,
    "zero random (same size)": lambda blind, rand: rand,
    "keep blind only": lambda blind, rand: ~blind,  # AvisC's biased input
    "keep random only (same size)": lambda blind, rand: ~rand,
    "zero all": lambda blind, rand: torch.ones_like(blind),
}


def top_k_share(attention: torch.Tensor, k: int) -> torch.Tensor:
    """Share of the image attention, averaged over layers, held by the ``k`` most attended tokens:
    ``attention [B, layers, N]`` -> ``float[B]`` (all of it when ``k >= N``)."""
    per_token = attention.float().mean(1)
    share = per_token / per_token.sum(-1, keepdim=True)
    return share.topk(min(k, share.shape[-1]), dim=-1).values.sum(-1)


def attention_summary(
    attention: torch.Tensor, blind: torch.Tensor, on_object: torch.Tensor | None = None, top_k: int = 5
) -> dict[str, torch.Tensor]:
    """Per-sample statistics, each ``float[B]``.

    ``attention [B, layers, N]`` (from ``image_attention``), ``blind [B, N]``, and optionally
    ``on_object [B, N]`` (True where a token's patch shows an object). Attention is averaged over
    all layers, as in the paper's observation figure.
    """
    per_token = attention.float().mean(1)  # [B, N]
    share = per_token / per_token.sum(-1, keepdim=True)
    stats = {
        "image_share": per_token.sum(-1),  # of the last position's attention, on image tokens
        "top1_share": top_k_share(attention, 1),
        f"top{top_k}_share": top_k_share(attention, top_k),
        "n_blind": blind.sum(-1).float(),
    }
    if on_object is not None:
        on_object = on_object.to(blind.device)
        stats["object_token_rate"] = on_object.float().mean(-1)
        stats["blind_on_object"] = (blind & on_object).sum(-1) / blind.sum(-1).clamp(min=1)
        stats["attention_on_object"] = (share * on_object).sum(-1)
    return stats


@torch.no_grad()
def ablation_logits(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    blind: torch.Tensor,
    token_ids: Sequence[int],
    conditions: Sequence[str] = tuple(CONDITIONS),
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """First-answer-token logits ``float[B, K]`` of ``token_ids`` under each masking condition."""
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown ablation conditions {unknown}; expected some of {list(CONDITIONS)}")
    rand = random_like(blind, generator)
    return {name: answer_logits(model, inputs, token_ids, replace=CONDITIONS[name](blind, rand)) for name in conditions}


@dataclass
class Study:
    """Attention, blind tokens and first-token logits for N (image, question) pairs."""

    attention: torch.Tensor  # [N, layers, tokens]
    blind: torch.Tensor  # [N, tokens]
    logits: dict[str, torch.Tensor]  # condition -> [N, K], K = len(words)
    words: tuple[str, ...]

    def margin(self, condition: str = "original") -> torch.Tensor:
        """``float[N]``: logit of the first word minus the second (e.g. yes - no)."""
        return self.logits[condition][:, 0] - self.logits[condition][:, 1]


def run_study(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    images: Sequence,
    questions: Sequence[str],
    *,
    words: Sequence[str] = ANSWER_WORDS,
    conditions: Sequence[str] = tuple(CONDITIONS),
    layer_gamma: float = 0.5,
    lam: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
) -> Study:
    """Batched :func:`image_attention`, :func:`select_blind_tokens` and :func:`ablation_logits`.

    ``words``: the answers whose first token's logits are compared (see :func:`answer_token_ids`).
    """
    token_ids = answer_token_ids(model, processor, words)
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for _, rows in batches(len(questions), batch_size, desc="study"):
        inputs = encode(model, processor, images[rows], questions[rows])
        attention = image_attention(model, inputs).cpu()
        blind = select_blind_tokens(attention, layer_gamma, lam)
        logits = ablation_logits(model, inputs, blind, token_ids, conditions, generator)
        parts.append((attention, blind, {k: v.cpu() for k, v in logits.items()}))
    return Study(
        attention=torch.cat([p[0] for p in parts]),
        blind=torch.cat([p[1] for p in parts]),
        logits={c: torch.cat([p[2][c] for p in parts]) for c in conditions},
        words=tuple(words),
    )


def blind_overlap(blind: torch.Tensor, generator: torch.Generator | None = None) -> tuple[float, float]:
    """Mean pairwise Jaccard overlap of blind sets across images ``blind [B, N]``, and the same
    for random sets of the same sizes (the overlap expected by chance)."""

    def mean_jaccard(m: torch.Tensor) -> float:
        m = m.float()
        inter = m @ m.T
        union = m.sum(1, keepdim=True) + m.sum(1) - inter
        off_diag = ~torch.eye(len(m), dtype=torch.bool)
        return float((inter / union.clamp(min=1))[off_diag].mean())

    return mean_jaccard(blind), mean_jaccard(random_like(blind, generator))


def avisc_grid(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    token_ids: Sequence[int],
    *,
    alphas: Sequence[float],
    betas: Sequence[float],
    lams: Sequence[float],
    layer_gammas: Sequence[float],
) -> pd.DataFrame:
    """AvisC's first-token outcome for one prompt over a hyper-parameter grid.

    One single-token ``decode(..., return_dict=True)`` per (lam, layer_gamma), whose trace holds
    both branches' logits; alpha and beta are arithmetic on them, so an interactive control can
    browse the result without calling the model. Columns: the four hyper-parameters, ``n_blind``,
    ``p_<id>`` (probability after contrast and cut) for each of ``token_ids``, and ``choice``
    (argmax token id).
    """
    rows = []
    for lam, gamma in tqdm(list(itertools.product(lams, layer_gammas)), desc="biased forwards", unit="pass"):
        step = decode(model, inputs, method="avisc", lam=lam, layer_gamma=gamma, max_new_tokens=1, return_dict=True)
        original, biased = step.logits[0][0], step.branch_logits[0][0]
        for alpha, beta in itertools.product(alphas, betas):
            scores = plausibility_cut(contrast_logits(original, biased, alpha), original, beta)
            probs = scores.softmax(-1)
            rows.append(
                {
                    "alpha": alpha,
                    "beta": beta,
                    "lam": lam,
                    "layer_gamma": gamma,
                    "n_blind": int(step.kept.sum()),
                    "choice": int(scores.argmax()),
                    **{f"p_{t}": float(probs[t]) for t in token_ids},
                }
            )
    return pd.DataFrame(rows)
