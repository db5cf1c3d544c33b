"""predict's label outputs: NAME_instances / NAME_parts (PNG, TIFF), ImageJ ROI zips, part networks end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from spermseg.cli import main
from spermseg.data.labels import read_labels
from spermseg.inference.label_outputs import split_parts_prob, write_label_outputs
from spermseg.models import create_model
from spermseg.models.checkpoints import save_checkpoint


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Two separate drawn sperm as (full mask, part codes)."""
    parts = np.zeros((60, 120), np.uint8)
    for r in (15, 45):
        cv2.line(parts, (30, r), (115, r), 5, 4)
        cv2.ellipse(parts, (18, r), (12, 8), 0, 0, 360, 2, -1)
    return parts > 0, parts


def test_label_images_and_roi_zip(tmp_path: Path) -> None:
    """16-bit instances and 8-bit parts open as label images; the ROI zip has one named polygon per sperm."""
    roifile = pytest.importorskip("roifile")
    mask, parts = _scene()
    out = write_label_outputs(tmp_path / "a", mask, parts, instances=True, roi=True)
    assert Image.open(tmp_path / "a_instances.png").mode.startswith("I;16")
    assert Image.open(tmp_path / "a_parts.png").mode == "L"
    labels = read_labels(out.instances_path)
    assert np.array_equal(labels, out.labels) and sorted(np.unique(labels)) == [0, 1, 2]
    rois = roifile.roiread(tmp_path / "a_rois.zip")
    assert sorted(r.name for r in rois) == ["sperm_1", "sperm_2"]
    for roi in rois:  # each polygon encloses its sperm's head centre
        i = int(roi.name.split("_")[1])
        poly = roi.coordinates().astype(np.int32)
        ys, xs = np.nonzero(labels == i)
        assert cv2.pointPolygonTest(poly, (float(xs.mean()), float(ys.mean())), False) >= 0
    tif = write_label_outputs(tmp_path / "b", mask, None, instances=True, roi=False, label_format="tif")
    assert tifffile.imread(tif.instances_path).dtype == np.uint16 and tif.parts_path is None
    assert write_label_outputs(tmp_path / "c", mask, None, instances=False, roi=False).labels is None


def test_split_parts_prob_argmax_and_foreground() -> None:
    logits = np.random.default_rng(0).normal(size=(6, 4, 5))
    codes, fg = split_parts_prob(1 / (1 + np.exp(-logits)))
    soft = np.exp(logits) / np.exp(logits).sum(0)
    assert np.array_equal(codes, logits.argmax(0)) and np.allclose(fg, 1 - soft[0], atol=1e-5)


def test_split_parts_prob_with_a_foreground_threshold_keeps_a_split_tail_pixel() -> None:
    """A pixel whose mass is split between tail and midpiece loses the arg-max to the background although it is
    more likely sperm than not: with a foreground threshold it is sperm, and takes its most likely part."""
    soft = np.array([0.4, 0.0, 0.0, 0.0, 0.25, 0.35])[:, None, None] * np.ones((6, 1, 2))
    soft[:, 0, 1] = [0.7, 0.0, 0.0, 0.0, 0.1, 0.2]  # a background pixel
    soft = np.clip(soft, 1e-6, 1)
    prob = 1 / (1 + 1 / soft)  # sigmoids whose logits are log(soft): their softmax is soft again
    codes, fg = split_parts_prob(prob)
    assert codes.tolist() == [[0, 0]] and np.allclose(fg, [[0.6, 0.3]], atol=1e-4)
    codes, _ = split_parts_prob(prob, fg_threshold=0.5)
    assert codes.tolist() == [[5, 0]]
    codes, _ = split_parts_prob(prob, fg_threshold=0.25)
    assert codes.tolist() == [[5, 5]]


def test_predict_part_network_instances_roi_tif(tmp_path: Path) -> None:
    """A (tiny, untrained) six-class network: predict writes parts, instances, ROIs; sperm.csv ids match labels."""
    torch.manual_seed(0)
    with torch.no_grad():
        model = create_model("unet", width=4, out_channels=6)
    save_checkpoint(tmp_path / "run" / "best", model, {"normalization": "minmax", "threshold": 0.5})
    (tmp_path / "in").mkdir()
    mask, parts = _scene()
    cv2.imwrite(str(tmp_path / "in" / "f.png"), np.where(mask, 200, 90).astype(np.uint8))
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--model", str(tmp_path / "run"), "--out", str(out), "--no-overlay"]
    assert main([*args, "--roi", "--label-format", "tif", "--tta"]) == 0
    codes = read_labels(out / "f_parts.tif", "parts")
    labels = read_labels(out / "f_instances.tif")
    assert codes.shape == (60, 120) and (out / "f_rois.zip").is_file()
    rows = list(csv.DictReader((out / "sperm.csv").open()))
    assert sorted(int(r["sperm_id"]) for r in rows) == sorted(int(i) for i in np.unique(labels) if i)
    assert ((labels > 0) <= (codes > 0)).all()  # sperm only where a part code is predicted
