"""Calibration: the Brier score and the stratified Brier scores (Wallace & Dahabreh).

``brier = mean((S - Y)^2)`` over all pixels, ``brier_pos`` the same mean over reference positives (how far the
scores of the minority class fall below 1) and ``brier_neg`` over reference negatives. Under class imbalance the
overall score is dominated by ``brier_neg``; the stratified pair shows the miscalibration of the minority class.
Pooled over images (sums first, one division). A stratum with no pixel gives NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BrierAccumulator", "brier_scores"]


@dataclass
class BrierAccumulator:
    """Sums of squared errors per stratum, float64; add images with :meth:`update`."""

    sq_pos: float = 0.0
    sq_neg: float = 0.0
    n_pos: int = 0
    n_neg: int = 0

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add pixels: ``scores`` float in [0, 1], ``labels`` bool, same shape (any)."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(labels, dtype=bool).ravel()
        if s.shape != y.shape:
            raise ValueError(f"scores and labels differ in size: {s.shape} vs {y.shape}")
        err = s - y
        sq = err * err
        self.sq_pos += float(sq[y].sum())
        self.sq_neg += float(sq[~y].sum())
        n_pos = int(np.count_nonzero(y))
        self.n_pos += n_pos
        self.n_neg += y.size - n_pos

    def add(self, sq_pos: float, sq_neg: float, n_pos: int, n_neg: int) -> None:
        """Add precomputed sums (squared errors and pixel counts per stratum)."""
        self.sq_pos += sq_pos
        self.sq_neg += sq_neg
        self.n_pos += n_pos
        self.n_neg += n_neg

    def result(self) -> dict[str, float]:
        """``{"brier", "brier_pos", "brier_neg"}``; NaN for an empty stratum."""
        n = self.n_pos + self.n_neg
        nan = float("nan")
        return {
            "brier": (self.sq_pos + self.sq_neg) / n if n else nan,
            "brier_pos": self.sq_pos / self.n_pos if self.n_pos else nan,
            "brier_neg": self.sq_neg / self.n_neg if self.n_neg else nan,
        }


def brier_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Brier score and stratified Brier scores of ``scores`` against bool ``labels`` (equal shapes)."""
    acc = BrierAccumulator()
    acc.update(scores, labels)
    return acc.result()
