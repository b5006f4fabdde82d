"""How sure a benchmark number is: intervals, paired comparisons and the smallest detectable gain.

- :func:`wilson`: a proportion's interval (accuracy, yes ratio, MME's acc);
- :func:`bootstrap`: any statistic of independent units (F1 over questions, acc+ over image pairs,
  CHAIR over captions), percentile interval from seeded resamples;
- :func:`compare`: a method against its baseline on the *same* questions: the paired bootstrap
  interval of the difference and McNemar's exact test on the discordant pairs;
- :func:`detectable_difference`: the smallest paired gain a run of ``n`` questions detects with
  80 % power, from the share of questions on which the two methods disagree (Connor 1987);
- :func:`seed_spread`: the spread of a sampled run's metric over seeds.

Everything is in the metric's own unit (a fraction for accuracy; multiply for percentages with
:meth:`Interval.scaled`). References for the tests: statsmodels' ``proportion_confint(method="wilson")``
and ``mcnemar(exact=True)``, scipy's ``bootstrap`` and ``binomtest``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist, fmean, stdev

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point ``value`` and its interval ``[low, high]`` at ``level``."""

    value: float
    low: float
    high: float
    level: float = LEVEL

    def scaled(self, factor: float) -> Interval:
        return Interval(self.value * factor, self.low * factor, self.high * factor, self.level)

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or below 0 (a difference that is distinguishable)."""
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 1, sign: bool = False) -> str:
        """``84.7 [80.1, 88.6]``; with ``sign``, ``+0.7 [-2.0, +3.4]``."""
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        return f"{f.format(self.value)} [{f.format(self.low)}, {f.format(self.high)}]"

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "level": self.level}


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: int, n: int, level: float = LEVEL) -> Interval:
    """Wilson score interval of ``successes / n``."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    z, p = _z(level), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


CHUNK = 250  # resamples drawn at a time, so that [CHUNK, n, k] stays small


