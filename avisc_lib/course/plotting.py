"""Figures for the notebooks: attention bars, overlays on the image's token grid, heat maps,
ablation plots, bars with their 95 % intervals, and a helper that saves every figure to the
repository's ``figures/``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch


def figures_dir() -> Path:
    """``$AVISC_FIGURES``, else the ``figures/`` of the enclosing checkout, else ``./figures``."""
    if os.environ.get("AVISC_FIGURES"):
        return Path(os.environ["AVISC_FIGURES"])
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "pyproject.toml").exists() and (folder / "avisc_lib").is_dir():
            return folder / "figures"
    return Path.cwd() / "figures"


def save_figure(fig: plt.Figure, name: str) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` and return the path."""
    path = figures_dir() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def is_grid(num_tokens: int) -> bool:
    """True when ``num_tokens`` image tokens form a square patch grid (LLaVA, not Q-Former queries)."""
    return math.isqrt(num_tokens) ** 2 == num_tokens


def processed_image(processor, pixel_values: torch.Tensor) -> np.ndarray:
    """The crop the model sees, ``float[H, W, 3]`` in [0, 1], from one ``pixel_values [3, H, W]``."""
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean).view(3, 1, 1)
    std = torch.tensor(ip.image_std).view(3, 1, 1)
    return (pixel_values.float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def token_bars(scores: torch.Tensor, lam: float = 1.0, ax=None, title: str = ""):
    """Bar chart of per-token attention ``scores [N]`` with the mean + lam*std line; blind bars red."""
    ax = ax or plt.gca()
    s = scores.float().cpu().numpy()
    threshold = s.mean() + lam * s.std(ddof=1)
    ax.bar(np.arange(len(s)), s, color=np.where(s >= threshold, "tab:red", "tab:blue"), width=1.0)
    ax.axhline(threshold, color="black", ls="--", lw=1, label=f"mean + {lam:g}·std")
    ax.set(xlabel="image token", ylabel="attention", title=title)
    ax.legend(loc="upper right")
    return ax


def overlay(image: np.ndarray, scores: torch.Tensor, blind: torch.Tensor | None = None, ax=None, title: str = ""):
    """Attention ``scores [N]`` drawn over ``image`` on its sqrt(N) x sqrt(N) token grid.

    Blind tokens (``blind [N]``) get a red outline. Needs a square grid (LLaVA-style patches).
    """
    ax = ax or plt.gca()
    grid = math.isqrt(scores.numel())
    if grid * grid != scores.numel():
        raise ValueError(f"{scores.numel()} image tokens do not form a square grid (e.g. Q-Former queries)")
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0))
    heat = scores.float().cpu().reshape(grid, grid).numpy()
    ax.imshow(heat, cmap="magma", alpha=0.55, extent=(0, w, h, 0), interpolation="nearest")
    if blind is not None:
        cell = w / grid
        for idx in torch.nonzero(blind.cpu()).flatten().tolist():
            r, c = divmod(idx, grid)
            ax.add_patch(plt.Rectangle((c * cell, r * cell), cell, cell, fill=False, ec="red", lw=1.2))
    ax.set(title=title, xticks=[], yticks=[])
    return ax


def layer_heatmap(attention: torch.Tensor, ax=None, title: str = ""):
    """Heat map of ``attention [layers, N]`` (one row per language-model layer)."""
    ax = ax or plt.gca()
    sns.heatmap(attention.float().cpu().numpy(), ax=ax, cmap="viridis", cbar_kws={"label": "attention"})
    ax.set(xlabel="image token", ylabel="layer", title=title)
    ax.set_xticks([])
    return ax


def frequency_map(blind: torch.Tensor, ax=None, title: str = ""):
    """How often each token position is blind across images: ``blind [B, N]`` -> grid image."""
    ax = ax or plt.gca()
    freq = blind.float().mean(0)
    grid = math.isqrt(freq.numel())
    data = (freq.reshape(grid, grid) if grid * grid == freq.numel() else freq[None]).cpu().numpy()
    sns.heatmap(
        data,
        ax=ax,
        cmap="rocket_r",
        vmin=0,
        vmax=1,
        square=grid * grid == freq.numel(),
        cbar_kws={"label": "fraction of images where blind"},
    )
    ax.set(title=title, xticks=[], yticks=[])
    return ax


def top_tokens(scores: torch.Tensor, tokenizer, k: int = 6, ax=None, title: str = ""):
    """Horizontal bars of the ``k`` most probable tokens under ``softmax(scores [V])``."""
    ax = ax or plt.gca()
    probs = scores.float().softmax(-1)
    top = probs.topk(k)
    names = tokenizer.convert_ids_to_tokens(top.indices.tolist())
    ax.barh(range(k)[::-1], top.values.cpu().numpy(), color="tab:purple")
    ax.set_yticks(range(k)[::-1], names)
    ax.set(xlim=(0, 1), xlabel="probability", title=title)
    return ax


def interval_bars(frame, x: str, hue: str, value: str, order, hue_order, ax=None):
    """Grouped bars of ``frame[value]`` (one row per ``x`` and ``hue``) with their 95 % intervals
    (``<value> low``/``<value> high``, as :func:`avisc_lib.course.experiments.table` gives) as error bars."""
    ax = ax or plt.gca()
    width = 0.8 / len(hue_order)
    colours = sns.color_palette(n_colors=len(hue_order))
    rows = frame.set_index([x, hue])
    for j, (name, colour) in enumerate(zip(hue_order, colours)):
        at = [(i, rows.loc[(key, name)]) for i, key in enumerate(order) if (key, name) in rows.index]
        spots = np.array([i for i, _ in at]) - 0.4 + width * (j + 0.5)
        mids = np.array([r[value] for _, r in at])
        below, above = mids - [r[f"{value} low"] for _, r in at], [r[f"{value} high"] for _, r in at] - mids
        ax.bar(spots, mids, width, color=colour, label=name)
        ax.errorbar(spots, mids, yerr=[below, above], fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks(range(len(order)), order)
    return ax
