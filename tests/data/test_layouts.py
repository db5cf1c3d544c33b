"""Dataset layouts, grouping, validation of malformed datasets, and loading into memory (eager and lazy)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from spermseg.data.arrays import load_split
from spermseg.data.layouts import open_dataset, parse_group, validate_split
from spermseg.errors import DataError

H, W = 12, 20  # tiny and non-square


def _img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)


def _mask(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).random((H, W)) > 0.7


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8) * 255 if arr.dtype == np.bool_ else arr).save(path)


def make_segsperm(
    root: Path,
    names: dict[str, list[str]] | None = None,
    raters: dict[str, int] | None = None,
    parts: tuple[str, ...] = ("full", "head", "tail"),
) -> Path:
    """A tiny valid SegSperm dataset; head and tail are disjoint and full = head | tail."""
    names = names or {"train": ["3_0001_1.png", "3_0002_1.png", "4_0001_1.png"], "test": ["a.png", "b.png"]}
    raters = raters or {"train": 1, "test": 2}
    for split, files in names.items():
        for i, name in enumerate(files):
            seed = hash((split, i)) % 1000
            _save(root / split / "images" / name, _img(seed))
            full = _mask(seed)
            head = full & (np.arange(W)[None, :] < W // 2)
            tail = full & ~head
            for r in range(1, raters[split] + 1):
                for part, m in (("full", full), ("head", head), ("tail", tail)):
                    if part in parts:
                        _save(root / split / f"GT{r}_{part}" / name, m)
    return root


def _messages(ds_or_problems: object) -> str:
    problems = ds_or_problems.problems if hasattr(ds_or_problems, "problems") else ds_or_problems
    return "\n".join(str(p) for p in problems)


# ------------------------------------------------------------------ SegSperm layout


def test_segsperm_valid(tmp_path: Path) -> None:
    ds = open_dataset(make_segsperm(tmp_path))
    assert ds.layout == "segsperm" and list(ds.splits) == ["train", "test"]
    assert ds.problems == []
    train, test = ds.split("train"), ds.split("test")
    assert len(train) == 3 and len(test) == 2
    assert train.raters == ["GT1"] and test.raters == ["GT1", "GT2"]
    assert test.parts("GT2") == ["full", "head", "tail"]
    s = train.samples[0]
    assert s.name == "3_0001_1.png" and s.stem == "3_0001_1"
    assert s.mask_paths["GT1"]["head"] == tmp_path / "train" / "GT1_head" / "3_0001_1.png"
    assert [x.group for x in train.samples] == ["3", "3", "4"]
    assert train.groups == ["3", "4"] and test.groups == ["a", "b"]
    for name in ("train", "test"):
        rep = validate_split(ds.split(name))
        assert rep.problems == [] and dict(rep.sizes) == {(W, H): len(ds.split(name))}
    with pytest.raises(DataError, match="no split 'val'; splits: train, test"):
        ds.split("val")


def test_parse_group() -> None:
    assert parse_group("12_0034_1") == "12"
    assert parse_group("clip_a_0007_3") == "clip_a"
    assert parse_group("Image__2023-05-05__21-11-44") == "Image__2023-05-05__21-11-44"
    assert parse_group("12_0034") == "12_0034"


def test_groups_csv_overrides(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path)
    (root / "groups.csv").write_text("name,group\n3_0001_1.png,v1\na,v1\nghost.png,v9\n")
    ds = open_dataset(root)
    assert [s.group for s in ds.split("train").samples] == ["v1", "3", "4"]
    assert [s.group for s in ds.split("test").samples] == ["v1", "b"]
    assert "lists 1 unknown names (ghost)" in _messages(ds) and not ds.errors()
    other = tmp_path / "other.csv"
    other.write_text("3_0002_1,x\n")
    assert open_dataset(root, groups_csv=other).split("train").samples[1].group == "x"
    other.write_text("onlyname\n")
    with pytest.raises(DataError, match=r"other\.csv line 1"):
        open_dataset(root, groups_csv=other)


def test_missing_extra_masks_and_empty_split_all_reported(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path)
    (root / "train" / "GT1_tail" / "3_0002_1.png").unlink()  # missing
    _save(root / "test" / "GT2_head" / "zzz.png", _mask(1))  # extra
    (root / "test_small" / "images").mkdir(parents=True)  # empty split
    (root / "val").mkdir()  # split folder without images/
    (root / "train" / "notes").mkdir()  # ignored folder: warning
    (root / "train" / "images" / "readme.txt").write_text("x")  # ignored file: warning
    ds = open_dataset(root)
    text = _messages(ds)
    errors = [str(p) for p in ds.errors()]
    assert len(errors) == 4, text
    assert any("missing mask" in e and "GT1_tail" in e and "3_0002_1.png" in e for e in errors)
    assert any("extra mask" in e and "zzz.png" in e for e in errors)
    assert any("empty split" in e and "test_small" in e for e in errors)
    assert any("has no images/ folder" in e and "val" in e for e in errors)
    assert "ignored folder" in text and "readme.txt" in text
    assert all("\n" not in str(p) for p in ds.problems)  # one line each
    # loading a split raises on its own first error and points to the full report
    with pytest.raises(DataError, match=r"missing mask.*3_0002_1.*spermseg data check"):
        load_split(ds, "train")
    with pytest.raises(DataError, match=r"extra mask.*zzz\.png"):
        load_split(ds, "test")
    with pytest.raises(DataError, match="empty split"):
        load_split(ds, "test_small")
    _save(root / "train" / "GT1_tail" / "3_0002_1.png", _mask(0))
    _save(root / "train" / "GT1_head" / "9_0001_1.png", _mask(0))  # two new train errors
    _save(root / "train" / "GT1_full" / "9_0001_1.png", _mask(0))
    with pytest.raises(DataError, match=r"\(and 1 more problems\)"):
        load_split(root, "train")


def test_ambiguous_stems(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path)
    _save(root / "train" / "images" / "3_0001_1.bmp", _img(0))
    assert any("ambiguous image" in str(p) for p in open_dataset(root).errors())


def test_pixel_level_problems_all_reported(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path, names={"train": ["a.png", "b.png", "c.png", "d.png", "e.png"]}, raters={"train": 1})
    tr = root / "train"
    data = (tr / "images" / "a.png").read_bytes()
    (tr / "images" / "a.png").write_bytes(data[: len(data) // 2])  # truncated image
    (tr / "GT1_head" / "b.png").write_bytes(b"\x89PNG not really")  # unreadable mask
    _save(tr / "GT1_full" / "c.png", np.zeros((H + 1, W), np.uint8))  # size mismatch
    soft = np.where(_mask(3), 200, 0).astype(np.uint8)
    soft[0, 0] = 17
    _save(tr / "GT1_tail" / "d.png", soft)  # non-binary mask
    (tr / "images" / "e.png").unlink()
    tifffile.imwrite(tr / "images" / "e.tif", np.full((H, W), np.nan, np.float32))  # NaN float image
    ds = open_dataset(root)
    assert ds.errors() == []  # structure is fine: masks match by stem (e.tif <-> e.png)
    rep = validate_split(ds.split("train"))
    msgs = [str(p) for p in rep.problems]
    assert len(msgs) == 5, msgs
    expect = [
        ("a.png", "truncated or corrupt"),
        ("b.png", "not a recognised image"),
        ("c.png", "size mismatch"),
        ("d.png", "not binary (found 17, 200"),
        ("e.tif", "NaN/Inf"),
    ]
    for name, what in expect:
        assert any(name in m and what in m for m in msgs), (name, what, msgs)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_split(ds, "train")
    # a threshold accepts the non-binary mask; the other four problems remain
    rep2 = validate_split(ds.split("train"), binarize_threshold=0.5)
    assert len(rep2.problems) == 4 and not any("d.png" in str(p) for p in rep2.problems)


# ------------------------------------------------------------------ loading


def test_load_split_eager_and_lazy_agree(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path)
    a = load_split(root, "test")
    b = load_split(root, "test", lazy=True)
    assert a.names == b.names == ["a.png", "b.png"] and a.groups == ["a", "b"]
    assert a.sizes == b.sizes == [(H, W), (H, W)]
    assert a.raters == ["GT1", "GT2"] and a.fingerprint == b.fingerprint
    for i in range(2):
        img = a.images[i]
        assert img.dtype == np.float32 and img.shape == (H, W)
        np.testing.assert_array_equal(img, b.images[i])
        np.testing.assert_allclose(img, np.asarray(Image.open(root / "test" / "images" / a.names[i])) / 255.0)
        for r in ("GT1", "GT2"):
            for p in ("full", "head", "tail"):
                m = a.masks(r, p)[i]
                assert m.dtype == np.bool_ and m.shape == (H, W)
                np.testing.assert_array_equal(m, b.masks(r, p)[i])
    np.testing.assert_array_equal(a.masks("GT1", "full")[1], _mask(hash(("test", 1)) % 1000))
    a.images[0][:] = 5  # returned arrays are copies: the cache is not modified
    assert a.images[0].max() <= 1.0
    assert a.stack_images().shape == (2, H, W) and len(a.images[0:2]) == 2


def test_full_derived_and_parts_never_faked(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path / "parts", parts=("head", "tail"))
    arr = load_split(root, "train")
    assert arr.parts("GT1") == ["full", "head", "tail"]
    full, head, tail = (arr.masks("GT1", p) for p in ("full", "head", "tail"))
    for i in range(len(arr)):
        np.testing.assert_array_equal(full[i], head[i] | tail[i])
        np.testing.assert_array_equal(full[i], _mask(hash(("train", i)) % 1000))
    lazy = load_split(root, "train", lazy=True)
    np.testing.assert_array_equal(lazy.masks("GT1", "full")[2], full[2])
    only_full = load_split(make_segsperm(tmp_path / "full", parts=("full",)), "train")
    assert only_full.masks("GT1", "head") is None and only_full.masks("GT1", "tail") is None
    assert only_full.parts("GT1") == ["full"]
    just_full = load_split(root, "train", parts=("full",))
    assert just_full.masks("GT1", "head") is None and just_full.masks("GT1", "full") is not None


def test_load_split_selection_errors(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path)
    with pytest.raises(DataError, match="no rater 'GT3'; raters: GT1, GT2"):
        load_split(root, "test", raters=["GT3"])
    with pytest.raises(DataError, match="unknown part 'body'"):
        load_split(root, "test", parts=("body",))
    arr = load_split(root, "test", raters=["GT2"])
    with pytest.raises(DataError, match="rater 'GT1' not loaded"):
        arr.masks("GT1")


def test_lazy_mode_reports_bad_files_on_access(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path)
    _save(root / "test" / "GT1_full" / "b.png", np.zeros((H, W + 2), np.uint8))
    arr = load_split(root, "test", lazy=True)  # no pixel read yet
    arr.masks("GT1", "full")[0]
    with pytest.raises(DataError, match="size mismatch"):
        arr.masks("GT1", "full")[1]


def test_fingerprint_tracks_files_and_options(tmp_path: Path) -> None:
    root = make_segsperm(tmp_path)
    fp = load_split(root, "test").fingerprint
    assert load_split(root, "test").fingerprint == fp
    assert load_split(root, "test", raters=["GT1"]).fingerprint != fp
    assert load_split(root, "test", binarize_threshold=0.5).fingerprint != fp
    f = root / "test" / "images" / "a.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_split(root, "test").fingerprint != fp


# ------------------------------------------------------------------ folders layout and formats


def test_folders_layout_flat_masks_mixed_formats(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((H, W), 128, np.uint8)])
    (tmp_path / "images").mkdir()
    Image.fromarray(rgb).save(tmp_path / "images" / "c.jpg", quality=95)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "d.png")
    tifffile.imwrite(tmp_path / "images" / "e.tif", (_img(5).astype(np.uint16) * 257))
    Image.fromarray(rgb).save(tmp_path / "images" / "f.bmp")
    for i, stem in enumerate("cdef"):
        _save(tmp_path / "masks" / f"{stem}.png", _mask(i))
    ds = open_dataset(tmp_path)
    assert ds.layout == "folders" and list(ds.splits) == ["all"] and ds.problems == []
    arr = load_split(ds, "all")
    assert arr.raters == ["GT1"] and arr.parts("GT1") == ["full"] and arr.sizes == [(H, W)] * 4
    gray = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    np.testing.assert_allclose(arr.images[1], gray, atol=1e-5)  # RGBA: alpha dropped
    np.testing.assert_allclose(arr.images[2], _img(5) / 255.0, atol=1e-6)  # 16-bit TIFF / 65535
    np.testing.assert_allclose(arr.images[3], gray, atol=1e-5)
    assert np.abs(arr.images[0] - gray).mean() < 0.03  # JPEG is lossy
    np.testing.assert_array_equal(arr.masks("GT1")[2], _mask(2))


def test_folders_layout_raters_and_parts(tmp_path: Path) -> None:
    for stem in ("x", "y"):
        _save(tmp_path / "images" / f"{stem}.png", _img(1))
        for r in ("alice", "bob"):
            _save(tmp_path / "masks" / r / f"{stem}.png", _mask(2))
    ds = open_dataset(tmp_path)
    assert ds.split("all").raters == ["alice", "bob"] and ds.problems == []

    root2 = tmp_path / "p"
    _save(root2 / "images" / "x.png", _img(1))
    for part in ("head", "tail"):
        _save(root2 / "masks" / part / "x.png", _mask(3) if part == "head" else ~_mask(3))
    arr = load_split(root2, "all")
    assert arr.raters == ["GT1"] and arr.parts("GT1") == ["full", "head", "tail"]
    assert arr.masks("GT1", "full")[0].all()

    root3 = tmp_path / "q"
    _save(root3 / "images" / "x.png", _img(1))
    _save(root3 / "masks" / "r1" / "head" / "x.png", _mask(3))
    assert open_dataset(root3).split("all").parts("r1") == ["head"]


def test_folders_layout_problems(tmp_path: Path) -> None:
    _save(tmp_path / "images" / "x.png", _img(1))
    _save(tmp_path / "images" / "y.png", _img(1))
    _save(tmp_path / "masks" / "x.png", _mask(1))
    _save(tmp_path / "masks" / "z.png", _mask(1))
    msgs = [str(p) for p in open_dataset(tmp_path).errors()]
    assert len(msgs) == 2
    assert any("missing mask" in m and "y.png" in m for m in msgs)
    assert any("extra mask" in m and "z.png" in m for m in msgs)
    bare = tmp_path / "bare"
    _save(bare / "images" / "x.png", _img(1))
    ds = open_dataset(bare)
    assert ds.errors() == [] and "no masks" in _messages(ds)
    assert load_split(ds, "all").raters == []


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="no dataset found"):
        open_dataset(tmp_path)
