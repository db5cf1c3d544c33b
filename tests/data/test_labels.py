"""Label images (instances, parts): reading/writing, layouts, loading, and `data check` consistency rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from spermseg.data.arrays import load_split
from spermseg.data.labels import parts_to_masks, read_labels, write_labels
from spermseg.data.layouts import open_dataset, validate_split
from spermseg.errors import DataError

H, W = 12, 20


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Two sperm: instance ids (H, W) uint16 and part codes (H, W) uint8 (heads 2 = nucleus, tails 5)."""
    inst = np.zeros((H, W), np.uint16)
    parts = np.zeros((H, W), np.uint8)
    inst[2:4, 1:15] = 1
    parts[2:4, 1:4] = 2
    parts[2:4, 4:15] = 5
    inst[8:10, 3:19] = 7  # ids need not be consecutive
    parts[8:10, 3:6] = 1
    parts[8:10, 6:8] = 4
    parts[8:10, 8:19] = 5
    return inst, parts


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8) * 255 if arr.dtype == np.bool_ else arr).save(path)


def _segsperm(root: Path, raters: int = 2) -> Path:
    inst, parts = _scene()
    masks = parts_to_masks(parts)
    for name in ("a.png", "b.png"):
        _save(root / "test" / "images" / name, np.full((H, W), 100, np.uint8))
        for r in range(1, raters + 1):
            for part, m in masks.items():
                _save(root / "test" / f"GT{r}_{part}" / name, m)
            write_labels(root / "test" / f"GT{r}_instances" / name, inst)
            write_labels(root / "test" / f"GT{r}_parts" / name, parts, "parts")
    return root


def test_write_read_roundtrip_png_and_tif(tmp_path: Path) -> None:
    """Instances are 16-bit and parts 8-bit on disk, in PNG and TIFF, and read back unchanged."""
    inst, parts = _scene()
    inst[0, 0] = 65535
    for suffix in (".png", ".tif"):
        write_labels(tmp_path / f"i{suffix}", inst)
        write_labels(tmp_path / f"p{suffix}", parts, "parts")
        assert np.array_equal(read_labels(tmp_path / f"i{suffix}"), inst)
        assert read_labels(tmp_path / f"p{suffix}", "parts").dtype == np.uint8
        assert np.array_equal(read_labels(tmp_path / f"p{suffix}", "parts"), parts)
    assert Image.open(tmp_path / "i.png").mode.startswith("I;16")  # Fiji/napari: a 16-bit gray label image
    assert Image.open(tmp_path / "p.png").mode == "L"
    assert tifffile.imread(tmp_path / "i.tif").dtype == np.uint16


