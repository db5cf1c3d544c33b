"""Tail tracing along the skeleton graph with direction continuity at crossings (the ``skeleton`` method).

Graph: the skeleton of the tail region (foreground minus head seeds) is cut at its junctions. Junction pixels
closer than ``junction_merge`` px form one *crossing* node; the remaining skeleton pieces are *segments* (edges).
Each segment end that touches a crossing gets an outward direction (from the mean of the segment pixels within
``direction_px`` of the end to the end). At each crossing the segments are paired into straight-through pairs,
greedily by the smallest turn (at most ``max_turn_deg``): pairing per crossing rather than per sperm makes the
result independent of the order in which sperm are traced. A sperm starts on the longest segment touching its
head with one of its ends and follows the pairs until a free end. Segments reached by no head (spurs, pieces
behind a failed continuation) join the geodesically nearest sperm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EIGHT = np.ones((3, 3), dtype=bool)


def _segment_ends(
    seg_pixels: np.ndarray, touching: np.ndarray, radius: float
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For one segment: {node id: (end point (2,), unit outward direction (2,))} of the nodes it touches.

    Args:
        seg_pixels: (n, 2) row/col coordinates of the segment.
        touching: (n,) node id touched by each pixel (0: none).
        radius: pixels within this distance of the end define its direction.
    """
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for node in np.unique(touching[touching > 0]):
        end = seg_pixels[touching == node].mean(axis=0)
        dist = np.hypot(*(seg_pixels - end).T)
        near = seg_pixels[dist <= max(radius, float(dist.min()))]
        d = end - near.mean(axis=0)
        norm = float(np.hypot(*d))
        out[int(node)] = (end, d / norm if norm > 0 else np.zeros(2))
    return out


def _pair_crossing(ends: list[tuple[int, np.ndarray]], min_cos: float) -> dict[int, int]:
    """Pair segments meeting at one crossing into straight-through pairs (greedy, smallest turn first).

    Args:
        ends: (segment id, outward direction into the crossing) per attached segment end.
        min_cos: cosine of the largest accepted turn.
    """
    cands = []
    for a in range(len(ends)):
        for b in range(a + 1, len(ends)):
            sa, da = ends[a]
            sb, db = ends[b]
            if sa != sb:
                # travelling in along a (direction da) and out along b (direction -db): cos of the turn
                cands.append((float(np.dot(da, -db)), sa, sb))
    cands.sort(reverse=True)
    partner: dict[int, int] = {}
    for cos, sa, sb in cands:
        if cos < min_cos:
            break
        if sa not in partner and sb not in partner:
            partner[sa] = sb
            partner[sb] = sa
    return partner


def _graph(full: np.ndarray, seeds: np.ndarray, opt: Any) -> dict[str, Any]:
    """Skeleton segments, crossings, their attachments and the segments touching each head."""
    from scipy import ndimage as ndi
    from skimage.morphology import disk, skeletonize

    tail = full & (seeds == 0)
    skel = skeletonize(tail)
    nb = ndi.convolve(skel.astype(np.uint8), _EIGHT.astype(np.uint8), mode="constant") - 1
    junction = skel & (nb >= 3)
    r = max(1, round(opt.junction_merge / 2))
    crossing_region = ndi.binary_dilation(junction, structure=disk(r)) & skel if junction.any() else junction
    crossings, _ = ndi.label(crossing_region, structure=_EIGHT)
    seg_mask = skel & ~crossing_region
    segments, n_seg = ndi.label(seg_mask, structure=_EIGHT)
    # segment end pixels: a tail *starts* at a head only with an end there; a tail passing by a head touches it
    # with its middle and must not be taken for that head's tail
    seg_nb = ndi.convolve(seg_mask.astype(np.uint8), _EIGHT.astype(np.uint8), mode="constant") - 1
    ends = seg_mask & (seg_nb <= 1)
    near_crossing = ndi.grey_dilation(crossings, footprint=_EIGHT)
    near_head = ndi.grey_dilation(seeds, size=(5, 5))
    attach: dict[int, list[tuple[int, np.ndarray]]] = {}  # crossing -> [(segment, direction into it)]
    seg_nodes: dict[int, list[int]] = {}  # segment -> crossings it touches
    seg_heads: dict[int, set[int]] = {}
    lengths = np.zeros(n_seg + 1)
    for s, sl in enumerate(ndi.find_objects(segments), start=1):
        if sl is None:
            continue
        local = segments[sl] == s
        ys, xs = np.nonzero(local)
        pix = np.stack([ys + sl[0].start, xs + sl[1].start], axis=1).astype(np.float64)
        lengths[s] = len(pix)
        touching = near_crossing[sl][local]
        for node, (_, d) in _segment_ends(pix, touching, opt.direction_px).items():
            attach.setdefault(node, []).append((s, d))
            seg_nodes.setdefault(s, []).append(node)
        heads = near_head[sl][local & ends[sl]]
        seg_heads[s] = {int(h) for h in np.unique(heads[heads > 0])}
    return {
        "segments": segments,
        "crossings": crossings,
        "n_seg": n_seg,
        "attach": attach,
        "seg_nodes": seg_nodes,
        "seg_heads": seg_heads,
        "lengths": lengths,
    }


def _follow(start: int, partners: dict[int, dict[int, int]], seg_nodes: dict[int, list[int]], avoid: int) -> list[int]:
    """Segments visited from ``start`` (leaving through every crossing other than ``avoid``), following pairs."""
    path = [start]
    seen = {start}
    todo = [(start, avoid)]
    while todo:
        seg, came_from = todo.pop()
        for node in seg_nodes.get(seg, []):
            if node == came_from:
                continue
            nxt = partners.get(node, {}).get(seg)
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                todo.append((nxt, node))
    return path


def trace_tails(full: np.ndarray, seeds: np.ndarray, opt: Any) -> np.ndarray:
    """Label sperm by tracing each head's tail along the skeleton graph.

    Args:
        full: (H, W) bool foreground.
        seeds: (H, W) int head labels 1..K (0 elsewhere).
        opt: :class:`spermseg.inference.instances.InstanceOptions`.

    Returns:
        int32 (H, W) labels 1..K of the heads' sperm; foreground of components without a head stays 0.
    """
    from skimage.segmentation import watershed

    g = _graph(full, seeds, opt)
    min_cos = float(np.cos(np.deg2rad(opt.max_turn_deg)))
    partners = {node: _pair_crossing(ends, min_cos) for node, ends in g["attach"].items()}
    owner = np.zeros(g["n_seg"] + 1, np.int32)
    n_heads = int(seeds.max())
    by_head: dict[int, list[int]] = {}
    for s, heads in g["seg_heads"].items():
        for h in heads:
            by_head.setdefault(h, []).append(s)
    for h in range(1, n_heads + 1):
        starts = sorted(by_head.get(h, []), key=lambda s: -g["lengths"][s])
        starts = [s for s in starts if owner[s] == 0]
        if not starts:
            continue
        for s in _follow(starts[0], partners, g["seg_nodes"], avoid=-1):
            if owner[s] == 0 and (s == starts[0] or not (g["seg_heads"][s] - {h})):
                owner[s] = h
    # segments that no head reached (spurs, pieces behind a failed continuation) join the geodesically nearest
    # sperm; components without any head are left to the caller (spermseg.inference.instances)
    markers = np.where(seeds > 0, seeds, owner[g["segments"]]).astype(np.int32)
    return watershed(np.zeros(full.shape, np.uint8), markers, mask=full, connectivity=2).astype(np.int32)
