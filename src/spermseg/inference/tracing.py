"""Tail tracing along the skeleton graph with direction continuity at crossings (the ``skeleton`` method).

Graph: the skeleton of the tail region (foreground minus head seeds) is cut at its junctions. Junction pixels
closer than ``junction_merge`` px form one *crossing* node; the remaining skeleton pieces are *segments* (edges).
Each segment end that touches a crossing gets an outward direction (from the mean of the segment pixels within
``direction_px`` of the end to the end). At each crossing the segments are paired into straight-through pairs,
greedily by the smallest turn (at most ``max_turn_deg``): pairing per crossing rather than per sperm makes the
result independent of the order in which sperm are traced.

Heads are nodes as well (:func:`_head_nodes`): crossings and segment ends within ``neck_gap_px`` of a head, and
crossings joined to a head by a stub shorter than ``stub_px`` (:func:`_absorb_stubs`), are attached to the head
(the skeleton forks where the tail region meets the head's outline, and the segmentation often leaves a gap of a
few px at the neck). A sperm's own tail
starts on the attached segment end at its neck: not part of a pass-through pair, at least ``direction_px`` long,
with a neck score (:func:`_neck_score`) of at least ``neck_min`` when one has it, the longest such. The other
ends are paired straight through the head (a tail over another sperm's head is cut by it). With a midpiece mask
(a part network's code 4), only the tip of the head on its midpiece's side is a neck (:func:`_neck_sides`).
Free segment ends that continue each other across at most ``gap_px`` px are paired too (:func:`_gap_nodes`).
A sperm follows the pairs from its start until a free end, never into another head's own tail. A segment
that two heads start on (two tails meeting end to end) goes to neither whole (``split_shared``). Segments reached
by no head join the geodesically nearest sperm when they are spurs (shorter than ``orphan_px``) or shared; longer
ones (an unlabelled sperm's tail, a piece behind a failed continuation) are *orphans*, nobody's.
"""

from __future__ import annotations

from collections import Counter
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
    return _greedy_pairs(cands, min_cos)


def _greedy_pairs(cands: list[tuple[float, int, int]], min_cos: float) -> dict[int, int]:
    """Pair segments greedily by the largest cosine (smallest turn) first, each at most once, down to ``min_cos``.

    Args:
        cands: (cosine of the turn, segment a, segment b) candidates.
        min_cos: candidates below it are never paired.

    Returns:
        {segment: partner segment}, symmetric.
    """
    partner: dict[int, int] = {}
    for cos, sa, sb in sorted(cands, reverse=True):
        if cos < min_cos:
            break
        if sa not in partner and sb not in partner:
            partner[sa] = sb
            partner[sb] = sa
    return partner


