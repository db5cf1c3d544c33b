"""Sperm instances from a segmentation: separate touching and crossing sperm into one label per sperm.

Three methods, compared in docs/instances.md (same inputs: a full mask and a head mask, e.g. from a parts
network, or heads estimated from the full mask alone):

* ``components``: 8-connected components of the full mask (the old behaviour; touching sperm merge).
* ``watershed``: heads are seeds; every other foreground pixel joins the geodesically nearest head (marker
  watershed on a flat relief, restricted to the mask). Simple and robust, but at a crossing the nearer head
  takes both tails' pixels beyond it.
* ``skeleton`` (default): heads are seeds; the tail region is thinned to a skeleton, cut into segments at its
  junctions (junctions closer than ``junction_merge`` px form one crossing), and each sperm follows its tail from
  the segment touching its head through each crossing along the segment that best continues its direction
  (smallest turn, at most ``max_turn_deg``), so two crossing tails each keep their own whole tail. Heads are
  graph nodes too: a skeleton fork touching a head belongs to the head, a sperm's own tail starts at its neck
  (the segment end nearest a tip of the head's major axis, ``neck_min``), and the other tail ends at a head
  are paired straight through it (a tail running over another sperm's head, chord up to ``head_pass_px``).
  Free tail ends that continue each other straight across at most ``gap_px`` px are joined (a tail broken by
  the segmentation). Tail pixels then take the label of the nearest traced skeleton pixel; segments of at least
  ``orphan_px`` that no trace reaches (an unlabelled sperm's tail, a tail lost at a crossing) are left out, unless
  they continue a traced tail straight across a gap of at most ``adopt_px`` (then they join it).

Seeds: connected parts of the head mask of at least ``min_head_area`` px that hold a disk of ``min_seed_radius``
px (default 1.6 x ``head_radius`` = 8 px: a thick midpiece or a tail crossing survives the opening but is thinner
than any head); touching heads are split at the saddle of their distance transform (markers: plateaus of an h-dome
reconstruction, ``h = 2`` px). Without a head mask, heads are estimated as the morphological opening of the full
mask with a disk of ``head_radius`` px (tails are ~4 px wide at the spermparsing scale, heads ~26 px).

Headless pieces: a foreground component without a head joins the nearest sperm when it lies within
``join_distance`` px of it and its skeleton is shorter than ``orphan_px`` (a bit of a tail broken by the
segmentation), else it is a candidate headless sperm.

Minimum size / shape rule (fragments never become sperm): an instance is kept when it has a head seed and at
least ``min_area`` px, or, without a head (a free tail, or a head outside the image), only with
``keep_headless`` and when its traced skeleton is at least ``min_tail_length`` px long and it has ``min_area`` px.
Dropped pixels become background.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

METHODS: tuple[str, ...] = ("skeleton", "watershed", "components")
Method = Literal["skeleton", "watershed", "components"]
_EIGHT = np.ones((3, 3), dtype=bool)
#: Touching heads are split when the distance transform dips by at least this many px between their centres.
SPLIT_DEPTH = 2.0
#: Default thinnest head seed, in units of the opening radius ``head_radius``: 1.6 x 5 = 8 px at the spermparsing
#: scale, where the training labels' whole-sperm radius (midway between the thickest tails and the thinnest
#: heads, ``best.json["whole_sperm"]["min_head_radius"]``) is 8.3 px (docs/instances.md).
SEED_RADIUS_RATIO = 1.6


@dataclass(frozen=True)
class InstanceOptions:
    """Parameters of :func:`separate_instances` (pixels at the training images' scale)."""

    method: Method = "skeleton"
    min_area: int = 150
    min_head_area: int = 150
    min_tail_length: float = 40.0
    head_radius: int = 5
    junction_merge: float = 6.0
    max_turn_deg: float = 75.0
    direction_px: int = 10
    join_distance: float = 15.0
    #: largest distance between two tail ends paired through a head (0: heads are not graph nodes)
    head_pass_px: float = 45.0
    #: largest gap between two free tail ends that continue each other (0: no bridging)
    gap_px: float = 25.0
    #: a head's own tail starts on a segment end with at least this neck score (tip of the major axis x
    #: alignment with it, 0..1) when there is one
    neck_min: float = 0.6
    #: skeleton forks and segment ends within this distance (px) of a head belong to it (0: 2 px for forks,
    #: 3 px (chessboard) for ends, the first rule). This and the next three rules were chosen on the 20
    #: spermparsing validation images (docs/instances.md, "Where PQ is lost": PQ 0.521 -> 0.604)
    neck_gap_px: float = 9.0
    #: a skeleton fork joined to a head by a segment shorter than this (px) belongs to the head (0: off)
    stub_px: float = 10.0
    #: a seed is a head only when it holds a disk of this radius (px; its distance-transform maximum): thick
    #: midpieces and tail crossings survive the opening but are thinner than any head. ``None``: derived from the
    #: opening radius (:data:`SEED_RADIUS_RATIO` x ``head_radius``); 0 keeps every seed.
    min_seed_radius: float | None = None
    #: a segment that two heads both start on is split between them (geodesically) instead of going to one
    split_shared: bool = True
    #: a skeleton segment at least this long (px) that no head's trace reaches, in a piece of foreground that holds a
    #: head, is left out of every sperm (its pixels become background) instead of joining the geodesically nearest
    #: sperm: mostly the tails of sperm the raters did not label, or tails lost at a crossing, which made the nearest
    #: sperm "too long" (part network, 20 spermparsing validation images: PQ 0.566 -> 0.644; docs/instances.md).
    #: Shorter pieces (spurs of the skeleton) still join the nearest sperm. 0: every piece joins (the old rule)
    orphan_px: float = 20.0
    #: ... unless it continues a traced tail: an orphan segment with an end within this distance (px) of an end of
    #: a traced segment that it continues straight (within ``adopt_turn_deg``) joins that sperm (a tail broken where
    #: it crosses another or fades; 20 spermparsing validation images: PQ 0.654 -> 0.672, GT1's own pixels on the
    #: other training images 0.850 -> 0.874). 0: off
    adopt_px: float = 30.0
    #: largest turn (degrees) of such a continuation (stricter than ``max_turn_deg``: the piece may be another
    #: sperm's tail; 40 degrees already took unlabelled tails on the validation images)
    adopt_turn_deg: float = 30.0
    #: keep pieces without a head (free tails, heads outside the image) as sperm when long enough. Off by default:
    #: raters of whole sperm do not label such pieces, and counting them inflates the count, with a part network's
    #: heads (20 spermparsing validation images: PQ 0.384 -> 0.446, 190 -> 145 sperm for 134) and with heads
    #: estimated from a binary mask alike (the built-in binary model on the same images, with ``orphan_px``: PQ
    #: 0.414 -> 0.488, 197 -> 147 sperm). Tracking turns it on (headless pieces stay in its label stack).
    keep_headless: bool = False

    def scaled(self, factor: float) -> InstanceOptions:
        """The same rules at another image scale: every length in px times ``factor`` (e.g. a video whose heads are
        0.6 x as long as spermparsing's: ``factor = head_radius / 5``). The size filters (``min_area``,
        ``min_head_area``, ``min_tail_length``, ``head_radius``) are left as they are (set them for the new scale),
        as are ``min_seed_radius`` and the angles."""
        lengths = ("junction_merge", "join_distance", "head_pass_px", "gap_px", "neck_gap_px", "stub_px", "orphan_px",
                   "adopt_px")  # fmt: skip
        changes: dict[str, float | int] = {k: getattr(self, k) * factor for k in lengths}
        changes["direction_px"] = max(2, int(round(self.direction_px * factor)))
        return replace(self, **changes)


def estimate_heads(full: np.ndarray, radius: int = 5) -> np.ndarray:
    """Head mask (H, W) bool of a full mask: its opening with a disk of ``radius`` px (thin tails vanish)."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.morphologyEx(np.asarray(full, np.uint8), cv2.MORPH_OPEN, k).astype(bool)


def head_seeds(head: np.ndarray, min_head_area: int = 150, min_radius: float = 0.0) -> np.ndarray:
    """One label per head (int32 (H, W)); touching heads are split at their distance-transform saddle.

    Args:
        head: (H, W) bool head mask.
        min_head_area: head parts smaller than this are not seeds.
        min_radius: seeds whose distance-transform maximum (inscribed radius, px) is below this are not heads.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import local_maxima, reconstruction
    from skimage.segmentation import watershed

    from spermseg.data.labels import labeled_max

    head = np.asarray(head, bool)
    if not head.any():
        return np.zeros(head.shape, np.int32)
    dist = ndi.distance_transform_edt(head)
    # h-dome markers: the plateaus of the reconstruction of (dist - h) under dist. skimage's h_maxima marks the
    # peaks only, so two equal peaks of one head joined by a shallow dip would become two seeds.
    dome = reconstruction(np.maximum(dist - SPLIT_DEPTH, 0), dist, method="dilation")
    markers, _ = ndi.label(local_maxima(dome, connectivity=2) & head, structure=_EIGHT)
    seeds = watershed(-dist, markers, mask=head, connectivity=2)
    # a head part without any marker (tiny) keeps no seed; then drop small seeds
    areas = np.bincount(seeds.ravel())
    small = areas < min_head_area
    if min_radius > 0 and seeds.max() > 0:
        small |= labeled_max(dist, seeds, len(small)) < min_radius
    small = np.nonzero(small)[0]
    seeds[np.isin(seeds, small[small > 0])] = 0
    return _relabel(seeds)


def seed_radius(opt: InstanceOptions) -> float:
    """The thinnest head seed of ``opt`` in px (``min_seed_radius``, or :data:`SEED_RADIUS_RATIO` x ``head_radius``)."""
    return SEED_RADIUS_RATIO * opt.head_radius if opt.min_seed_radius is None else float(opt.min_seed_radius)


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


def separate_instances(
    full: np.ndarray,
    head: np.ndarray | None = None,
    options: InstanceOptions | None = None,
    neck: np.ndarray | None = None,
) -> np.ndarray:
    """Label every sperm of a segmentation.

    Args:
        full: (H, W) bool mask of whole sperm.
        head: (H, W) bool head mask (e.g. part codes 1-3); ``None``: estimated with :func:`estimate_heads`.
        options: method and size rules (:class:`InstanceOptions`).
        neck: (H, W) bool midpiece mask (part code 4 of a part network) or None; ``skeleton`` then starts each
            head's own tail at the tip of the head where its midpiece is.

    Returns:
        (H, W) uint16 label image: 0 background, 1..N one sperm each (ids in raster order of first pixel).
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from spermseg.data.labels import relabel_sequential

    opt = options or InstanceOptions()
    full = np.asarray(full, bool)
    if opt.method not in METHODS:
        raise ValueError(f"unknown instance method '{opt.method}'; choose one of {', '.join(METHODS)}")
    if opt.method == "components":
        labels, n = ndi.label(full, structure=_EIGHT)
        return relabel_sequential(_drop_small(labels, np.ones(n + 1, bool), opt))  # area rule only
    head = estimate_heads(full, opt.head_radius) if head is None else (np.asarray(head, bool) & full)
    seeds = head_seeds(head, opt.min_head_area, seed_radius(opt))
    if opt.method == "watershed":
        labels = watershed(np.zeros(full.shape, np.uint8), seeds, mask=full, connectivity=2).astype(np.int32)
    else:
        from spermseg.inference.tracing import trace_tails

        labels, orphans = trace_tails(full, seeds, opt, neck)
        full = full & ~orphans  # pixels of segments no head reaches are no sperm's (``orphan_px``)
    n_heads = int(seeds.max())
    labels = _headless(full, labels, opt)
    has_head = np.zeros(int(labels.max()) + 1, bool)
    has_head[1 : n_heads + 1] = True
    return relabel_sequential(_drop_small(labels, has_head, opt))


def _headless(full: np.ndarray, labels: np.ndarray, opt: InstanceOptions) -> np.ndarray:
    """Foreground components without a head: join the nearest sperm within ``join_distance`` px when shorter than
    ``orphan_px`` (a bit of a tail broken by the segmentation), else become their own (headless) instance, subject
    to the size rule."""
    from scipy import ndimage as ndi

    rest, n = ndi.label(full & (labels == 0), structure=_EIGHT)
    if n == 0:
        return labels
    labels = labels.copy()
    top = int(labels.max())
    if top == 0:
        return rest.astype(np.int32)
    from skimage.morphology import skeletonize

    from spermseg.inference.morphometry import skeleton_length

    dist, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    for k, sl in enumerate(ndi.find_objects(rest), start=1):
        piece = rest[sl] == k
        d = dist[sl][piece]
        j = int(np.argmin(d))
        # a piece as long as an orphan segment is another tail, not a bit of this one (a broken tail that continues
        # straight is already joined by the tracing's gap rule)
        long = opt.orphan_px > 0 and skeleton_length(skeletonize(piece)) >= opt.orphan_px
        if d[j] <= opt.join_distance and not long:
            labels[sl][piece] = labels[iy[sl][piece][j], ix[sl][piece][j]]
        else:
            labels[sl][piece] = top + k
    return labels


def _drop_small(labels: np.ndarray, has_head: np.ndarray, opt: InstanceOptions) -> np.ndarray:
    """Apply the minimum size / shape rule of the module docstring (in place on a copy)."""
    from skimage.morphology import skeletonize

    from spermseg.inference.morphometry import skeleton_length

    labels = labels.copy()
    if not labels.any():
        return labels
    areas = np.bincount(labels.ravel())
    from scipy import ndimage as ndi

    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        headed = i < has_head.size and bool(has_head[i])
        keep = areas[i] >= opt.min_area
        if keep and not headed:
            keep = opt.keep_headless and skeleton_length(skeletonize(labels[sl] == i)) >= opt.min_tail_length
        if not keep:
            labels[sl][labels[sl] == i] = 0
    return labels
