"""Prediction-powered inference (PPI) for class shares from a human audit.

A sample of N particles has model predictions ``f`` for all of them; a random subset of n
(the audit, :func:`~lipoclass.quantify.draw_audit`) also has a person's label ``Y``. For a
class indicator the PPI++ mean estimator (Angelopoulos, Bates, Fannjiang, Jordan, Zrnic,
"Prediction-powered inference", Science 382, 2023; Angelopoulos, Duchi, Zrnic, "PPI++:
efficient prediction-powered inference", 2024) is

    theta_hat = lambda * mean_unlabelled(f) + mean_labelled(Y - lambda * f)

with variance  lambda^2 Var(f) / N_u + Var(Y - lambda f) / n, and the power-tuned
lambda = Cov(Y, f) / ((1 + n / N_u) Var(f)) (clipped to [0, 1]; lambda = 1 is plain PPI,
lambda = 0 the labels alone). The labelled particles are the audited ones, the unlabelled the
N_u = N - n others of the same sample, so the two are disjoint as in the paper. The interval
is theta_hat +- z_{1-alpha/2} * sd (for a class with fewer than ``MIN_CLASS_COUNT`` audited
particles widened to hold the exact labels-only interval); it is valid whatever the model's
errors on this sample (whatever the shift from its training data), because the rectifier
mean(Y - lambda f) is measured on this sample.

Written here in numpy (a few lines) rather than taken from ``ppi-python``, which pulls in
heavy dependencies (statsmodels, cvxpy, ...) for these formulas; ``tests/test_ppi.py`` checks
the code against the formulas above and against brute-force coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_AUDIT",
    "MIN_CLASS_COUNT",
    "PPIResult",
    "labels_only_interval",
    "ppi_mean",
    "ppi_shares",
]

MIN_AUDIT = 10
"""Fewest audited (labelled) particles of a sample for which an interval is given."""

MIN_CLASS_COUNT = 10
"""Fewest audited particles of a class (and of the other classes) for which the normal
approximation of PPI is trusted; below, the interval is widened to hold the exact
labels-only (Clopper-Pearson) interval too (a rare class's rectifier variance, estimated
from a handful of positives, is unreliable)."""


@dataclass(frozen=True)
class PPIResult:
    """Per class (C,): estimate, interval ``lo``/``hi``, ``lam`` (the tuned lambda), ``sd``,
    and ``ess``: the effective sample size, i.e. how many labels alone would give the same
    variance (p (1 - p) / sd^2); ``n``: audited particles used (real particles)."""

    share: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    sd: np.ndarray
    lam: np.ndarray
    ess: np.ndarray
    n: int


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def _t_quantile(level: float, df: np.ndarray) -> np.ndarray:
    """Student's t quantile 1 - (1 - level) / 2 per class, df clipped to >= 1."""
    from scipy.stats import t

    return np.asarray(t.ppf(0.5 + level / 2, np.maximum(np.asarray(df, dtype=float), 1.0)))


def ppi_mean(
    y_lab: np.ndarray,
    f_lab: np.ndarray,
    f_unl: np.ndarray,
    *,
    lam: float | None = None,
) -> tuple[float, float, float]:
    """PPI++ estimate of E[Y] from labels ``y_lab`` (n,) with predictions ``f_lab`` (n,) and
    predictions ``f_unl`` (N_u,) of unlabelled data: (estimate, standard deviation, lambda).
    ``lam`` None: power-tuned (clipped to [0, 1]); 1.0: plain PPI; 0.0: labels only."""
    y = np.asarray(y_lab, dtype=np.float64)
    fl = np.asarray(f_lab, dtype=np.float64)
    fu = np.asarray(f_unl, dtype=np.float64)
    n, nu = y.size, fu.size
    if lam is None:
        f_all = np.concatenate([fl, fu])
        var_f = float(f_all.var(ddof=1)) if f_all.size > 1 else 0.0
        cov = float(np.cov(y, fl, ddof=1)[0, 1]) if n > 1 else 0.0
        lam = cov / ((1.0 + n / max(nu, 1)) * var_f) if var_f > 0 else 0.0
        lam = float(np.clip(lam, 0.0, 1.0))
    rect = y - lam * fl
    est = lam * (fu.mean() if nu else 0.0) + rect.mean()
    var = (lam**2) * (fu.var(ddof=1) / nu if nu > 1 else 0.0) + rect.var(ddof=1) / n
    return float(est), float(np.sqrt(max(var, 0.0))), float(lam)


