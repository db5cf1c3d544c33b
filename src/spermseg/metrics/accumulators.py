"""Streaming evaluation of soft masks: every measure of the paper for full / head / tail in one pass.

:class:`SegmentationAccumulator` is the object the training engine, the reproduce pipeline and
``spermseg evaluate`` share (contract in docs/dev/CONVENTIONS.md)::

    acc = SegmentationAccumulator(mode="fast", kernels=(3, 5), parts=True)
    for prob, ref in pairs:          # prob (H, W) float in [0, 1]; ref bool (H, W) or {"full", "head", "tail"}
        acc.update(prob, ref)
    acc.result()  # {"n_images", "mode", "full": M, "head": M | None, "tail": M | None}

with ``M = {"ap", "iou_0.5", "iou_opt", "t_opt", "brier", "brier_pos", "brier_neg", "iou_prime_opt",
"iou_prime_0.5"}`` and each ``iou_prime_*`` ``{"3": {"r", "p", "iou"}, "5": {...}}`` (IoU' of the prediction
binarized at t_opt and at 0.5).

* ``mode="fast"``: constant memory, histograms of 2**16 bins (exact for 8/16-bit soft masks, AP within ~1e-4 of
  exact for float scores); IoU' at every threshold through grey morphology (see :mod:`spermseg.metrics.overlap`).
* ``mode="exact"``: keeps the masks, sorts every score (AP equals scikit-learn), binarizes at t_opt and 0.5 and
  computes IoU' literally. Memory grows with the set (the float32 soft masks plus the prepared references, about
  4.5 bytes per pixel) and all scores of a part are sorted at the end.
* References are prepared once (regions, skeletons, dilations: :mod:`spermseg.metrics.prep`) and, by default,
  kept in a process-wide LRU cache keyed by mask content, so scoring several models against one set is cheaper.
* ``kernels=()`` skips IoU' (cheap validation during training).
* ``per_image=True``: every image is scored alone; ``result()`` gives the mean over images in the usual
  places, the standard deviation under ``"std"`` and every image's result under ``"images"``.

Head and tail use the region rule of :mod:`spermseg.metrics.parts`: the prediction is restricted to the part's
region (pixel measures count region pixels only; for IoU' no pixel outside the region is ever predicted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spermseg.data.layouts import PARTS  # defined once, in the data layer
from spermseg.metrics.calibration import BrierAccumulator
from spermseg.metrics.overlap import IoUPrimeCounts, IoUPrimeHistogram, check_kernel, dilate, erode, offset_bins
from spermseg.metrics.prep import PartPrep, ReferenceCache, ReferencePrep, prepare_reference
from spermseg.metrics.ranking import (
    DEFAULT_BINS,
    ScoreHistogram,
    average_precision_from_counts,
    iou_from_counts,
    iou_opt_from_counts,
    rank_counts,
    safe_ratio,
)

__all__ = ["PARTS", "SegmentationAccumulator", "metric_keys"]

_SCALAR_KEYS = ("ap", "iou_0.5", "iou_opt", "t_opt", "brier", "brier_pos", "brier_neg")


def metric_keys() -> tuple[str, ...]:
    """The keys of one part's result M (scalars, then the two IoU' entries)."""
    return (*_SCALAR_KEYS, "iou_prime_opt", "iou_prime_0.5")


def _as_refs(ref: np.ndarray | dict[str, Any], shape: tuple[int, ...]) -> dict[str, np.ndarray | None]:
    """Normalize ``ref`` to ``{"full", "head", "tail"}`` bool arrays (None when a part is missing)."""
    if isinstance(ref, dict):
        unknown = set(ref) - set(PARTS)
        if unknown:
            raise ValueError(f"reference keys must be among {PARTS}, got {sorted(unknown)}")
        out: dict[str, np.ndarray | None] = {
            p: None if ref.get(p) is None else np.asarray(ref[p], dtype=bool) for p in PARTS
        }
        if out["full"] is None:
            if out["head"] is None or out["tail"] is None:
                raise ValueError("a reference dict needs 'full' or both 'head' and 'tail'")
            out["full"] = out["head"] | out["tail"]
    else:
        out = {"full": np.asarray(ref, dtype=bool), "head": None, "tail": None}
    for part, m in out.items():
        if m is not None and m.shape != shape:
            raise ValueError(f"reference {part} mask has shape {m.shape}, prediction has {shape}")
    return out


def _check_prob(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob)
    if p.ndim != 2:
        raise ValueError(f"soft mask must be 2-D (H, W), got shape {p.shape}")
    p = p.astype(np.float32, copy=False)
    lo, hi = float(p.min(initial=0.0)), float(p.max(initial=0.0))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise ValueError(f"soft mask values must be finite and in [0, 1], got range [{lo}, {hi}]")
    return p


class _Workspace:
    """Per-image arrays shared by every part and kernel, in buffers reused across images of the same shape.

    Attributes:
        ob: float32 (H, W) offset bins of the soft mask; q: int64 (H * W,) the same as integers;
        sq: float64 (H * W,) squared scores; padded: float32 (H + 2r, W + 2r) zero-bordered scratch with
        r = pad_width; f_buf: float32 (H, W) and q_buf: int64 (H * W,) scratch for the erosions.
    """

    def __init__(self, shape: tuple[int, int], pad_width: int) -> None:
        h, w = shape
        self.shape = shape
        self.pad_width = pad_width
        self.ob = np.empty(shape, np.float32)
        self.q = np.empty(h * w, np.int64)
        self.sq = np.empty(h * w, np.float64)
        self.padded = np.zeros((h + 2 * pad_width, w + 2 * pad_width), np.float32)
        self.f_buf = np.empty(shape, np.float32)
        self.q_buf = np.empty(h * w, np.int64)

    def load(self, prob: np.ndarray, n_bins: int) -> None:
        """Fill ``ob``, ``q`` and ``sq`` from a float32 (H, W) soft mask in [0, 1]."""
        offset_bins(prob, n_bins, out=self.ob)
        np.copyto(self.q, self.ob.ravel(), casting="unsafe")
        np.multiply(prob.ravel(), prob.ravel(), out=self.sq, dtype=np.float64)


class _FastPart:
    """Fast-mode state of one part: score histogram, Brier sums and IoU' histograms per kernel."""

    def __init__(self, kernels: tuple[int, ...], n_bins: int) -> None:
        self.hist = ScoreHistogram(n_bins)
        self.brier = BrierAccumulator()
        self.iou_prime = {k: IoUPrimeHistogram(k, n_bins) for k in kernels}

    def update(self, prob: np.ndarray, work: _Workspace, prep: PartPrep) -> None:
        """Add one image.

        Args:
            prob: float32 (H, W) soft mask.
            work: the image's offset bins, bin codes and squared scores, and scratch buffers.
            prep: the reference data of this part.
        """
        nb = self.hist.n_bins
        q = work.q
        region = prep.region()
        flat_region = None if region is None else region.ravel()
        self.hist.tot += np.bincount(q if flat_region is None else q[flat_region], minlength=nb + 2)[1:]
        self.hist.pos += np.bincount(q[prep.pos_idx], minlength=nb + 2)[1:]
        # Brier from sums: negatives contribute s^2, positives (1 - s)^2; reference pixels always lie in the region.
        s_pos = prob.ravel()[prep.pos_idx].astype(np.float64)
        sq_region = float(work.sq.sum() if flat_region is None else work.sq[flat_region].sum())
        n_region = q.size if flat_region is None else int(np.count_nonzero(flat_region))
        self.brier.add(
            sq_pos=float(np.sum((1.0 - s_pos) ** 2)),
            sq_neg=sq_region - float(np.sum(s_pos * s_pos)),
            n_pos=int(s_pos.size),
            n_neg=n_region - int(s_pos.size),
        )
        if self.iou_prime:
            # the prediction inside the region (offset bin 0, never predicted, elsewhere), written into the interior
            # of a zero-bordered buffer so that the skeleton windows can be read without a bounds check
            r = work.pad_width
            inner = work.padded[r : r + prob.shape[0], r : r + prob.shape[1]]
            if region is None:
                np.copyto(inner, work.ob)
            else:
                np.multiply(work.ob, region, out=inner)
            for k, h in self.iou_prime.items():
                h.add_binned(inner, prep.skel_idx, prep.dref_idx[k], work.padded, (work.f_buf, work.q_buf))

    def result(self) -> dict[str, Any]:
        c = self.hist.counts()
        nb = self.hist.n_bins
        iou_opt, t_opt = iou_opt_from_counts(c)
        half = nb // 2  # the threshold 0.5 is the bin edge n_bins / 2 exactly
        tp5, pp5 = int(self.hist.pos[half:].sum()), int(self.hist.tot[half:].sum())
        n_pos = c.n_pos
        out: dict[str, Any] = {
            "ap": average_precision_from_counts(c),
            "iou_0.5": float(iou_from_counts(np.array([tp5]), np.array([pp5]), n_pos)[0]),
            "iou_opt": iou_opt,
            "t_opt": t_opt,
            **self.brier.result(),
        }
        i_opt = round(t_opt * nb) if math.isfinite(t_opt) else nb + 1
        for name, i in (("iou_prime_opt", i_opt), ("iou_prime_0.5", half)):
            out[name] = {
                str(k): h.counts_at(i, n_pos, int(self.hist.tot[i:].sum())).result() for k, h in self.iou_prime.items()
            }
        return out

    def curves(self) -> dict[str, Any]:
        c = self.hist.counts()
        out: dict[str, Any] = {
            "thresholds": c.thresholds,
            "iou": iou_from_counts(c.tp, c.pp, c.n_pos),
            "precision": c.tp / np.maximum(c.pp, 1),
            "recall": c.tp / c.n_pos if c.n_pos else np.full(c.tp.shape, np.nan),
        }
        # IoU' curves at the same thresholds (bin edges of non-empty bins).
        idx = np.rint(c.thresholds * self.hist.n_bins).astype(np.int64)
        pred_px = np.cumsum(self.hist.tot[::-1])[::-1]
        for k, h in self.iou_prime.items():
            cur = h.curve(c.n_pos, pred_px)
            out[f"iou_prime_{k}"] = {key: v[idx] for key, v in cur.items()}
        return out