def test_read_labels_rejects_unknown_part_codes_and_colour(tmp_path: Path) -> None:
    """Parts with a code > 5 or a colour label image are a one-line DataError naming the file."""
    _save(tmp_path / "p.png", np.full((4, 4), 9, np.uint8))
    with pytest.raises(DataError, match=r"p\.png has unknown codes \[9\]"):
        read_labels(tmp_path / "p.png", "parts")
    _save(tmp_path / "c.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="gray 8/16-bit"):
        read_labels(tmp_path / "c.png")


def test_segsperm_label_folders_listed_and_loaded(tmp_path: Path) -> None:
    """GT{r}_instances / GT{r}_parts are label folders (no 'ignored folder' warning) and load as stored."""
    root = _segsperm(tmp_path)
    ds = open_dataset(root)
    assert not ds.problems, [str(p) for p in ds.problems]
    sp = ds.split("test")
    assert sp.labels("GT2") == ["instances", "parts"]
    assert sp.samples[0].label_paths["GT1"]["parts"].parent.name == "GT1_parts"
    arrays = load_split(ds, "test", labels=("instances", "parts"))
    inst, parts = _scene()
    assert np.array_equal(arrays.labels("GT1", "instances")[1], inst)
    assert np.array_equal(arrays.labels("GT2", "parts")[0], parts)
    lazy = load_split(ds, "test", labels=("parts",), lazy=True)
    assert np.array_equal(lazy.labels("GT1", "parts")[0], parts) and lazy.labels("GT1", "instances") is None
    assert load_split(ds, "test").labels("GT1", "parts") is None  # not requested: not read
    assert load_split(ds, "test").fingerprint != arrays.fingerprint
    assert validate_split(sp).problems == []


def test_missing_label_file_is_an_error(tmp_path: Path) -> None:
    root = _segsperm(tmp_path)
    (root / "test" / "GT2_instances" / "b.png").unlink()
    errors = [str(p) for p in open_dataset(root).errors()]
    assert len(errors) == 1 and "GT2_instances" in errors[0] and "b.png" in errors[0]


def test_validate_reports_inconsistent_labels(tmp_path: Path) -> None:
    """data check: union != full, head codes outside the head, a wrong size and a bad code are each one error."""
    root = _segsperm(tmp_path)
    inst, parts = _scene()
    bad_inst = inst.copy()
    bad_inst[0, 0] = 3  # a labelled pixel outside the full mask
    write_labels(root / "test" / "GT1_instances" / "a.png", bad_inst)
    bad_parts = parts.copy()
    bad_parts[2, 10] = 1  # acrosome code inside the tail
    write_labels(root / "test" / "GT2_parts" / "a.png", bad_parts, "parts")
    write_labels(root / "test" / "GT2_instances" / "b.png", np.zeros((H + 1, W), np.uint16))
    _save(root / "test" / "GT1_parts" / "b.png", np.full((H, W), 7, np.uint8))
    problems = [str(p) for p in validate_split(open_dataset(root).split("test")).problems]
    assert len(problems) == 4, problems
    assert any("GT1_instances/a.png" in p and "differs from the full mask in 1 pixels" in p for p in problems)
    assert any("GT2_parts/a.png" in p and "outside the head mask" in p for p in problems)
    assert any("size mismatch" in p and "GT2_instances/b.png" in p for p in problems)
    assert any("unknown codes [7]" in p for p in problems)


def test_folders_layout_label_folders(tmp_path: Path) -> None:
    """ROOT/instances/ belongs to GT1; ROOT/parts/<rater>/ to that rater."""
    inst, parts = _scene()
    _save(tmp_path / "images" / "x.png", np.zeros((H, W), np.uint8))
    _save(tmp_path / "masks" / "x.png", inst > 0)
    write_labels(tmp_path / "instances" / "x.png", inst)
    write_labels(tmp_path / "parts" / "R2" / "x.png", parts, "parts")
    sp = open_dataset(tmp_path).split("all")
    assert sp.raters == ["GT1", "R2"]
    assert sp.labels("GT1") == ["instances"] and sp.labels("R2") == ["parts"]
    arrays = load_split(tmp_path, "all", labels=("instances", "parts"))
    assert np.array_equal(arrays.labels("GT1")[0], inst)
    assert arrays.masks("R2", "full") is None  # parts never fake masks


def test_labeled_max_matches_scipy_and_handles_absent_labels() -> None:
    # The whole-sperm filter's per-piece radius: must equal scipy's labelled maximum (the slow reference it replaces),
    # give 0 to the background and to labels with no pixel, and accept a mask with no piece at all.
    from scipy import ndimage as ndi

    from spermseg.data.labels import labeled_max

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (40, 50))
    labels[labels == 4] = 0  # label 4 absent
    values = rng.random((40, 50)).astype(np.float32)
    out = labeled_max(values, labels, 7)  # label 6 absent too
    ref = np.asarray(ndi.maximum(values, labels, index=np.arange(7)), np.float32)
    ref[0] = 0.0
    ref[[4, 6]] = 0.0
    np.testing.assert_array_equal(out, ref)
    assert out.dtype == np.float32 and out.shape == (7,)
    np.testing.assert_array_equal(labeled_max(values, np.zeros((40, 50), int), 1), [0.0])