def labels_only_interval(
    counts: np.ndarray, n: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shares of the labels alone (C,) with exact (Clopper-Pearson) intervals."""
    from scipy.stats import beta

    x = np.asarray(counts, dtype=np.float64)
    a = 1.0 - level
    lo = np.where(x > 0, beta.ppf(a / 2, np.maximum(x, 1), n - x + 1), 0.0)
    hi = np.where(x < n, beta.ppf(1 - a / 2, x + 1, np.maximum(n - x, 1)), 1.0)
    return x / n, np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def ppi_shares(
    proba: np.ndarray,
    audited: np.ndarray,
    outcome: np.ndarray,
    level: float = 0.95,
    t_small: bool = True,
) -> PPIResult:
    """Audit-corrected shares of one sample: ``proba`` (N, C) the model's posteriors of all
    its particles, ``audited`` (N,) bool, ``outcome`` (N,) the audited label index (C for
    "not a particle"; ignored where not audited). The shares are among real particles:
    theta_k / (1 - theta_nap), each theta by PPI++ (a "not a particle" outcome has no model
    prediction, f = 0, so its theta is the labels' share), interval by the delta method."""
    p = np.asarray(proba, dtype=np.float64)
    aud = np.asarray(audited, dtype=bool)
    out = np.asarray(outcome)[aud].astype(np.int64)
    c = p.shape[1]
    z = _z(level)
    fl, fu = p[aud], p[~aud]
    n = int(aud.sum())
    y = np.eye(c + 1)[out]  # (n, C+1): last column "not a particle"
    theta, lam, rect = np.empty(c), np.empty(c), np.empty((n, c))
    var_t = np.empty(c)
    for k in range(c):
        t, sd, lk = ppi_mean(y[:, k], fl[:, k], fu[:, k])
        theta[k], lam[k], var_t[k] = t, lk, sd**2
        rect[:, k] = y[:, k] - lk * fl[:, k]
    nap = y[:, c]
    t_nap = float(nap.mean())
    var_nap = float(nap.var(ddof=1)) / n if n > 1 else 0.0
    denom = 1.0 - t_nap
    share = theta / denom if denom > 0 else np.full(c, np.nan)
    # delta method for theta_k / (1 - theta_nap): both share the labelled particles
    cov = np.array([np.cov(rect[:, k], nap, ddof=1)[0, 1] / n if n > 1 else 0.0
                    for k in range(c)])  # fmt: skip
    var = (var_t + share**2 * var_nap + 2 * share * cov) / max(denom, 1e-12) ** 2
    sd = np.sqrt(np.maximum(var, 0.0))
    real = int((out < c).sum())
    pos = np.bincount(out[out < c], minlength=c)[:c]
    # a rare class's rectifier variance is estimated from its few audited positives (or
    # negatives): Student's t with min(positives, negatives) - 1 degrees of freedom instead
    # of the normal quantile (docs/deployment.md, Audit); the same as z for common classes
    # (below MIN_CLASS_COUNT the exact labels-only interval is held instead, next)
    few = (pos < MIN_CLASS_COUNT) | (real - pos < MIN_CLASS_COUNT)
    zk = np.full(c, z)
    if t_small:
        zk = np.where(few, z, _t_quantile(level, np.minimum(pos, real - pos) - 1))
    lo, hi = np.clip(share - zk * sd, 0.0, 1.0), np.clip(share + zk * sd, 0.0, 1.0)
    # rare outcomes: the normal approximation fails with a handful of audited positives
    if few.any() and real > 0:
        _s, cp_lo, cp_hi = labels_only_interval(pos, real, level)
        lo, hi = np.where(few, np.minimum(lo, cp_lo), lo), np.where(few, np.maximum(hi, cp_hi), hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        pq = np.clip(share, 0, 1) * (1 - np.clip(share, 0, 1))
        ess = np.where(sd > 0, pq / sd**2, np.nan)
    return PPIResult(np.clip(share, 0.0, 1.0), np.minimum(lo, np.clip(share, 0, 1)),
                     np.maximum(hi, np.clip(share, 0, 1)), sd, lam, ess, real)  # fmt: skip