def _end_direction(pix: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """Unit outward direction at ``end`` of a segment with pixels ``pix`` (n, 2): from the mean of the pixels
    within ``radius`` of the end to the end."""
    near = pix[np.hypot(*(pix - end).T) <= radius]
    d = end - near.mean(axis=0)
    norm = float(np.hypot(*d))
    return d / norm if norm > 0 else np.zeros(2)


def _pair_across(ends: list[tuple[int, np.ndarray, np.ndarray]], min_cos: float, max_gap: float) -> dict[int, int]:
    """Pair segment ends across a head or a gap: straight-through pairs whose chord continues both directions.

    Args:
        ends: (segment id, end point (2,), outward direction (2,)) per end.
        min_cos: cosine of the largest accepted turn (between the two directions, and of each against the chord).
        max_gap: largest accepted distance between the two end points.

    Returns:
        {segment: partner segment}, greedy by the smallest turn.
    """
    cands = []
    for a in range(len(ends)):
        for b in range(a + 1, len(ends)):
            turn = _continuation(ends[a], ends[b], max_gap)
            if turn is not None:
                cands.append((turn, ends[a][0], ends[b][0]))
    return _greedy_pairs(cands, min_cos)


def _continuation(
    a: tuple[int, np.ndarray, np.ndarray], b: tuple[int, np.ndarray, np.ndarray], max_gap: float
) -> float | None:
    """Cosine of the turn from segment end ``a`` into segment end ``b`` across the chord between them (the
    smallest of the three: between the two directions, and of each against the chord), or None when they are the
    same segment or farther apart than ``max_gap``. Ends are (segment, end point (2,), outward direction (2,))."""
    sa, pa, da = a
    sb, pb, db = b
    chord = pb - pa
    length = float(np.hypot(*chord))
    if sa == sb or length > max_gap:
        return None
    turn = float(np.dot(da, -db))
    if length > 3:  # the chord must continue both ends (a parallel neighbour is not a continuation)
        u = chord / length
        turn = min(turn, float(np.dot(da, u)), float(np.dot(-db, u)))
    return turn


def _graph(full: np.ndarray, seeds: np.ndarray, opt: Any, neck: np.ndarray | None = None) -> dict[str, Any]:
    """Skeleton segments, crossings, their attachments, free segment ends and the segment ends at each head."""
    from scipy import ndimage as ndi
    from skimage.morphology import disk, skeletonize

    tail = full & (seeds == 0)
    skel = skeletonize(tail)
    nb = ndi.convolve(skel.astype(np.uint8), _EIGHT.astype(np.uint8), mode="constant") - 1
    junction = skel & (nb >= 3)
    r = max(1, round(opt.junction_merge / 2))
    crossing_region = ndi.binary_dilation(junction, structure=disk(r)) & skel if junction.any() else junction
    crossings, n_cross = ndi.label(crossing_region, structure=_EIGHT)
    near_head = ndi.grey_dilation(seeds, size=(5, 5))
    # a crossing touching a head (the skeleton forks where the tail region meets the head) belongs to the head:
    # its segments end at the head
    # a head within neck_gap_px (the segmentation often leaves a gap of a few px at the neck)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    reach_head = np.where(dist <= max(opt.neck_gap_px, 2 * np.sqrt(2)), seeds[iy, ix], 0)
    at_head = np.zeros(n_cross + 1, np.int64)
    if n_cross and opt.head_pass_px > 0:
        at_head[1:] = ndi.maximum(near_head if opt.neck_gap_px <= 0 else reach_head, crossings,
                                  index=np.arange(1, n_cross + 1))  # fmt: skip
    seg_mask = skel & ~crossing_region
    segments, n_seg = ndi.label(seg_mask, structure=_EIGHT)
    # segment end pixels: a tail *starts* at a head only with an end there; a tail passing by a head touches it
    # with its middle and must not be taken for that head's tail
    seg_nb = ndi.convolve(seg_mask.astype(np.uint8), _EIGHT.astype(np.uint8), mode="constant") - 1
    ends = seg_mask & (seg_nb <= 1)
    near_crossing = ndi.grey_dilation(crossings, footprint=_EIGHT)
    if opt.neck_gap_px <= 0:
        reach_head = ndi.grey_dilation(seeds, size=(7, 7))
    if n_cross and opt.head_pass_px > 0 and opt.stub_px > 0:
        _absorb_stubs(segments, near_crossing, reach_head, at_head, opt.stub_px)
    attach: dict[int, list[tuple[int, np.ndarray]]] = {}  # crossing -> [(segment, direction into it)]
    seg_nodes: dict[int, list[Any]] = {}  # segment -> nodes it touches (crossings, ("head", h), ("gap", k))
    seg_heads: dict[int, set[int]] = {}
    head_ends: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}  # head -> [(segment, end, direction)]
    free: list[tuple[int, np.ndarray, np.ndarray]] = []  # segment ends touching nothing
    tail_ends: list[tuple[int, np.ndarray, np.ndarray]] = []  # every segment end away from the heads
    lengths = np.zeros(n_seg + 1)
    for s, sl in enumerate(ndi.find_objects(segments), start=1):
        if sl is None:
            continue
        local = segments[sl] == s
        ys, xs = np.nonzero(local)
        pix = np.stack([ys + sl[0].start, xs + sl[1].start], axis=1).astype(np.float64)
        lengths[s] = len(pix)
        touching = near_crossing[sl][local]
        heads = near_head[sl][local & ends[sl]]
        seg_heads[s] = {int(h) for h in np.unique(heads[heads > 0])}
        for node, (end, d) in _segment_ends(pix, touching, opt.direction_px).items():
            if at_head[node]:
                head_ends.setdefault(int(at_head[node]), []).append((s, end, d))
                seg_heads[s].add(int(at_head[node]))
                continue
            attach.setdefault(node, []).append((s, d))
            seg_nodes.setdefault(s, []).append(node)
        ey, ex = np.nonzero(local & ends[sl])
        for y, x in zip(ey + sl[0].start, ex + sl[1].start):
            end = np.array([y, x], np.float64)
            item = (s, end, _end_direction(pix, end, opt.direction_px))
            if reach_head[y, x] > 0:  # skeleton ends stop ~half a tail width short of the head
                head_ends.setdefault(int(reach_head[y, x]), []).append(item)
                continue
            tail_ends.append(item)
            if near_crossing[y, x] == 0 and len(pix) >= 3:
                free.append(item)
    axes = _head_axes(seeds)
    return {
        "segments": segments,
        "crossings": crossings,
        "n_seg": n_seg,
        "attach": attach,
        "seg_nodes": seg_nodes,
        "seg_heads": seg_heads,
        "head_ends": head_ends,
        "free": free,
        "tail_ends": tail_ends,
        "head_axes": axes,
        "neck_side": _neck_sides(neck, dist, seeds[iy, ix], opt.neck_gap_px, axes) if neck is not None else {},
        "lengths": lengths,
    }


