"""The whole-sperm filter: predicted pieces that cannot hold a head leave the mask, whole sperm stay untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import make_lines_dataset, tiny_overrides

from spermseg.data.labels import inscribed_radii, whole_sperm_scale
from spermseg.engine.postprocess import DEMOTE, suppress_headless, with_whole_sperm


def _sperm_and_loose_tail() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A soft map (64, 96) with a sperm (disk of radius 7 + a 2-px tail) and a detached 2-px tail; their masks."""
    import cv2

    sperm = np.zeros((64, 96), np.uint8)
    cv2.circle(sperm, (20, 32), 7, 1, -1)
    cv2.line(sperm, (27, 32), (60, 20), 1, 2)
    loose = np.zeros_like(sperm)
    cv2.line(loose, (50, 55), (90, 45), 1, 2)
    prob = np.full(sperm.shape, 0.02, np.float32)
    prob[sperm > 0] = 0.9
    prob[loose > 0] = np.linspace(0.6, 1.0, int(loose.sum()), dtype=np.float32)  # distinct values: order matters
    return prob, sperm > 0, loose > 0


def test_a_detached_tail_is_demoted_below_the_threshold_and_keeps_its_order() -> None:
    prob, sperm, loose = _sperm_and_loose_tail()
    out = suppress_headless(prob, 0.5, 4.0)
    assert np.array_equal(out[sperm], prob[sperm])  # the sperm, tail included, is untouched
    assert np.array_equal(out[~sperm & ~loose], prob[~sperm & ~loose])
    assert (out[loose] < 0.5).all() and out[loose].max() <= DEMOTE * 0.5 + 1e-7  # out of the binary mask
    np.testing.assert_allclose(out[loose], prob[loose] * DEMOTE * 0.5, rtol=1e-6)  # same order, above zero
    assert np.array_equal((out >= 0.5), sperm)


def test_radius_zero_an_empty_map_and_part_outputs_pass_unchanged() -> None:
    prob, _, _ = _sperm_and_loose_tail()
    assert np.array_equal(suppress_headless(prob, 0.5, 0.0), prob)
    empty = np.zeros((16, 16), np.float32)
    assert np.array_equal(suppress_headless(empty, 0.5, 3.0), empty)
    parts = np.random.default_rng(0).random((2, 6, 8, 8)).astype(np.float32)
    assert with_whole_sperm(lambda b: b, 0.5, 3.0)(parts) is parts
    assert with_whole_sperm(lambda b: b, 0.5, None)(prob[None]) is not None


def test_a_radius_above_every_piece_demotes_the_whole_sperm_too() -> None:
    prob, sperm, _ = _sperm_and_loose_tail()
    assert not (suppress_headless(prob, 0.5, 8.5) >= 0.5).any()  # the head's inscribed radius is ~7-8 px


def test_inscribed_radii_of_hand_made_shapes() -> None:
    m = np.zeros((40, 40), bool)
    m[5:26, 5:26] = True  # a 21x21 square: the centre is 11 px from the outside (distance to the nearest zero)
    m[30:33, 2:38] = True  # a 3-px bar: 2 px
    r = sorted(inscribed_radii(m).tolist())
    assert r == pytest.approx([2.0, 11.0], abs=0.05)
    assert inscribed_radii(np.zeros((5, 5), bool)).size == 0


def test_whole_sperm_scale_separates_thick_heads_from_thin_tails_or_says_it_cannot() -> None:
    head = np.zeros((40, 40), bool)
    head[5:26, 5:26] = True
    tail = np.zeros((40, 40), bool)
    tail[30:33, 2:38] = True
    s = whole_sperm_scale([head], [tail])
    assert s["head_radius_p5"] == pytest.approx(11.0, abs=0.05) and s["tail_radius_p95"] == pytest.approx(2.0)
    assert s["min_head_radius"] == pytest.approx(6.5, abs=0.05)  # midway
    fat_tail = np.zeros((40, 40), bool)
    fat_tail[27:40, 2:38] = True  # as thick as the head: no radius tells them apart
    assert whole_sperm_scale([head], [fat_tail])["min_head_radius"] is None
    assert whole_sperm_scale([np.zeros((8, 8), bool)], [tail])["min_head_radius"] is None


def _with_parts(root: Path) -> Path:
    """Add GT1_head / GT1_tail to a lines dataset: the first 3 px of every line are 'head' (thin: no separation)."""
    from PIL import Image

    for split_dir in root.iterdir():
        full_dir = split_dir / "GT1_full"
        (split_dir / "GT1_head").mkdir()
        (split_dir / "GT1_tail").mkdir()
        for f in sorted(full_dir.iterdir()):
            full = np.array(Image.open(f)) > 0
            head = np.zeros_like(full)
            head[:, :8] = full[:, :8]
            Image.fromarray((head * 255).astype(np.uint8)).save(split_dir / "GT1_head" / f.name)
            Image.fromarray(((full & ~head) * 255).astype(np.uint8)).save(split_dir / "GT1_tail" / f.name)
    return root


def test_training_records_the_scale_and_predict_applies_or_skips_the_filter(tmp_path: Path) -> None:
    from spermseg.cli import main
    from spermseg.data.io import read_soft_mask

    data = _with_parts(make_lines_dataset(tmp_path / "data", splits=("train", "test"), n_groups=3, per_group=2))
    run = tmp_path / "run"
    sets = [x for kv in tiny_overrides(epochs=1) for x in ("--set", kv)]
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "demo", *sets]) == 0
    scale = json.loads((run / "best.json").read_text())["whole_sperm"]
    assert set(scale) == {"head_radius_p5", "head_radius_median", "tail_radius_p95", "min_head_radius"}
    assert scale["min_head_radius"] is None  # lines only: heads are not thicker than tails, so no filter
    images = str(data / "test" / "images")

    def predict(radius: str, threshold: float) -> np.ndarray:
        out = tmp_path / f"pred_{radius}"
        argv = ["predict", "--model", str(run), images, "--out", str(out), "--no-overlay", "--soft-format", "npy"]
        assert main([*argv, "--threshold", str(threshold), "--min-head-radius", radius]) == 0
        return np.stack([read_soft_mask(p) for p in sorted(out.glob("*_prob.npy"))])

    kept = predict("0", 0.5)
    # at least half of every image below it: the pieces are islands, none of them 1000 px thick
    threshold = float(np.median(kept.reshape(len(kept), -1), axis=1).max())
    demoted = predict("1000", threshold)
    assert (kept >= threshold).any() and not (demoted >= threshold).any()
    assert np.array_equal(demoted[kept < threshold], kept[kept < threshold])  # the rest is untouched
    bad = ["predict", "--model", str(run), images, "--out", str(tmp_path / "bad"), "--min-head-radius", "-1"]
    assert main(bad) == 2
