"""Bigram-Backcopy (Guo et al., arXiv 2410.13835): sequences that follow a fixed bigram chain, except
that after one of a few trigger tokens the next token repeats the one before the trigger.

A head that serves the copy has nothing to read at the other positions; in Guo et al.'s models it
parks that attention on BOS. :mod:`.backcopy` trains language models on it alone; the text stage of
:mod:`.train` can mix its rows into the world's packed text (``TextStage.backcopy``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Chain:
    """A bigram chain over ``tokens`` [V]: each token's ``successors`` [V, fanout] (row indices)
    with ``probs`` [V, fanout]; after a token in ``triggers`` (row indices) the next token copies
    the one before the trigger."""

    tokens: np.ndarray
    successors: np.ndarray
    probs: np.ndarray
    triggers: frozenset[int]

    def sample(self, rng: np.random.Generator, length: int) -> np.ndarray:
        """One sequence of ``length`` token ids (no BOS)."""
        rows = [int(rng.integers(len(self.tokens)))]
        while len(rows) < length:
            last = rows[-1]
            if last in self.triggers and len(rows) >= 2:
                rows.append(rows[-2])
            else:
                rows.append(int(rng.choice(self.successors[last], p=self.probs[last])))
        return self.tokens[rows]

    def copy_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: the positions of rows from :func:`bb_batch` (BOS first) that hold a trigger
        from position 2 on, i.e. whose next token is a copy (a copy head's "active" positions)."""
        triggers = torch.as_tensor(self.tokens[sorted(self.triggers)])
        copy = torch.isin(input_ids, triggers)
        copy[:, :2] = False
        return copy


def ideal_loss(chain: Chain, input_ids: torch.Tensor) -> float:
    """The loss per label that a model knowing the chain and the copy rule reaches on ``input_ids``
    [B, L] (BOS first): log V for the first token, 0 after a trigger, the successors' entropy elsewhere."""
    entropy = torch.as_tensor(-(chain.probs * np.log(chain.probs)).sum(1))  # [V]
    row_of = torch.full((int(chain.tokens.max()) + 1,), -1)
    row_of[torch.as_tensor(chain.tokens)] = torch.arange(len(chain.tokens))
    queries = slice(1, input_ids.shape[1] - 1)  # the positions that predict a chain token from a chain token
    losses = entropy[row_of[input_ids[:, queries]]].masked_fill(chain.copy_positions(input_ids)[:, queries], 0)
    first = np.log(len(chain.tokens)) * input_ids.shape[0]  # BOS predicts the first token
    return float((first + losses.sum()) / (input_ids.shape[0] * (input_ids.shape[1] - 1)))


def make_chain(tokens: np.ndarray, seed: int = 0, fanout: int = 4, n_triggers: int = 3) -> Chain:
    """A random chain over ``tokens`` whose triggers are its ``n_triggers`` most frequent tokens
    under the bigram chain's stationary distribution, copies aside (as Guo et al. pick the most frequent ones)."""
    rng = np.random.default_rng(seed)
    v = len(tokens)
    successors = np.stack([rng.choice(v, fanout, replace=False) for _ in range(v)])
    probs = rng.dirichlet(np.ones(fanout), size=v)
    transition = np.zeros((v, v))
    np.add.at(transition, (np.arange(v)[:, None], successors), probs)
    stationary = np.full(v, 1 / v)
    for _ in range(1000):
        stationary = stationary @ transition
    triggers = frozenset(int(i) for i in np.argsort(-stationary)[:n_triggers])
    return Chain(np.asarray(tokens), successors, probs, triggers)


@functools.cache
def world_chain(tokenizer, seed: int) -> Chain:
    """The chain over the tiny world's vocabulary (special tokens excluded) that a run trains on
    (built once per tokenizer and seed: the text stage asks for it at every step)."""
    return make_chain(np.array([i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]), seed)


def bb_batch(chain: Chain, bos: int, step: int, bs: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """``bs`` rows of BOS + ``length - 1`` chain tokens, every token a label; ``step`` seeds the rows."""
    rng = np.random.default_rng([seed, step])
    ids = torch.tensor(np.stack([np.concatenate([[bos], chain.sample(rng, length - 1)]) for _ in range(bs)]))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def held_out_rows(chain: Chain, bos: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """The 64 rows every probe of a run measures (seeded apart from the training rows)."""
    return bb_batch(chain, bos, 0, 64, length, seed + 1)