def _absorb_stubs(
    segments: np.ndarray, near_crossing: np.ndarray, reach_head: np.ndarray, at_head: np.ndarray, stub_px: float
) -> None:
    """A crossing joined to a head by a stub (a segment shorter than ``stub_px``) belongs to that head.

    The skeleton of the tail region often forks a few px from the head outline (the neck widens into the head),
    so the segment from the head to the fork is a 1-5 px stub whose direction is noise: followed as the head's
    tail it turned into whichever branch came out straightest. With the fork attached to the head, the branches
    themselves are the head's segment ends (the neck rule picks the tail, the others pass through). Repeated
    while it attaches more (a chain of stubs). Updates ``at_head`` (crossing -> head, 0: none) in place.

    Args:
        segments: int (H, W) segment labels.
        near_crossing: int (H, W) crossing id touching each pixel (0: none).
        reach_head: int (H, W) head id within reach of each pixel (0: none).
        at_head: (n_crossings + 1,) head of each crossing.
        stub_px: segments shorter than this (px) are stubs.
    """
    lengths = np.bincount(segments.ravel())
    stub = (lengths < stub_px) & (np.arange(lengths.size) > 0)
    on = stub[segments]
    seg, cross, head = segments[on], near_crossing[on], reach_head[on]
    for _ in range(3):
        heads = np.where(head > 0, head, at_head[cross] * (cross > 0))
        changed = False
        for s in np.unique(seg):
            mine = seg == s
            hs = np.unique(heads[mine][heads[mine] > 0])
            if hs.size != 1:  # no head, or between two heads: not a stub of one head
                continue
            cs = np.unique(cross[mine][cross[mine] > 0])
            free = cs[at_head[cs] == 0]
            if free.size:
                at_head[free] = hs[0]
                changed = True
        if not changed:
            break


def _follow(
    start: int, partners: dict[Any, dict[int, int]], seg_nodes: dict[int, list[Any]], blocked: set[int]
) -> list[int]:
    """Segments visited from ``start`` following the straight-through pairs of every node (never into
    ``blocked`` segments: other heads' own tails)."""
    path = [start]
    seen = {start}
    todo: list[tuple[int, Any]] = [(start, None)]
    while todo:
        seg, came_from = todo.pop()
        for node in seg_nodes.get(seg, []):
            if node == came_from:
                continue
            nxt = partners.get(node, {}).get(seg)
            if nxt is not None and nxt not in seen and nxt not in blocked:
                seen.add(nxt)
                path.append(nxt)
                todo.append((nxt, node))
    return path


