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

Two rules set the threshold (`RULES`): "point" is the lowest threshold whose observed FPIR
is at most the target; "upper" the lowest whose one-sided 95% upper confidence bound, from a
bootstrap over impostor *persons*, is at most the target (and never below "point"). With
few impostor persons one look-alike can carry most false alerts; the point rule then
promises a rate that the next set of strangers misses, the upper rule pays for that
uncertainty with a higher threshold. Its constants (`UPPER_REPS`, `UPPER_CONFIDENCE`,
`UPPER_SEED`) were fixed before any measurement, not tuned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from scipy.stats import beta

from facescreen.core.matching import threshold_for_fpir, vote_template
from facescreen.core.types import FloatArray

Scores = npt.NDArray[np.floating[Any]] | Sequence[float]  # best scores, float32 or float64

MIN_EXPECTED_ALERTS = 10  # the 10/FPIR rule: this many false alerts expected at the target
DEFAULT_MAX_GROWTH = 0.2  # a calibration is stale once the gallery grew by more than this share
RULES = ("point", "upper")
# What `watchlist calibrate` and `eval identify --calibrate-half` use unless told: on
# celeba-dev (18 impostor persons, one enrolment photo) "upper" kept the held-apart FPIR at
# most x1.5 the target in 14 of 15 splits against 11 for "point", for 0.6-3 points of FNIR.
DEFAULT_RULE = "upper"
# The "upper" rule's bootstrap, fixed a priori (conventional values, never tuned to data):
UPPER_REPS = 2000  # resamples of the impostor persons
UPPER_CONFIDENCE = 0.95  # one-sided: the bound is the 95th percentile of resampled FPIRs
UPPER_SEED = 0  # a fixed seed: the same impostors always give the same threshold


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


class PersonBootstrap:
    """Resampled impostor persons, drawn once, to bound the FPIR at any threshold.

    Each of `UPPER_REPS` replicates draws as many persons as there are, with replacement
    (multinomial counts per person); a replicate's FPIR is its alerts over its decisions
    (a person drawn twice counts twice). For one set of draws every replicate's FPIR only
    falls as the threshold rises, so their percentile does too: `lowest_threshold` can
    search the candidate thresholds by bisection.
    """

    def __init__(self, scores: Scores, persons: Sequence[str], *,
                 reps: int = UPPER_REPS, confidence: float = UPPER_CONFIDENCE,
                 seed: int = UPPER_SEED) -> None:
        # float32, as `threshold_for_fpir` compares: both rules pick from the same thresholds.
        self.scores = np.asarray(scores, np.float32).reshape(-1)
        if self.scores.size == 0 or len(persons) != self.scores.size:
            raise ValueError("need one person per impostor decision, some decisions")
        if not 0.5 <= confidence < 1.0 or reps < 1:
            raise ValueError(f"need 0.5 <= confidence < 1 and reps >= 1, got {confidence}, {reps}")
        names, self.owner = np.unique(np.asarray([str(p) for p in persons]),
                                      return_inverse=True)
        self.persons = int(names.size)
        self.confidence = confidence
        rng = np.random.default_rng(seed)
        # float32 counts (reps x persons x 4 bytes: 80 MB for 10,000 persons); sums of
        # integer counts stay exact in float32 below 2**24 decisions.
        self.weights = rng.multinomial(self.persons, np.full(self.persons, 1.0 / self.persons),
                                       size=reps).astype(np.float32)
        self.totals = self.weights @ np.bincount(
            self.owner, minlength=self.persons).astype(np.float32)

    def upper(self, threshold: float) -> float:
        """One-sided upper confidence bound of the FPIR at `threshold` (alert: score >= it)."""
        alerts = np.bincount(self.owner[self.scores >= np.float32(threshold)],
                             minlength=self.persons).astype(np.float32)
        rates = (self.weights @ alerts).astype(np.float64) / self.totals
        return float(np.quantile(rates, self.confidence))

    def lowest_threshold(self, target_fpir: float) -> float:
        """The lowest threshold whose upper bound is at most `target_fpir`.

        Candidates are the float32 values just above each distinct score (the thresholds
        `threshold_for_fpir` also picks from); just above the highest, nothing alerts and
        the bound is 0, so there is always one.
        """
        above = np.nextafter(np.unique(self.scores), np.float32(np.inf))
        lo, hi = 0, above.size - 1  # the answer is in [lo, hi]; hi always qualifies
        while lo < hi:
            mid = (lo + hi) // 2
            if self.upper(float(above[mid])) <= target_fpir:
                hi = mid
            else:
                lo = mid + 1
        return float(above[lo])


@dataclass(frozen=True)
class Calibration:
    """A threshold set from impostor decisions and what it promises."""

    target_fpir: float
    threshold: float
    decisions: int  # impostor decisions it was set on
    alerts: int  # of those, how many reach the threshold
    fpir_ci: tuple[float, float]  # Clopper-Pearson 95% interval of the FPIR, from alerts/decisions
    sufficient: bool  # decisions >= min_decisions(target_fpir)
    rule: str = "point"
    # One-sided 95% bound of the FPIR at `threshold`, resampling persons (None: no persons given)
    fpir_upper: float | None = None
    persons: int | None = None  # impostor persons the decisions came from

    @property
    def fpir(self) -> float:
        return self.alerts / self.decisions


def calibrate(impostor_scores: Scores, target_fpir: float, *,
              require_enough: bool = True, rule: str = "point",
              persons: Sequence[str] | None = None) -> Calibration:
    """The threshold for `target_fpir` from impostor decisions' best scores against the list.

    `rule` is "point" (observed FPIR at most the target) or "upper" (its person-bootstrap
    upper bound at most the target; needs `persons`, the person of each decision). With
    `persons` the bound at the chosen threshold is reported for either rule.
    With `require_enough` (what `watchlist calibrate` does) fewer than `min_decisions`
    decisions raise `InsufficientImpostorsError`; without it (evaluation) the result says
    `sufficient=False` instead.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule == "upper" and persons is None:
        raise ValueError("the upper rule needs the person of each impostor decision")
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
    boot = None if persons is None else PersonBootstrap(scores, persons)
    if boot is not None and rule == "upper":
        threshold = max(threshold, boot.lowest_threshold(target_fpir))
    alerts = int((scores >= threshold).sum())
    return Calibration(target_fpir, threshold, int(scores.size), alerts,
                       clopper_pearson(alerts, int(scores.size)), scores.size >= needed, rule,
                       None if boot is None else boot.upper(threshold),
                       None if boot is None else boot.persons)


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