_DEFAULT_CACHE = ReferenceCache()


class SegmentationAccumulator:
    """Accumulate soft masks and references; see the module docstring for the result format.

    Args:
        mode: ``"fast"`` (histograms, constant memory) or ``"exact"`` (sort-based, keeps the masks).
        kernels: odd IoU' kernel sizes; ``()`` skips IoU'.
        parts: score head and tail when the references have them.
        n_bins: histogram resolution of fast mode.
        per_image: score every image alone and report mean / std over images.
        cache: where reference-derived data (regions, skeletons, dilations) is reused across evaluations:
            ``True`` for a process-wide LRU cache keyed by mask content, a :class:`ReferenceCache`, or
            ``None``/``False`` to recompute every time.
    """

    def __init__(
        self,
        mode: str = "fast",
        kernels: tuple[int, ...] | list[int] = (3, 5),
        parts: bool = True,
        *,
        n_bins: int = DEFAULT_BINS,
        per_image: bool = False,
        cache: ReferenceCache | bool | None = True,
    ) -> None:
        if mode not in ("fast", "exact"):
            raise ValueError(f"mode must be 'fast' or 'exact', got {mode!r}")
        if n_bins < 2 or n_bins & (n_bins - 1):
            raise ValueError(f"n_bins must be a power of two >= 2 (exact bin edges), got {n_bins}")
        self.mode = mode
        self.kernels = tuple(check_kernel(k) for k in kernels)
        self.parts = bool(parts)
        self.n_bins = int(n_bins)
        self.per_image = bool(per_image)
        self.cache: ReferenceCache | None = _DEFAULT_CACHE if cache is True else (cache or None)
        self.n_images = 0
        self._has_parts: bool | None = None
        self._fast: dict[str, _FastPart] = {}
        self._stored: list[tuple[np.ndarray, ReferencePrep]] = []
        self._images: list[dict[str, Any]] = []
        self._work: _Workspace | None = None

    # ------------------------------------------------------------------ update
    def update(self, prob: np.ndarray, ref: np.ndarray | dict[str, Any], name: str | None = None) -> None:
        """Add one image.

        Args:
            prob: (H, W) soft mask, float in [0, 1].
            ref: bool (H, W) full reference, or ``{"full": ..., "head": ..., "tail": ...}`` (parts may be None).
            name: optional image name (kept in per-image results).
        """
        p = _check_prob(prob)
        refs = _as_refs(ref, p.shape)
        has_parts = self.parts and refs["head"] is not None and refs["tail"] is not None
        if self._has_parts is None:
            self._has_parts = has_parts
        elif has_parts != self._has_parts:
            raise ValueError("some images have head/tail references and others do not; score parts consistently")
        if not has_parts:
            refs["head"] = refs["tail"] = None
        self.n_images += 1
        if self.per_image:
            single = SegmentationAccumulator(self.mode, self.kernels, self.parts, n_bins=self.n_bins, cache=self.cache)
            single.update(p, refs)
            res = single.result()
            self._images.append({"name": name, **{k: res[k] for k in PARTS}})
            return
        full = refs["full"]
        assert full is not None
        if self.cache is not None:
            prep = self.cache.get(full, refs["head"], refs["tail"], self.kernels)
        else:
            prep = prepare_reference(full, refs["head"], refs["tail"], self.kernels)
        if self.mode == "exact":
            self._stored.append((p, prep))
            return
        if self._work is None or self._work.shape != p.shape:
            self._work = _Workspace(p.shape, max(self.kernels, default=1) // 2)
        self._work.load(p, self.n_bins)  # offset bins of p, computed once for every part and kernel
        for part, part_prep in prep.parts.items():
            if part not in self._fast:
                self._fast[part] = _FastPart(self.kernels, self.n_bins)
            self._fast[part].update(p, self._work, part_prep)

    # ------------------------------------------------------------------ results
    def result(self) -> dict[str, Any]:
        """The evaluation result (JSON-ready; NaN stands for an undefined value)."""
        out: dict[str, Any] = {"n_images": self.n_images, "mode": self.mode}
        if self.per_image:
            out.update(self._per_image_summary())
            return out
        for part in PARTS:
            out[part] = None
        if self.n_images == 0:
            return out
        if self.mode == "fast":
            for part, state in self._fast.items():
                out[part] = state.result()
        else:
            for part in PARTS if self._has_parts else ("full",):
                out[part] = self._exact_result(part)
        return out

    def curves(self, part: str = "full") -> dict[str, Any]:
        """Threshold curves of one part (fast mode): thresholds (decreasing), iou, precision, recall and, per
        kernel, ``iou_prime_K = {"r", "p", "iou"}`` at the same thresholds (paper Fig. 7)."""
        if self.mode != "fast" or self.per_image:
            raise ValueError("curves() needs mode='fast' without per_image")
        if part not in self._fast:
            raise ValueError(f"no data for part {part!r}")
        return self._fast[part].curves()

    def _exact_result(self, part: str) -> dict[str, Any]:
        """Sort-based measures over the stored masks; IoU' by literal binarization and binary morphology."""
        scores, labels, brier = [], [], BrierAccumulator()
        for prob, prep in self._stored:
            pp = prep.parts[part]
            region = pp.region()
            ref = pp.ref()
            s, y = (prob.ravel(), ref.ravel()) if region is None else (prob[region], ref[region])
            scores.append(s)
            labels.append(y)
            brier.update(s, y)
        s_all = np.concatenate(scores)
        y_all = np.concatenate(labels)
        del scores, labels
        c = rank_counts(s_all, y_all, "exact")
        iou_opt, t_opt = iou_opt_from_counts(c)
        pred5 = s_all >= 0.5
        tp5, pp5 = int(np.count_nonzero(pred5 & y_all)), int(np.count_nonzero(pred5))
        out: dict[str, Any] = {
            "ap": average_precision_from_counts(c),
            "iou_0.5": float(safe_ratio(tp5, pp5 + c.n_pos - tp5, pp5 == 0 and c.n_pos == 0)),
            "iou_opt": iou_opt,
            "t_opt": t_opt,
            **brier.result(),
        }
        del s_all, y_all, pred5
        thresholds = {"iou_prime_opt": t_opt, "iou_prime_0.5": 0.5}
        totals = {name: {k: IoUPrimeCounts() for k in self.kernels} for name in thresholds}
        if self.kernels:
            for prob, prep in self._stored:
                pp = prep.parts[part]
                region = pp.region()
                for name, t in thresholds.items():
                    # the prediction inside the region, binarized: Eq. (1) computed literally
                    pred = prob >= t if region is None else (prob >= t) & region
                    for k in self.kernels:
                        totals[name][k] += _literal_counts(pred, pp, k)
        for name in thresholds:
            out[name] = {str(k): totals[name][k].result() for k in self.kernels}
        return out

    def _per_image_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"per_image": True, "images": self._images, "std": {}}
        for part in PARTS:
            rows = [img[part] for img in self._images if img[part] is not None]
            if not rows:
                out[part] = None
                out["std"][part] = None
                continue
            mean, std = _mean_std(rows)
            out[part] = mean
            out["std"][part] = std
        return out


def _literal_counts(pred: np.ndarray, pp: PartPrep, k: int) -> IoUPrimeCounts:
    """Counts of Eq. (1) for a binary prediction and a prepared reference (binary dilation / erosion)."""
    e = erode(pred, k)
    return IoUPrimeCounts(
        rec_num=int(np.count_nonzero(dilate(pred, k).ravel()[pp.skel_idx])),
        rec_den=int(pp.skel_idx.size),
        prec_num=int(np.count_nonzero(e.ravel()[pp.dref_idx[k]])),
        prec_den=int(np.count_nonzero(e)),
        ref_px=int(pp.pos_idx.size),
        pred_px=int(np.count_nonzero(pred)),
    )


def _mean_std(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and (population) std over images of nested metric dicts, skipping NaN (undefined) values."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key, first in rows[0].items():
        if isinstance(first, dict):
            mean[key], std[key] = _mean_std([r[key] for r in rows])
            continue
        vals = np.array([r[key] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        mean[key] = float(vals.mean()) if vals.size else float("nan")
        std[key] = float(vals.std()) if vals.size else float("nan")
    return mean, std
