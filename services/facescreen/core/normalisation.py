"""Cohort score normalisation (Z-norm): each template's scores in units of its impostor spread.

Why: a template that is the mean of several photos lies nearer the population mean than a
one-photo template, so every stranger scores higher against it; with one threshold for the
whole list, such templates take most of the false alerts and force the threshold up (on
celeba-dev three enrolment photos gave a worse FNIR at FPIR 0.01 than one). Z-norm
measures, for each template t, the mean mu_t and standard deviation sigma_t of its scores
against a cohort of impostor faces and scores a probe by (s - mu_t) / sigma_t, so every
template has the same impostor score distribution (to first order) and one threshold means
the same false-alert rate for each of them.

The cohort must be people who are not on the list and not the probes being measured.
`center` is the other scheme measured: subtract the cohort's mean embedding (the direction
every face shares) from probe and template before the cosine.

Measured on celeba-dev (`eval identify --calibrate-half --norm ...`, five seeds; see
docs/figures/calibration/) both lose to plain cosine, Z-norm by far: the per-template
spread is estimated from a few cohort people and its noise outweighs what it corrects, and
the three-photo regression it was meant to remove comes from one stranger who looks like
an enrolled subject, which no per-template statistic can separate. So the live search does
not use them; they stay here, and in the eval, to be measured again on other data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from facescreen.core.types import FloatArray

F64 = npt.NDArray[np.float64]
MIN_SIGMA = 1e-6  # only guards a division by zero (a cohort of identical faces)


@dataclass(frozen=True)
class CohortStats:
    """Per template: the mean and standard deviation of its scores against the cohort."""

    mean: F64  # (m,)
    std: F64  # (m,)


def cohort_stats(templates: FloatArray, cohort: FloatArray) -> CohortStats:
    """mu_t and sigma_t of each template row against every cohort row (cosine scores).

    >>> t = np.eye(2, dtype=np.float32)
    >>> s = cohort_stats(t, np.array([[1, 0], [0, 1]], np.float32))
    >>> s.mean.tolist(), s.std.tolist()
    ([0.5, 0.5], [0.5, 0.5])
    """
    templates = np.asarray(templates, np.float32)
    cohort = np.asarray(cohort, np.float32)
    if cohort.ndim != 2 or len(cohort) < 2:
        raise ValueError("a cohort needs at least two embeddings")
    scores = (templates @ cohort.T).astype(np.float64)
    return CohortStats(scores.mean(axis=1), np.maximum(scores.std(axis=1), MIN_SIGMA))


def znorm(scores: npt.ArrayLike, stats: CohortStats) -> F64:
    """(s - mu_t) / sigma_t for scores of shape (probes, templates) or (templates,)."""
    s = np.asarray(scores, np.float64)
    out: F64 = (s - stats.mean) / stats.std
    return out


def cohort_mean(cohort: FloatArray) -> FloatArray:
    """The cohort's mean embedding (not renormalised): the direction every face shares."""
    mean: FloatArray = np.asarray(cohort, np.float32).mean(axis=0)
    return mean


def center(vectors: FloatArray, mean: FloatArray) -> FloatArray:
    """Rows minus the cohort mean, renormalised: cosine on what tells people apart."""
    shifted = np.asarray(vectors, np.float32) - mean
    out: FloatArray = shifted / np.maximum(np.linalg.norm(shifted, axis=-1, keepdims=True), 1e-12)
    return out