def _index_chunks(n: int, resamples: int, seed: int, strata: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """``[<= CHUNK, n]`` row indices drawn with replacement (seeded), ``resamples`` rows in all;
    with ``strata`` (``[n]`` labels) each stratum is resampled within itself, its size fixed."""
    if n <= 0:
        raise ValueError("cannot resample an empty set of units")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for start in range(0, resamples, CHUNK):
        rows = min(CHUNK, resamples - start)
        yield np.concatenate([g[rng.integers(0, len(g), size=(rows, len(g)))] for g in groups], axis=1)


def _draws(
    statistics: Mapping[str, Statistic], tables: Sequence[np.ndarray], resamples: int, seed: int, strata
) -> dict[str, np.ndarray]:
    """``[resamples]`` values of each statistic over one shared set of resamples of ``tables`` (each
    ``[n, ...]``, rows gathered once per chunk for all statistics); with two tables, resampled with the
    same rows, the values are the paired differences ``statistic(first) - statistic(second)``."""
    out: dict[str, list] = {name: [] for name in statistics}
    for rows in _index_chunks(len(tables[0]), resamples, seed, strata):
        samples = [table[rows] for table in tables]
        for name, statistic in statistics.items():
            values = [statistic(sample) for sample in samples]
            out[name].append(values[0] - values[1] if len(values) == 2 else values[0])
    return {name: np.concatenate(values) for name, values in out.items()}


def _percentile(value: float, draws: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(value), float(low), float(high), level)


Statistic = Callable[[np.ndarray], np.ndarray]  # [R, n, ...] units -> [R] values


def accuracy(sample: np.ndarray) -> np.ndarray:
    """Share of right answers: ``[R, n]`` bool -> ``[R]``."""
    return sample.mean(-1)


def bootstrap(
    statistic: Statistic,
    units: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    strata: np.ndarray | None = None,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over independent ``units`` ``[n, ...]``.

    ``statistic`` maps a stack of samples ``[R, n, ...]`` to ``[R]`` (vectorised over the first
    axis); the point value is ``statistic(units[None])``. ``strata``: see :func:`_indices`.
    """
    units = np.asarray(units)
    draws = _draws({"": statistic}, [units], resamples, seed, strata)[""]
    return _percentile(statistic(units[None])[0], draws, level)


@dataclass(frozen=True)
class Comparison:
    """A method minus its baseline on the same units: the difference's interval, McNemar's exact
    p-value on the discordant pairs (None when the units are not right/wrong) and their counts."""

    difference: Interval
    p_value: float | None
    only_method: int  # units the method gets right and the baseline wrong
    only_baseline: int

    @property
    def distinguishable(self) -> bool:
        return self.difference.excludes_zero

    def scaled(self, factor: float) -> Comparison:
        return replace(self, difference=self.difference.scaled(factor))

    def cell(self, digits: int = 1) -> str:
        """A table cell: ``+2.3 [+0.4, +4.2] *`` (the star: the interval excludes 0)."""
        return self.difference.format(digits, sign=True) + (" *" if self.distinguishable else "")

    def verdict(self, digits: int = 1) -> str:
        """``+0.7 [-2.0, +3.4], not distinguishable`` (in the units of the difference)."""
        word = "distinguishable" if self.distinguishable else "not distinguishable"
        return f"{self.difference.format(digits, sign=True)}, {word}"


def mcnemar(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against Binomial(only_a + only_b, 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


def compare(
    method: Sequence | np.ndarray,
    baseline: Sequence | np.ndarray,
    statistic: Statistic | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    strata: np.ndarray | None = None,
) -> Comparison:
    """``method`` minus ``baseline`` on paired units ``[n, ...]`` (the same questions, in the same order).

    Without ``statistic`` the units are right/wrong (bool ``[n]``) and the statistic is accuracy;
    McNemar's exact test is then added. The interval is a paired bootstrap: both methods are
    resampled with the same indices.
    """
    a, b = np.asarray(method), np.asarray(baseline)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"paired units must be as many: {a.shape[0]} against {b.shape[0]}")
    correct = statistic is None
    if correct:
        a, b, statistic = a.astype(bool), b.astype(bool), accuracy
    draws = _draws({"": statistic}, [a, b], resamples, seed, strata)[""]
    value = statistic(a[None])[0] - statistic(b[None])[0]
    only_a, only_b = (int((a & ~b).sum()), int((b & ~a).sum())) if correct else (0, 0)
    return Comparison(_percentile(value, draws, level), mcnemar(only_a, only_b) if correct else None, only_a, only_b)


def detectable_difference(n: int, discordance: float, level: float = LEVEL, power: float = 0.8) -> float:
    """Smallest accuracy gain ``p10 - p01`` a paired test on ``n`` questions detects with ``power``.

    ``discordance``: the share of questions on which the two methods disagree (``p10 + p01``),
    from a pilot run or an assumption. Solves Connor's (1987) sample size for McNemar's test,
    ``n = (z_a sqrt(d) + z_b sqrt(d - delta^2))^2 / delta^2``, for ``delta`` by bisection.
    """
    if n <= 0 or not 0 < discordance <= 1:
        raise ValueError(f"need n > 0 and 0 < discordance <= 1, got n={n}, discordance={discordance}")
    z_a, z_b = _z(level), NormalDist().inv_cdf(power)

    def needed(delta: float) -> float:
        return (z_a * math.sqrt(discordance) + z_b * math.sqrt(discordance - delta * delta)) ** 2 / delta**2

    low, high = 1e-9, discordance  # needed() falls as delta grows
    if needed(high) > n:
        return math.inf  # not even a method right on every discordant question is detectable
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if needed(mid) > n else (low, mid)
    return high


@dataclass(frozen=True)
class Spread:
    """A metric over sampling seeds: mean, sample standard deviation and the number of seeds."""

    mean: float
    std: float
    seeds: int

    def format(self, digits: int = 1) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.seeds} seeds)"


def seed_spread(values: Sequence[float]) -> Spread:
    """Mean and standard deviation (``n - 1``) of one metric over runs that differ only in the seed."""
    if not values:
        raise ValueError("no runs to summarise")
    return Spread(fmean(values), stdev(values) if len(values) > 1 else 0.0, len(values))


# ------------------------------------------------------------------------- a run's units and measures
@dataclass(frozen=True)
class Units:
    """What a run is scored on, one row per independent unit (a POPE question, an MME image pair,
    an AMBER caption or question): ``table`` ``[n, k]`` with named ``columns``, and ``strata``
    (``[n]`` labels, or None) resampled apart so that each group keeps its size."""

    table: np.ndarray
    columns: tuple[str, ...]
    strata: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.table)


class Columns:
    """Named columns of a stack of resampled tables ``[R, n, k]``: ``c["right"]`` is ``[R, n]``."""

    def __init__(self, sample: np.ndarray, names: tuple[str, ...]):
        self.sample, self.names = sample, names

    def __getitem__(self, name: str) -> np.ndarray:
        return self.sample[..., self.names.index(name)]

    def total(self, name: str) -> np.ndarray:
        """Column sum per resample: ``[R]``."""
        return self[name].sum(-1)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (as the official scorers define an empty ratio)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den != 0)


@dataclass(frozen=True)
class Measure:
    """One reported metric as a statistic of a run's units.

    ``statistic``: :class:`Columns` of ``[R, n, k]`` -> ``[R]``; ``scale``: the metric's unit per
    statistic unit (100 for percent). ``proportion``: ``(successes, trials)`` columns whose totals
    give a Wilson interval instead of the bootstrap; ``right``: a 0/1 column of answers right, for
    McNemar's test when two methods are compared.
    """

    statistic: Callable[[Columns], np.ndarray]
    scale: float = 1.0
    proportion: tuple[str, str] | None = None
    right: str | None = None

    def of(self, units: Units) -> Statistic:
        """The statistic on raw stacks ``[R, n, k]`` of ``units``' table."""
        return lambda sample: self.statistic(Columns(sample, units.columns))

    def interval(self, units: Units, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Interval:
        return intervals(units, {"": self}, resamples=resamples, seed=seed, level=level)[""]

    def compare(self, method: Units, baseline: Units, resamples: int = RESAMPLES, seed: int = SEED) -> Comparison:
        """``method`` minus ``baseline`` (the same units in the same order), paired."""
        return comparisons(method, baseline, {"": self}, resamples=resamples, seed=seed)[""]

    def point(self, units: Units) -> float:
        return float(self.of(units)(units.table[None])[0])


def intervals(
    units: Units, measures: Mapping[str, Measure], resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> dict[str, Interval]:
    """Every measure's interval on one run's units (keys as in ``measures``): Wilson's for a
    proportion, else the percentile bootstrap, all measures on one shared set of resamples."""
    resampled = {name: m.of(units) for name, m in measures.items() if m.proportion is None}
    draws = _draws(resampled, [units.table], resamples, seed, units.strata) if resampled else {}
    found = {}
    for name, m in measures.items():
        if m.proportion is not None:
            hits, trials = (int(units.table[:, units.columns.index(c)].sum()) for c in m.proportion)
            found[name] = wilson(hits, trials, level).scaled(m.scale)
        else:
            found[name] = _percentile(m.point(units), draws[name], level).scaled(m.scale)
    return found


def comparisons(
    method: Units,
    baseline: Units,
    measures: Mapping[str, Measure],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, Comparison]:
    """Every measure, ``method`` minus ``baseline`` on the same units: the paired bootstrap interval
    of the difference, and McNemar's exact test where the measure names a right/wrong column."""
    if method.table.shape != baseline.table.shape or method.columns != baseline.columns:
        raise ValueError("runs compared must score the same units (same questions, same order)")
    statistics = {name: m.of(method) for name, m in measures.items()}
    draws = _draws(statistics, [method.table, baseline.table], resamples, seed, method.strata)
    found = {}
    for name, m in measures.items():
        difference = _percentile(m.point(method) - m.point(baseline), draws[name], level).scaled(m.scale)
        if m.right is None:
            found[name] = Comparison(difference, None, 0, 0)
            continue
        column = method.columns.index(m.right)
        a, b = method.table[:, column].astype(bool), baseline.table[:, column].astype(bool)
        only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
        found[name] = Comparison(difference, mcnemar(only_a, only_b), only_a, only_b)
    return found


def with_intervals(metrics: Mapping, units: Units, measures: Mapping[str, Measure]) -> dict:
    """``metrics`` plus ``"intervals"``: each measure's interval as a dict, keyed by its path in ``metrics``."""
    return {**metrics, "intervals": {name: i.as_dict() for name, i in intervals(units, measures).items()}}
