"""The calibration maths: exact intervals, the 10/FPIR rule, pseudo-tracks, staleness, Z-norm."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from facescreen.core import calibration as cal
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import vote_template
from facescreen.core.normalisation import center, cohort_mean, cohort_stats, znorm
from facescreen.watchlist.store import Watchlist, calibration_stale
from scipy.stats import binom


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 10, 0.0, 1 - 0.025 ** (1 / 10)),  # closed forms at the ends: 0.3085
    (10, 10, 0.025 ** (1 / 10), 1.0),
    (5, 10, 0.1871, 0.8129),  # the textbook table value
    (1, 100, 0.000253, 0.0545),
])
def test_clopper_pearson_known_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = cal.clopper_pearson(k, n)
    assert lo == pytest.approx(low, abs=2e-4) and hi == pytest.approx(high, abs=2e-4)


@pytest.mark.parametrize(("p", "n"), [(0.01, 1000), (0.3, 50), (0.05, 200)])
def test_clopper_pearson_covers_at_least_95_percent(p: float, n: int) -> None:
    """Exact coverage (summed over every outcome k) is never below the nominal 95%."""
    coverage = sum(binom.pmf(k, n, p) for k in range(n + 1)
                   if cal.clopper_pearson(k, n)[0] <= p <= cal.clopper_pearson(k, n)[1])
    assert 0.95 <= coverage < 0.995


def test_ten_over_fpir_rule_refuses_one_decision_short() -> None:
    assert cal.min_decisions(0.01) == 1000 and cal.min_decisions(0.001) == 10000
    scores = np.random.default_rng(0).normal(0.8, 0.05, 1000)
    with pytest.raises(cal.InsufficientImpostorsError, match=r"999 impostor decisions.*1000"):
        cal.calibrate(scores[:999], 0.01)
    c = cal.calibrate(scores, 0.01)
    assert c.sufficient and c.decisions == 1000
    # At most 1% alert, and the threshold is the lowest that keeps it so.
    assert c.alerts == int((scores >= c.threshold).sum()) <= 10
    assert int((scores >= np.sort(scores)[-11]).sum()) == 11
    assert c.fpir_ci[0] <= c.fpir <= c.fpir_ci[1]
    loose = cal.calibrate(scores[:99], 0.01, require_enough=False)
    assert not loose.sufficient and loose.alerts == 0  # 0.99 expected alerts: none allowed
    assert loose.threshold > scores[:99].max()


def test_combinations_are_all_or_a_bounded_seeded_sample() -> None:
    rng = np.random.default_rng(1)
    assert cal.draw_combinations(5, 3, 100, rng) == list(itertools.combinations(range(5), 3))
    assert cal.draw_combinations(2, 3, 100, rng) == []
    drawn = cal.draw_combinations(20, 3, 50, np.random.default_rng(7))
    assert len(drawn) == len(set(drawn)) == 50
    assert all(len(c) == 3 and list(c) == sorted(c) and c[-1] < 20 for c in drawn)
    assert drawn == cal.draw_combinations(20, 3, 50, np.random.default_rng(7))
    assert drawn != cal.draw_combinations(20, 3, 50, np.random.default_rng(8))
    # Unranking covers every subset exactly once: a sample of all of them is all of them.
    everything = cal.draw_combinations(9, 4, math.comb(9, 4), rng)
    assert everything == list(itertools.combinations(range(9), 4))


def test_combinations_are_drawn_uniformly() -> None:
    """Each photo is in k/n of the drawn tracks (no bias to low indices)."""
    drawn = cal.draw_combinations(30, 3, 3000, np.random.default_rng(3))
    counts = np.bincount(np.ravel(drawn), minlength=30)
    assert counts.min() > 0.8 * 300 and counts.max() < 1.2 * 300


def test_pseudo_track_is_the_matcher_vote_of_usable_faces() -> None:
    rng = np.random.default_rng(2)
    e = l2_normalise(rng.normal(size=(3, 8)).astype(np.float32))
    q = [0.9, 0.2, 0.5]
    track = cal.pseudo_track([e[0], None, e[2]], q)
    assert track is not None
    np.testing.assert_allclose(track, vote_template(e[[0, 2]], np.array([0.9, 0.5])), atol=1e-6)
    assert cal.pseudo_track([None, None], [0.5, 0.5]) is None


def test_staleness_after_growth_beyond_the_share() -> None:
    assert not cal.is_stale(10, 12) and cal.is_stale(10, 13)
    assert not cal.is_stale(10, 3)  # a smaller gallery can only lower the FPIR
    assert cal.is_stale(10, 11, max_growth=0.05)
    assert not calibration_stale(Watchlist("w"), 100)  # never calibrated
    record = {"target_fpir": 0.01, "gallery_size": 50, "max_growth": 0.2}
    assert not calibration_stale(Watchlist("w", calibration=record), 60)
    assert calibration_stale(Watchlist("w", calibration=record), 61)
    old = {"target_fpir": 0.01, "impostor_faces": 900, "subjects": 5}  # before gallery_size
    assert calibration_stale(Watchlist("w", calibration=old), 7)


def test_person_interval_is_wide_when_one_person_gives_the_alerts() -> None:
    rng = np.random.default_rng(0)
    spread = cal.person_interval([1] * 20, [100] * 20, rng)
    lumped = cal.person_interval([20] + [0] * 19, [100] * 20, rng)
    assert spread[0] <= 0.01 <= spread[1] and lumped[0] <= 0.01 <= lumped[1]
    assert spread == (0.01, 0.01)  # every person alike: resampling changes nothing
    assert lumped[0] == 0.0 and lumped[1] > 0.025


def test_znorm_standardises_each_template_against_its_cohort() -> None:
    rng = np.random.default_rng(4)
    templates = l2_normalise(rng.normal(size=(3, 16)).astype(np.float32))
    cohort = l2_normalise(rng.normal(size=(200, 16)).astype(np.float32))
    stats = cohort_stats(templates, cohort)
    z = znorm(cohort @ templates.T, stats)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="at least two"):
        cohort_stats(templates, cohort[:1])


def test_centering_removes_the_shared_direction() -> None:
    rng = np.random.default_rng(5)
    shared = np.ones(16, np.float32)
    faces = l2_normalise((3 * shared + rng.normal(size=(100, 16))).astype(np.float32))
    assert float(np.mean(faces[:50] @ faces[50:].T)) > 0.8  # everybody looks alike
    centred = center(faces, cohort_mean(faces))
    assert abs(float(np.mean(centred[:50] @ centred[50:].T))) < 0.1
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)


def _look_alike_set(persons: int = 18, each: int = 100) -> tuple[np.ndarray, list[str]]:
    """Impostor decisions where person 0 looks like someone on the list: their scores sit
    well above everybody else's, so they give most alerts at the point threshold."""
    rng = np.random.default_rng(11)
    scores = rng.normal(0.8, 0.05, persons * each)
    scores[:each] += 0.15
    return scores, [f"p{i}" for i in range(persons) for _ in range(each)]