def _head_axes(seeds: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """{head: (centroid (2,), unit major axis (2,), half length)} from the second moments of each seed."""
    from scipy import ndimage as ndi

    out: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    for h, sl in enumerate(ndi.find_objects(seeds), start=1):
        if sl is None:
            continue
        ys, xs = np.nonzero(seeds[sl] == h)
        pts = np.stack([ys + sl[0].start, xs + sl[1].start], axis=1).astype(np.float64)
        c = pts.mean(axis=0)
        w, v = np.linalg.eigh(np.cov((pts - c).T) if len(pts) > 2 else np.eye(2))
        out[h] = (c, v[:, 1], 2.0 * float(np.sqrt(max(w[1], 1e-6))))
    return out


def _neck_sides(
    neck: np.ndarray,
    dist: np.ndarray,
    nearest: np.ndarray,
    reach: float,
    axes: dict[int, tuple[np.ndarray, np.ndarray, float]],
) -> dict[int, int]:
    """{head: +1 or -1}: the end of each head's major axis where its midpiece is (a part network's code 4 within
    ``reach`` px of the head, at least 3 px of it); heads without such a midpiece are left out.

    Args:
        neck: (H, W) bool midpiece mask.
        dist: (H, W) distance of each pixel to the nearest head.
        nearest: int (H, W) head nearest each pixel.
        reach: largest distance (px) of a head's midpiece pixels from the head.
        axes: :func:`_head_axes` of ``seeds``.
    """
    near = np.asarray(neck, bool) & (dist <= max(reach, 3.0)) & (nearest > 0)
    out: dict[int, int] = {}
    ys, xs = np.nonzero(near)
    owner = nearest[ys, xs]
    for h in np.unique(owner):
        if int(h) not in axes or np.count_nonzero(owner == h) < 3:
            continue
        c, u, _ = axes[int(h)]
        side = float(np.dot(np.stack([ys[owner == h], xs[owner == h]], 1).mean(axis=0) - c, u))
        if side != 0:
            out[int(h)] = 1 if side > 0 else -1
    return out


def _neck_score(
    end: np.ndarray, direction: np.ndarray, axis: tuple[np.ndarray, np.ndarray, float], side: int = 0
) -> float:
    """How much a segment end looks like the head's own tail: at a tip of the head's major axis (the neck) and
    leaving along that axis (1: exactly; a tail passing by the head's side scores ~0). With ``side`` (+1 / -1:
    the tip along / against the axis where the midpiece is) the other tip scores 0."""
    c, u, half = axis
    along = float(np.dot(end - c, u))
    if side and along * side < 0:
        return 0.0
    tip = min(abs(along) / half, 1.0)
    return tip * abs(float(np.dot(direction, u)))


def _head_nodes(g: dict[str, Any], n_heads: int, opt: Any, partners: dict[Any, dict[int, int]]) -> dict[int, int]:
    """Each head's own tail start and the pass-through pairs at every head (a tail crossing over another
    sperm's head is cut by it).

    The own tail starts on the segment end at the head's neck (:func:`_neck_score`, among segments of at least
    ``direction_px`` px: spurs of the outline are shorter); the other ends are paired straight through the head.
    Fills ``partners`` and ``g["seg_nodes"]`` with the ("head", h) nodes; returns {head: start segment}.
    """
    min_cos = float(np.cos(np.deg2rad(opt.max_turn_deg)))
    start: dict[int, int] = {}
    lengths = g["lengths"]
    for h in range(1, n_heads + 1):
        ends = g["head_ends"].get(h, [])
        if not ends:
            continue
        # spurs of the outline (shorter than direction_px) neither pass through nor start a tail
        ends = [e for e in ends if lengths[e[0]] >= opt.direction_px] or ends
        pairs = _pair_across(ends, min_cos, opt.head_pass_px) if opt.head_pass_px > 0 else {}
        cands = [e for e in ends if e[0] not in pairs] or ends
        axis, side = g["head_axes"][h], g["neck_side"].get(h, 0)
        necks = [e for e in cands if _neck_score(e[1], e[2], axis, side) >= opt.neck_min] or cands
        own = max(necks, key=lambda e: lengths[e[0]])[0]
        start[h] = own
        if own in pairs:  # every end is paired: the chosen one is the head's tail, its partner stays free
            pairs.pop(pairs.pop(own), None)
        if pairs:
            partners[("head", h)] = pairs
            for s in pairs:
                g["seg_nodes"].setdefault(s, []).append(("head", h))
    return start


def _gap_nodes(g: dict[str, Any], opt: Any, partners: dict[Any, dict[int, int]]) -> None:
    """Bridge gaps of the segmentation: free segment ends within ``gap_px`` of another that they continue
    straight become a pair of one ("gap", k) node each."""
    if opt.gap_px <= 0:
        return
    min_cos = float(np.cos(np.deg2rad(opt.max_turn_deg)))
    pairs = _pair_across(g["free"], min_cos, opt.gap_px)
    done: set[int] = set()
    for k, (a, b) in enumerate(sorted(pairs.items())):
        if a in done:
            continue
        done.update((a, b))
        partners[("gap", k)] = {a: b, b: a}
        g["seg_nodes"].setdefault(a, []).append(("gap", k))
        g["seg_nodes"].setdefault(b, []).append(("gap", k))


def _claim(
    g: dict[str, Any], partners: dict[Any, dict[int, int]], owner: np.ndarray, head: int, s0: int, blocked: set[int]
) -> None:
    """Give ``head`` the unowned segments reached from ``s0`` along the pairs (:func:`_follow`), in place."""
    for s in _follow(s0, partners, g["seg_nodes"], blocked):
        # a segment ending at another head (not passing over it) is that head's business
        passed = {n[1] for n in g["seg_nodes"].get(s, []) if isinstance(n, tuple) and n[0] == "head"}
        if owner[s] == 0 and (s == s0 or not (g["seg_heads"][s] - {head} - passed)):
            owner[s] = head


def _adopt_orphans(
    g: dict[str, Any],
    partners: dict[Any, dict[int, int]],
    owner: np.ndarray,
    blocked: set[int],
    shared: set[int],
    opt: Any,
) -> None:
    """A traced tail continues into an orphan segment that carries it on straight across a short gap.

    After the trace, a segment of at least ``orphan_px`` that no head reached, with an end (anywhere) within
    ``adopt_px`` of an end of a traced segment (away from the heads) and continuing it within ``adopt_turn_deg``
    (both directions and the chord, :func:`_continuation`), joins that sperm with whatever it leads to along the
    pairs. Greedy by the smallest turn, repeated while it adds segments. Unlike the gap rule (``gap_px``: free
    ends only, before the trace) it also takes ends at a crossing: the segmentation breaks tails mostly where they
    cross or fade, so the continuation of a broken tail often starts at a crossing, where it was left unpaired.
    The turn is stricter than ``max_turn_deg``: the piece belongs to no traced sperm, but may be the tail of one
    the raters did not label. Updates ``owner`` and ``partners`` in place.
    """
    if opt.adopt_px <= 0 or opt.orphan_px <= 0:
        return
    min_cos = float(np.cos(np.deg2rad(opt.adopt_turn_deg)))
    lengths = g["lengths"]
    for k in range(4):  # an adopted piece can lead to the next one
        tips = [e for e in g["tail_ends"] if owner[e[0]] > 0]
        # the orphan's end may lie at a head: a tail cut by the head it runs over, continued beyond it
        ends = g["tail_ends"] + [e for at_head in g["head_ends"].values() for e in at_head]
        loose = [e for e in ends if owner[e[0]] == 0 and lengths[e[0]] >= opt.orphan_px and e[0] not in shared]
        if not tips or not loose:
            return
        pairs = _pair_between(tips, loose, min_cos, opt.adopt_px)
        if not pairs:
            return
        for j, (tip, piece) in enumerate(pairs):
            if owner[piece]:  # taken by an earlier adoption of this round (through the pairs)
                continue
            node = ("adopt", k, j)
            partners[node] = {tip: piece, piece: tip}
            g["seg_nodes"].setdefault(tip, []).append(node)
            g["seg_nodes"].setdefault(piece, []).append(node)
            _claim(g, partners, owner, int(owner[tip]), piece, blocked)


def _pair_between(
    tips: list[tuple[int, np.ndarray, np.ndarray]],
    loose: list[tuple[int, np.ndarray, np.ndarray]],
    min_cos: float,
    max_gap: float,
) -> list[tuple[int, int]]:
    """(tip segment, loose segment) pairs whose ends continue each other (:func:`_continuation`, one end from each
    list), greedy by the smallest turn down to ``min_cos`` (:func:`_greedy_pairs`), each segment at most once."""
    a = np.array([e[1] for e in tips])
    b = np.array([e[1] for e in loose])
    near = np.hypot(*(a[:, None, :] - b[None, :, :]).transpose(2, 0, 1)) <= max_gap  # only these are scored
    cands = []
    for i, j in zip(*np.nonzero(near)):
        turn = _continuation(tips[i], loose[j], max_gap)
        if turn is not None:
            cands.append((turn, tips[i][0], loose[j][0]))
    partner = _greedy_pairs(cands, min_cos)
    tip_ids = {e[0] for e in tips}
    return sorted((t, p) for t, p in partner.items() if t in tip_ids)


def trace_tails(
    full: np.ndarray, seeds: np.ndarray, opt: Any, neck: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Label sperm by tracing each head's tail along the skeleton graph.

    Args:
        full: (H, W) bool foreground.
        seeds: (H, W) int head labels 1..K (0 elsewhere).
        opt: :class:`spermseg.inference.instances.InstanceOptions`.
        neck: (H, W) bool midpiece mask (a part network's code 4) or None: a head's own tail then leaves from the
            tip of its major axis where its midpiece is (:func:`_neck_sides`).

    Returns:
        ``(labels, orphans)``: int32 (H, W) labels 1..K of the heads' sperm (foreground of components that hold no
        head stays 0), and the (H, W) bool pixels of the orphan segments (``opt.orphan_px``: at least that long,
        reached by no head's trace, in a component with a head), which are nobody's (0 in ``labels``).
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    g = _graph(full, seeds, opt, neck)
    min_cos = float(np.cos(np.deg2rad(opt.max_turn_deg)))
    partners: dict[Any, dict[int, int]] = {node: _pair_crossing(ends, min_cos) for node, ends in g["attach"].items()}
    n_heads = int(seeds.max())
    start = _head_nodes(g, n_heads, opt, partners)
    _gap_nodes(g, opt, partners)
    # a segment that two heads start on runs from one head to the other (two tails meeting end to end without a
    # fork): neither takes it whole, the watershed below splits it between them
    shared = {s for s, n in Counter(start.values()).items() if n > 1} if opt.split_shared else set()
    owner = np.zeros(g["n_seg"] + 1, np.int32)
    blocked = set(start.values())
    for h, s0 in start.items():
        if not owner[s0] and s0 not in shared:
            _claim(g, partners, owner, h, s0, blocked - {s0})
    _adopt_orphans(g, partners, owner, blocked, shared, opt)
    # segments that no head reached: spurs (shorter than orphan_px) join the geodesically nearest sperm of their
    # component; longer ones (an unlabelled sperm's tail, a piece behind a failed continuation) are nobody's: given
    # to the nearest sperm they made it "too long". They get marker ids above the heads' so that the watershed
    # still splits the pixels between them and the sperm. Components no sperm reaches are left to the caller.
    orphan = (owner == 0) & (g["lengths"] >= opt.orphan_px) if opt.orphan_px > 0 else np.zeros(owner.size, bool)
    orphan[0] = False
    orphan[list(shared)] = False  # a segment between two heads is split between them
    if orphan.any():
        # components that a sperm reaches (its head, or a traced or adopted segment); the others are the caller's
        comps, _ = ndi.label(full, structure=_EIGHT)
        headed = np.zeros(int(comps.max()) + 1, bool)
        headed[np.unique(comps[(seeds > 0) | (owner[g["segments"]] > 0)])] = True
        headed[0] = False
        seg_comp = np.zeros(owner.size, np.int64)
        seg_comp[g["segments"][g["segments"] > 0]] = comps[g["segments"] > 0]
        orphan &= headed[seg_comp]
        owner[orphan] = n_heads + 1  # one id for all: only "nobody's" matters
    markers = np.where(seeds > 0, seeds, owner[g["segments"]]).astype(np.int32)
    labels = watershed(np.zeros(full.shape, np.uint8), markers, mask=full, connectivity=2).astype(np.int32)
    orphans = labels == n_heads + 1 if orphan.any() else np.zeros(full.shape, bool)
    labels[orphans] = 0
    return labels, orphans
