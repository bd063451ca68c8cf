"""Calibrating a watchlist threshold for a target false-positive identification rate (FPIR).

Pure maths shared by `watchlist calibrate` and `facescreen eval identify`, so the rate an
operator is promised is computed exactly as it is measured:

- decisions are of the same kind as alerts: a pseudo-track of K photos of one impostor is
  `vote_template` of their embeddings (quality-weighted), searched against the real gallery;
- the threshold comes from those impostor decisions through `threshold_for_fpir`;
- a target FPIR needs at least `10 / FPIR` impostor decisions (about ten expected false
  alerts), otherwise the threshold rests on one or two extreme scores and is refused;
- the expected FPIR is given with its Clopper-Pearson (exact binomial) interval;
- a calibration goes stale when the gallery grew: with more templates, each impostor has
  more chances to match one, so the same threshold gives a higher FPIR.

Decisions of one person (several photos, combinations of them) are correlated, so the
binomial interval, which assumes independent decisions, is optimistic; `person_interval`
resamples persons instead, and the number of impostor persons is reported beside both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy.stats import beta

from facescreen.core.matching import threshold_for_fpir, vote_template
from facescreen.core.types import FloatArray

MIN_EXPECTED_ALERTS = 10  # the 10/FPIR rule: this many false alerts expected at the target
DEFAULT_MAX_GROWTH = 0.2  # a calibration is stale once the gallery grew by more than this share


class InsufficientImpostorsError(ValueError):
    """Too few impostor decisions to support the target FPIR; the message says how many."""


def min_decisions(target_fpir: float) -> int:
    """Impostor decisions needed for `target_fpir`: ceil(10 / FPIR).

    >>> min_decisions(0.01), min_decisions(0.05), min_decisions(0.3)
    (1000, 200, 34)
    """
    if not 0.0 < target_fpir < 1.0:
        raise ValueError(f"target FPIR must be in (0, 1), got {target_fpir}")
    return math.ceil(MIN_EXPECTED_ALERTS / target_fpir - 1e-9)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial rate: k events in n trials.

    >>> [round(x, 4) for x in clopper_pearson(0, 10)]
    [0.0, 0.3085]
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def person_interval(alerts: Sequence[int], decisions: Sequence[int], rng: np.random.Generator,
                    reps: int = 2000, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the FPIR when impostor *persons* are resampled (cluster bootstrap).

    `alerts[i]` of `decisions[i]` decisions of person i reached the threshold. Decisions of
    one person rise and fall together (one look-alike can give most false alerts), so this
    interval, unlike `clopper_pearson` over decisions, shows how much the rate depends on
    which people happened to be in the impostor set.
    """
    a = np.asarray(alerts, np.float64)
    n = np.asarray(decisions, np.float64)
    if a.size == 0 or a.shape != n.shape or n.sum() <= 0:
        raise ValueError("need one (alerts, decisions) count per person, some decisions")
    picks = rng.integers(0, a.size, size=(reps, a.size))
    totals = n[picks].sum(axis=1)
    rates = np.divide(a[picks].sum(axis=1), totals, out=np.zeros(reps), where=totals > 0)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(rates, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Calibration:
    """A threshold set from impostor decisions and what it promises."""

    target_fpir: float
    threshold: float
    decisions: int  # impostor decisions it was set on
    alerts: int  # of those, how many reach the threshold
    fpir_ci: tuple[float, float]  # Clopper-Pearson 95% interval of the FPIR, from alerts/decisions
    sufficient: bool  # decisions >= min_decisions(target_fpir)

    @property
    def fpir(self) -> float:
        return self.alerts / self.decisions


def calibrate(impostor_scores: FloatArray | Sequence[float], target_fpir: float, *,
              require_enough: bool = True) -> Calibration:
    """The threshold for `target_fpir` from impostor decisions' best scores against the list.

    With `require_enough` (what `watchlist calibrate` does) fewer than `min_decisions`
    decisions raise `InsufficientImpostorsError`; without it (evaluation) the result says
    `sufficient=False` instead.
    """
    scores = np.asarray(impostor_scores, np.float64).reshape(-1)
    needed = min_decisions(target_fpir)
    if require_enough and scores.size < needed:
        raise InsufficientImpostorsError(
            f"{scores.size} impostor decisions cannot support FPIR {target_fpir:g}: need at "
            f"least {needed} (10/FPIR)")
    if scores.size == 0:
        raise InsufficientImpostorsError("no impostor decisions to calibrate on")
    # float64 in: the rule computes in the scores' own precision (see evaluation.metrics).
    threshold = threshold_for_fpir(cast(FloatArray, scores), target_fpir)
    alerts = int((scores >= threshold).sum())
    return Calibration(target_fpir, threshold, int(scores.size), alerts,
                       clopper_pearson(alerts, int(scores.size)), scores.size >= needed)


def _unrank(rank: int, n: int, k: int) -> tuple[int, ...]:
    """The `rank`-th k-subset of range(n) in lexicographic order (combinatorial number system)."""
    out: list[int] = []
    x = 0
    for i in range(k):
        while True:
            count = math.comb(n - x - 1, k - i - 1)  # subsets that start with x here
            if rank < count:
                break
            rank -= count
            x += 1
        out.append(x)
        x += 1
    return tuple(out)


def draw_combinations(n: int, k: int, limit: int,
                      rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to `limit` distinct k-subsets of n photos (sorted index tuples), lexicographic order.

    All of them when there are at most `limit`, else `limit` drawn without replacement,
    uniformly, by `rng`. Bounding the count per person keeps one person with many photos
    from dominating the decisions. None when n < k.
    """
    if k < 1 or limit < 1:
        raise ValueError(f"need k >= 1 and limit >= 1, got k={k}, limit={limit}")
    total = math.comb(n, k)
    if total <= limit:
        return [_unrank(r, n, k) for r in range(total)]
    if total < 2**62:
        ranks = sorted(int(r) for r in rng.choice(total, size=limit, replace=False))
        return [_unrank(r, n, k) for r in ranks]
    found: set[tuple[int, ...]] = set()  # astronomically many: rejection is fast
    while len(found) < limit:
        found.add(tuple(sorted(int(i) for i in rng.choice(n, size=k, replace=False))))
    return sorted(found)


def pseudo_track(embeddings: Sequence[FloatArray | None],
                 qualities: Sequence[float]) -> FloatArray | None:
    """A track's identity from photos: `vote_template` of those with an embedding (None if none).

    A photo without a usable face is in the track but not in the vote, as a face that fails
    quality is in a live track without an embedding.
    """
    used = [(e, q) for e, q in zip(embeddings, qualities, strict=True) if e is not None]
    if not used:
        return None
    return vote_template(np.stack([e for e, _ in used]),
                         np.asarray([q for _, q in used], np.float32))


def is_stale(calibrated_gallery: int, gallery: int,
             max_growth: float = DEFAULT_MAX_GROWTH) -> bool:
    """Whether the gallery grew by more than `max_growth` (a share) since calibration.

    Only growth matters: fewer templates give each impostor fewer chances, so the FPIR can
    only fall.

    >>> is_stale(10, 12), is_stale(10, 13), is_stale(10, 5)
    (False, True, False)
    """
    if calibrated_gallery <= 0:
        return gallery > 0
    return gallery > calibrated_gallery * (1.0 + max_growth) + 1e-9