def test_upper_rule_is_above_point_when_one_person_gives_the_alerts() -> None:
    scores, persons = _look_alike_set()
    point = cal.calibrate(scores, 0.01, persons=persons)
    upper = cal.calibrate(scores, 0.01, rule="upper", persons=persons)
    assert (point.rule, upper.rule, point.persons) == ("point", "upper", 18)
    over = scores >= point.threshold
    assert point.alerts == 18 and over[:100].sum() >= 12  # the look-alike's alerts
    assert point.fpir_upper is not None and point.fpir_upper > 0.02  # the promise is shaky
    assert upper.threshold > point.threshold and upper.alerts < point.alerts
    assert upper.fpir_upper is not None and upper.fpir_upper <= 0.01
    # The lowest such threshold: one candidate lower (just above the next score down) fails.
    below = np.sort(np.unique(scores.astype(np.float32)))
    below = below[below < np.float32(upper.threshold)]
    boot = cal.PersonBootstrap(scores, persons)
    assert boot.upper(float(np.nextafter(below[-2], np.float32(np.inf)))) > 0.01


def test_upper_and_point_converge_with_many_independent_persons() -> None:
    """With independent persons the bound tightens as 1/sqrt(n): the upper rule's observed
    FPIR approaches the point rule's (the target) as persons are added."""
    ratios = []
    for n in (500, 2000, 8000):
        scores = np.random.default_rng(n).normal(0.8, 0.05, 2 * n)
        persons = [f"p{i // 2}" for i in range(2 * n)]
        point = cal.calibrate(scores, 0.01, persons=persons)
        upper = cal.calibrate(scores, 0.01, rule="upper", persons=persons)
        assert upper.threshold >= point.threshold and point.alerts == int(0.01 * 2 * n)
        ratios.append(upper.alerts / point.alerts)
    assert ratios[0] < ratios[1] < ratios[2] and ratios[2] > 0.8
    assert ratios[0] < 0.65  # 500 persons: the bound still costs much of the target


def test_upper_rule_equals_point_when_every_person_is_alike() -> None:
    """Persons with identical decisions: every resample is the sample, no uncertainty."""
    one = np.linspace(0.5, 0.99, 100)
    scores = np.tile(one, 20)
    persons = [f"p{i}" for i in range(20) for _ in range(100)]
    point = cal.calibrate(scores, 0.01, persons=persons)
    upper = cal.calibrate(scores, 0.01, rule="upper", persons=persons)
    assert upper.threshold == point.threshold and upper.fpir_upper == pytest.approx(0.01)


def test_bisection_finds_the_lowest_qualifying_threshold() -> None:
    """Against every candidate in turn (the bound falls with the threshold, so bisection
    must agree with a linear scan)."""
    rng = np.random.default_rng(5)
    scores = np.round(rng.normal(0.8, 0.05, 300), 3)  # ties on purpose
    persons = [f"p{int(i)}" for i in rng.integers(0, 12, 300)]
    boot = cal.PersonBootstrap(scores, persons, reps=400)
    candidates = np.nextafter(np.unique(scores.astype(np.float32)), np.float32(np.inf))
    bounds = [boot.upper(float(c)) for c in candidates]
    assert all(a >= b for a, b in itertools.pairwise(bounds))
    for target in (0.01, 0.05, 0.2):
        first = next(c for c, b in zip(candidates, bounds, strict=True) if b <= target)
        assert boot.lowest_threshold(target) == float(first)
    # Fixed a priori and repeatable: the same impostors, the same threshold.
    again = cal.PersonBootstrap(scores, persons, reps=400)
    assert again.lowest_threshold(0.05) == boot.lowest_threshold(0.05)
    assert (cal.UPPER_REPS, cal.UPPER_CONFIDENCE, cal.UPPER_SEED) == (2000, 0.95, 0)


def test_rule_needs_persons_and_a_known_name() -> None:
    scores = np.random.default_rng(0).normal(0.8, 0.05, 1000)
    with pytest.raises(ValueError, match="needs the person"):
        cal.calibrate(scores, 0.01, rule="upper")
    with pytest.raises(ValueError, match="rule must be one of"):
        cal.calibrate(scores, 0.01, rule="median", persons=["a"] * 1000)
    with pytest.raises(ValueError, match="one person per"):
        cal.PersonBootstrap(scores, ["a"] * 10)
    plain = cal.calibrate(scores, 0.01)
    assert plain.rule == "point" and plain.fpir_upper is None and plain.persons is None
