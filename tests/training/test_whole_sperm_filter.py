"""Training records the head/tail thickness of its labels; predict's whole-sperm filter uses it or is overridden."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from train_helpers import make_lines_dataset, tiny_overrides


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
