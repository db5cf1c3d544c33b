"""Everything the measures need from a reference, computed once per image (and cacheable across evaluations).

Scoring a soft mask needs, per part: the scoring region (head/tail rule), the reference pixels, the reference
skeleton ``t(Mr)`` and the dilated reference ``d(Mr, k)`` per kernel. None of these depends on the prediction,
and the thinning and the distance transforms are the most expensive steps of an evaluation, so they are computed
here once and kept as compact flat pixel indices (regions as packed bits). :class:`ReferenceCache` reuses them
when the same references are scored again (several models, blur levels, seeds on one test set).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from spermseg.metrics.overlap import check_kernel, dilate, skeleton
from spermseg.metrics.parts import part_regions

__all__ = ["PartPrep", "ReferenceCache", "ReferencePrep", "prepare_reference"]


@dataclass
class PartPrep:
    """Reference-derived data of one part of one image (flat indices into the (H, W) image).

    Attributes:
        shape: (H, W).
        pos_idx: reference pixels Mr.
        skel_idx: skeleton pixels t(Mr).
        dref_idx: {k: pixels of d(Mr, k)}.
        region_bits: packed bits of the scoring region, or None for the whole image.
    """

    shape: tuple[int, int]
    pos_idx: np.ndarray
    skel_idx: np.ndarray
    dref_idx: dict[int, np.ndarray]
    region_bits: np.ndarray | None = None
    _region: np.ndarray | None = field(default=None, repr=False)

    def region(self) -> np.ndarray | None:
        """The scoring region as bool (H, W), or None for the whole image."""
        if self.region_bits is None:
            return None
        n = self.shape[0] * self.shape[1]
        return np.unpackbits(self.region_bits, count=n).view(bool).reshape(self.shape)

    def ref(self) -> np.ndarray:
        """The reference mask as bool (H, W)."""
        out = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
        out[self.pos_idx] = True
        return out.reshape(self.shape)

    def nbytes(self) -> int:
        arrays = [self.pos_idx, self.skel_idx, *self.dref_idx.values()]
        if self.region_bits is not None:
            arrays.append(self.region_bits)
        return int(sum(a.nbytes for a in arrays))


@dataclass
class ReferencePrep:
    """Reference-derived data of one image: ``parts`` maps "full" (and "head", "tail") to :class:`PartPrep`."""

    shape: tuple[int, int]
    kernels: tuple[int, ...]
    parts: dict[str, PartPrep]

    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self.parts.values())


def _flat(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask.ravel()).astype(np.int64)


def _prep_part(ref: np.ndarray, kernels: tuple[int, ...], region: np.ndarray | None) -> PartPrep:
    return PartPrep(
        shape=(int(ref.shape[0]), int(ref.shape[1])),
        pos_idx=_flat(ref),
        skel_idx=_flat(skeleton(ref)) if kernels else np.zeros(0, np.int64),
        dref_idx={k: _flat(dilate(ref, k)) for k in kernels},
        region_bits=None if region is None else np.packbits(region.ravel()),
    )


def prepare_reference(
    full: np.ndarray, head: np.ndarray | None = None, tail: np.ndarray | None = None, kernels: tuple[int, ...] = ()
) -> ReferencePrep:
    """Compute regions, reference pixels, skeletons and dilated references of one image.

    Args:
        full: bool (H, W) full-sperm reference.
        head, tail: bool (H, W) part references, or None (then only "full" is prepared).
        kernels: odd IoU' kernel sizes (skeletons and dilations are skipped when empty).

    Returns:
        :class:`ReferencePrep`.
    """
    kernels = tuple(check_kernel(k) for k in kernels)
    full = np.asarray(full, dtype=bool)
    parts = {"full": _prep_part(full, kernels, None)}
    if head is not None and tail is not None:
        head = np.asarray(head, dtype=bool)
        tail = np.asarray(tail, dtype=bool)
        head_region, tail_region = part_regions(head, tail)
        parts["head"] = _prep_part(head, kernels, head_region)
        parts["tail"] = _prep_part(tail, kernels, tail_region)
    return ReferencePrep((int(full.shape[0]), int(full.shape[1])), kernels, parts)


class ReferenceCache:
    """LRU cache of :class:`ReferencePrep` keyed by the content of the reference masks and the kernels.

    Args:
        max_bytes: memory bound of the cached data (the least recently used entries are dropped).
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[bytes, ReferencePrep] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the process-wide cache may be shared by threads
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(full: np.ndarray, head: np.ndarray | None, tail: np.ndarray | None, kernels: tuple[int, ...]) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((np.shape(full), kernels, head is None, tail is None)).encode())
        for m in (full, head, tail):
            if m is not None:
                h.update(np.packbits(np.asarray(m, dtype=bool).ravel()).tobytes())
        return h.digest()

    def get(
        self, full: np.ndarray, head: np.ndarray | None, tail: np.ndarray | None, kernels: tuple[int, ...]
    ) -> ReferencePrep:
        """The prepared reference, computed on a miss."""
        key = self.key(full, head, tail, kernels)
        with self._lock:
            prep = self._items.get(key)
            if prep is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return prep
            self.misses += 1
        prep = prepare_reference(full, head, tail, kernels)  # outside the lock: the expensive part
        with self._lock:
            if key not in self._items:
                self._items[key] = prep
                self._bytes += prep.nbytes()
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes()
        return prep

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
