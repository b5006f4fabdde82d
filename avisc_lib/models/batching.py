"""Consecutive batches over N items: the one loop behind every batched pass of the library.

    for k, rows in batches(len(questions), batch_size, desc="study"):
        inputs = encode(model, processor, images[rows], questions[rows])

Batch ``k`` covers items ``k * batch_size`` up to ``(k + 1) * batch_size`` (the last may be
shorter); callers that sample seed batch ``k`` with ``seed + k``, so that an item's batch and
seed do not depend on how a run is resumed or shared out.
"""

from __future__ import annotations

from collections.abc import Iterator

from tqdm.auto import tqdm


def batches(n: int, batch_size: int, desc: str | None = None) -> Iterator[tuple[int, slice]]:
    """``(k, slice of batch k)`` for the consecutive batches of ``batch_size`` over ``n`` items.

    ``desc``: the label of a tqdm bar, shown only when there is more than one batch; None for
    no bar. ``n`` must be an int >= 0 and ``batch_size`` an int >= 1 (checked at the call).
    """
    _check_int("n", n, 0)
    _check_int("batch_size", batch_size, 1)
    starts = range(0, n, batch_size)
    bar = tqdm(starts, desc=desc, disable=desc is None or len(starts) <= 1)
    return ((k, slice(start, start + batch_size)) for k, start in enumerate(bar))


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
