"""Tests of the synthetic ICSI generator: geometry, truth masks, rater noise, layout, reproducibility, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from spermseg.config import resolve_config
from spermseg.data.synth import SynthConfig, generate_dataset, rate_frame, render_frame, sample_scene
from spermseg.data.synth.dataset import rater_masks, render_item, scene_for, video_frames
from spermseg.data.synth.fields import blob_field, polyline_field
from spermseg.data.synth.stats import AgreementAccumulator, disagreement_location

PARTS = ("full", "head", "tail")


def small_cfg(size: int = 192, **overrides: object) -> SynthConfig:
    """Default physics (pixel size, raters) on a small frame with a few sperm."""
    cfg = dataclasses.replace(SynthConfig(), height=size, width=size)
    cfg.sperm.count = (2, 4)
    cfg.sperm.border_margin_um = 5.0  # keep most sperm in the small frame
    return resolve_config(SynthConfig, base=cfg, overrides=[f"{k}={v}" for k, v in overrides.items()])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------------------------- fields


def test_polyline_field_is_exact_and_complete() -> None:
    s = np.linspace(0, 100, 41)
    psi = 0.6 * np.sin(s / 9.0) + 0.8
    pts = np.stack([np.cumsum(np.cos(psi)) * 2.5 - 10.0, np.cumsum(np.sin(psi)) * 2.5 + 5.0], 1)  # leaves the frame
    f = polyline_field(pts, 64, 80, 5.0)
    assert f is not None
    yy, xx = np.mgrid[0:64, 0:80]
    p = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    a, ab = pts[:-1], pts[1:] - pts[:-1]
    ap = p[:, None] - a[None]
    t = np.clip((ap * ab).sum(-1) / (ab**2).sum(-1), 0, 1)
    brute = np.sqrt(((ap - t[..., None] * ab) ** 2).sum(-1)).min(1)
    # every pixel within the radius is found, and its distance is exact (sub-pixel)
    assert set(np.nonzero(brute <= 5.0)[0]) <= set(f.idx.tolist())
    np.testing.assert_allclose(np.abs(f.d), brute[f.idx], atol=1e-3)
    # arc length grows along the curve
    order = np.argsort(brute[f.idx])
    assert f.s.min() >= 0 and f.s.max() <= np.sqrt((ab**2).sum(-1)).sum() + 1e-3
    assert len(order) == len(f.idx)
    assert polyline_field(pts + 1000.0, 64, 80, 5.0) is None


def test_blob_field_outline_matches_ellipse_area() -> None:
    f = blob_field((40.0, 30.0), (12.0, 6.0), 0.4, 64, 80, 3.0)
    assert f is not None
    inside = np.count_nonzero(f.sd <= 0)
    assert abs(inside - math.pi * 12 * 6) / (math.pi * 12 * 6) < 0.03
    assert blob_field((-100.0, 30.0), (5.0, 3.0), 0.0, 64, 80, 3.0) is None


# ----------------------------------------------------------------------------------------------- frames


def test_render_is_deterministic_and_order_independent() -> None:
    cfg = small_cfg()
    a1 = render_item(cfg, scene_for(cfg, 5, 2), 5, 2, 17)
    render_item(cfg, scene_for(cfg, 5, 1), 5, 1, 3)  # something else in between
    a2 = render_item(cfg, scene_for(cfg, 5, 2), 5, 2, 17)
    assert a1.image.dtype == np.uint8 and a1.image.shape == (192, 192)
    np.testing.assert_array_equal(a1.image, a2.image)
    for p in PARTS:
        np.testing.assert_array_equal(a1.truth[p], a2.truth[p])
    other = render_item(cfg, scene_for(cfg, 6, 2), 6, 2, 17)
    assert not np.array_equal(a1.image, other.image)


def test_truth_parts_are_consistent_and_sperm_are_visible() -> None:
    cfg = small_cfg()
    for video in (1, 2, 3):
        scene = scene_for(cfg, 0, video)
        fr = render_item(cfg, scene, 0, video, 0)
        t = fr.truth
        assert all(t[p].dtype == bool and t[p].shape == fr.image.shape for p in PARTS)
        np.testing.assert_array_equal(t["full"], t["head"] | t["tail"])
        assert not np.any(t["head"] & t["tail"])
        # exact instances and part codes agree with the binary truth (as data check requires of a dataset)
        assert t["instances"].dtype == np.uint16 and t["parts"].dtype == np.uint8
        np.testing.assert_array_equal(t["instances"] > 0, t["full"])
        np.testing.assert_array_equal(np.isin(t["parts"], (1, 2, 3)), t["head"])
        np.testing.assert_array_equal(np.isin(t["parts"], (4, 5)), t["tail"])
        assert set(np.unique(t["instances"])) <= set(range(len(fr.sperm) + 1))
        for fp in fr.sperm:
            if fp.head_inside:
                assert fp.head is not None and np.count_nonzero(fp.head.sd <= 0) > 20
        # sperm darken (or lighten) the image where they are: the head pixels differ from their surroundings
        if t["head"].any():
            ring = np.zeros_like(t["head"])
            ys, xs = np.nonzero(t["head"])
            ring[max(ys.min() - 12, 0) : ys.max() + 12, max(xs.min() - 12, 0) : xs.max() + 12] = True
            ring &= ~t["full"]
            img = fr.image.astype(float)
            assert abs(img[t["head"]].mean() - img[ring].mean()) > 3.0


def test_truth_of_sperm_cut_by_the_border_is_the_crop_of_a_larger_frame() -> None:
    """Every truth mask is exactly the part of the sperm inside the image (no wrap-around, no lost pixels)."""
    cfg = small_cfg(96)
    cfg.sperm.count = (4, 4)
    cfg.sperm.border_margin_um = 40.0  # many sperm cross the border
    pad = 150
    n_cut = 0
    for video in (1, 2):
        scene = sample_scene(cfg, np.random.default_rng([9, video]))
        big = dataclasses.replace(
            scene,
            height=96 + 2 * pad,
            width=96 + 2 * pad,
            sperm=[dataclasses.replace(s, neck=(s.neck[0] + pad, s.neck[1] + pad)) for s in scene.sperm],
            debris=[],
            cache={},
            footprints=[],
        )
        small = render_frame(scene, 0.3, np.random.default_rng(0))
        large = render_frame(big, 0.3, np.random.default_rng(0))
        for p in PARTS:
            crop = large.truth[p][pad : pad + 96, pad : pad + 96]
            assert np.count_nonzero(crop ^ small.truth[p]) <= 2  # float32 rounding exactly at the outline
        n_cut += np.count_nonzero(large.truth["full"]) > np.count_nonzero(small.truth["full"]) + 50
    assert n_cut >= 1  # the test did exercise sperm cut by the border


def test_tails_are_thin_at_an_icsi_pixel_size() -> None:
    """At 0.3 um/px (SegSperm-like ICSI) the truth tail is a thin band: median skeleton-to-edge distance < 3 px."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    cfg = dataclasses.replace(small_cfg(256), pixel_size_um=0.3)
    widths = []
    for video in (1, 2, 3):
        tail = render_item(cfg, scene_for(cfg, 3, video), 3, video, 0).truth["tail"]
        skel = skeletonize(tail)
        widths.append(distance_transform_edt(tail)[skel])
    w = np.concatenate(widths)
    assert w.size > 100
    assert np.median(w) < 3.0
    assert cfg.pixel_size_um == 0.3


def test_blur_and_contrast_fade_along_the_tail() -> None:
    cfg = small_cfg(256)
    fr = render_item(cfg, scene_for(cfg, 4, 1), 4, 1, 0)
    assert fr.sperm
    for fp in fr.sperm:
        n = len(fp.pose.s)
        assert fp.pose.blur[-1] > fp.pose.blur[0]
        assert fp.tail_visibility[-n // 5 :].mean() < 0.5 * fp.tail_visibility[: n // 5].mean()
        assert fp.head_visibility > fp.tail_visibility[-1]


def test_video_frames_move_and_beat() -> None:
    cfg = small_cfg(192)
    cfg.sperm.immotile_fraction = 0.0
    cfg.sperm.border_margin_um = 0.0
    scene = scene_for(cfg, 2, 1)
    f0, f1 = render_item(cfg, scene, 2, 1, 0), render_item(cfg, scene, 2, 1, 1)
    max_step = cfg.sperm.speed_um_s[1] / scene.pixel_size_um / cfg.fps
    for a, b in zip(f0.sperm, f1.sperm):
        step = math.dist(a.pose.head_center, b.pose.head_center)
        assert 0.0 < step <= max_step + 0.5  # swims, and smoothly
        assert np.abs(a.pose.points - b.pose.points).max() > 0.5  # the flagellum beats
    # consecutive frames show the same sperm slightly displaced
    assert 0.3 < iou(f0.truth["head"], f1.truth["head"]) < 1.0


# ----------------------------------------------------------------------------------------------- raters


def _rated(cfg: SynthConfig, seed: int, videos: range, per_video: int) -> list[tuple]:
    out = []
    for v in videos:
        scene = scene_for(cfg, seed, v)
        for f in video_frames(cfg, seed, v, per_video):
            fr = render_item(cfg, scene, seed, v, f)
            out.append((fr, rater_masks(cfg, fr, seed, v, f, 3)))
    return out


@pytest.fixture(scope="module")
def rated() -> list[tuple]:
    return _rated(small_cfg(256), 11, range(1, 5), 3)


def test_inter_rater_iou_head_above_tail(rated: list[tuple]) -> None:
    inter = {p: 0 for p in PARTS}
    union = {p: 0 for p in PARTS}
    for _fr, masks in rated:
        for i, j in ((0, 1), (0, 2), (1, 2)):
            for p in PARTS:
                inter[p] += np.count_nonzero(masks[i][p] & masks[j][p])
                union[p] += np.count_nonzero(masks[i][p] | masks[j][p])
    got = {p: inter[p] / union[p] for p in PARTS}
    assert got["head"] > got["tail"] + 0.1
    assert 0.35 < got["full"] < 0.85
    # the module's accumulator agrees with this independent computation
    acc = AgreementAccumulator()
    for _fr, masks in rated:
        acc.update(masks)
    res = acc.result()
    for p in PARTS:
        assert res[p]["mean_pooled"] == pytest.approx(
            np.mean([acc.inter[p][k] / acc.union[p][k] for k in range(3)]), abs=1e-12
        )


def test_raters_differ_from_truth_near_contours_and_tail_ends(rated: list[tuple]) -> None:
    from scipy.ndimage import distance_transform_edt

    diff_total = explained = tail_end_diff = 0
    inter = np.zeros(3)
    union = np.zeros(3)
    for fr, masks in rated:
        truth = fr.truth["full"]
        near = (truth & (distance_transform_edt(truth) <= 2)) | (~truth & (distance_transform_edt(~truth) <= 2))
        end = np.zeros(truth.size, dtype=bool)
        for fp in fr.sperm:
            if fp.tail is not None:
                end[fp.tail.idx[fp.tail.s >= 0.7 * fp.pose.s[-1]]] = True
        end = end.reshape(truth.shape)
        for r, m in enumerate(masks):
            diff = m["full"] ^ truth
            diff_total += np.count_nonzero(diff)
            explained += np.count_nonzero(diff & (near | end))
            tail_end_diff += np.count_nonzero(diff & end)
            inter[r] += np.count_nonzero(m["full"] & truth)
            union[r] += np.count_nonzero(m["full"] | truth)
    # noisy, but about the same objects
    assert np.all(inter / union > 0.35) and np.all(inter / union < 0.95)
    assert diff_total > 0
    assert explained / diff_total > 0.85
    # truncated faint tail ends are a large share of the disagreement, as in the paper
    assert tail_end_diff / diff_total > 0.1
    # the library's measure agrees
    fr, masks = rated[0]
    d = disagreement_location(fr, masks[0])
    assert 0.0 <= d["near_contour"] <= d["explained"] <= 1.0


def test_rater_knobs_miss_faint_sperm_and_label_debris() -> None:
    cfg = dataclasses.replace(small_cfg(192), pixel_size_um=0.3)
    cfg.appearance.mode = "phase"  # faint tails, whose end a rater's threshold decides
    cfg.background.head_debris = (3, 3)
    fr = render_item(cfg, scene_for(cfg, 1, 1), 1, 1, 0)
    assert fr.truth["full"].any() and fr.debris
    blind = dataclasses.replace(
        cfg.raters.gt1, miss_threshold=1.0, miss_probability=1.0, false_positive_probability=0.0
    )
    assert not rate_frame(fr, blind, np.random.default_rng(0))["full"].any()
    eager = dataclasses.replace(
        cfg.raters.gt1,
        miss_threshold=0.0,
        base_miss_probability=0.0,
        cut_miss_probability=0.0,
        false_positive_probability=1.0,
    )
    m = rate_frame(fr, eager, np.random.default_rng(0))
    debris = np.zeros(fr.image.size, dtype=bool)
    for deb in fr.debris:
        if deb.head is not None:
            debris[deb.head.idx[deb.head.sd <= 0]] = True
    debris = debris.reshape(fr.image.shape) & ~fr.truth["full"]
    assert np.count_nonzero(m["head"] & debris) > 0.5 * np.count_nonzero(debris)
    # a stricter tail threshold keeps less tail
    strict = dataclasses.replace(eager, tail_threshold=0.05, false_positive_probability=0.0)
    loose = dataclasses.replace(eager, tail_threshold=0.005, false_positive_probability=0.0)
    n_strict = np.count_nonzero(rate_frame(fr, strict, np.random.default_rng(0))["tail"])
    n_loose = np.count_nonzero(rate_frame(fr, loose, np.random.default_rng(0))["tail"])
    assert n_strict < n_loose


# ----------------------------------------------------------------------------------------------- dataset


def test_dataset_layout_reproducible_and_readable(tmp_path: Path) -> None:
    from spermseg.data.layouts import open_dataset

    cfg = small_cfg(96)
    cfg.images_per_video = 2
    kw = dict(n_train=3, n_test=3, n_test_small=2, show_progress=False)
    m = generate_dataset(tmp_path / "a", cfg, seed=4, **kw)
    generate_dataset(tmp_path / "b", cfg, seed=4, **kw)
    generate_dataset(tmp_path / "c", cfg, seed=5, **kw)
    ha, hb, hc = (tree_hashes(tmp_path / x) for x in "abc")
    assert ha == hb  # byte-identical
    assert ha != hc
    root = tmp_path / "a"
    assert len(list((root / "train" / "images").glob("*.png"))) == 3
    assert sorted(p.name for p in (root / "test_small").iterdir()) == sorted(
        ["images"] + [f"GT{r}_{p}" for r in (1, 2, 3) for p in PARTS]
    )
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(["images"] + [f"GT1_{p}" for p in PARTS])
    for split in ("train", "test", "test_small"):
        for p in (*PARTS, "instances", "parts"):
            assert len(list((root / "truth" / split / p).glob("*.png"))) == len(m["splits"][split]["images"])
    # train and test never share a video; test_small is the first test images, with the same GT1
    assert not set(m["splits"]["train"]["videos"]) & set(m["splits"]["test"]["videos"])
    assert m["splits"]["test_small"]["images"] == m["splits"]["test"]["images"][:2]
    for name in m["splits"]["test_small"]["images"]:
        for p in PARTS:
            assert ha[f"test/GT1_{p}/{name}"] == ha[f"test_small/GT1_{p}/{name}"]
        assert ha[f"test/images/{name}"] == ha[f"test_small/images/{name}"]
    saved = json.loads((root / "synth.json").read_text())
    assert saved["seed"] == 4 and saved["config"]["pixel_size_um"] == cfg.pixel_size_um
    assert saved["config"]["raters"]["gt2"]["tail_threshold"] == cfg.raters.gt2.tail_threshold
    ds = open_dataset(root)
    assert ds.layout == "segsperm"
    assert ds.splits["test_small"].raters == ["GT1", "GT2", "GT3"]
    groups = {s.group for s in ds.splits["train"].samples}
    assert groups == {f"{v:02d}" for v in m["splits"]["train"]["videos"]}


def test_data_check_passes_on_generated_data(tmp_path: Path) -> None:
    from spermseg.data.check import check_dataset

    cfg = small_cfg(64)
    generate_dataset(tmp_path, cfg, n_train=2, n_test=2, n_test_small=1, seed=0, show_progress=False)
    report = check_dataset(tmp_path, show_progress=False)
    assert report["ok"], report["problems"]


def test_videos_are_written_with_truth(tmp_path: Path) -> None:
    cfg = small_cfg(64)
    m = generate_dataset(
        tmp_path, cfg, n_train=1, n_test=1, n_test_small=0, seed=0, n_videos=1, n_frames=3, show_progress=False
    )
    (video,) = m["videos"]
    vdir = tmp_path / "videos" / video["id"]
    assert len(list((vdir / "frames").glob("*.png"))) == 3
    for p in PARTS:
        assert len(list((vdir / "truth" / p).glob("*.png"))) == 3
    # the video id is not used by any split
    used = {v for s in m["splits"].values() for v in s["videos"]}
    assert video["video"] not in used
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        assert video["mp4"] is None
    else:
        assert video["mp4"] and (tmp_path / video["mp4"]).stat().st_size > 0


def test_cli_synth_and_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spermseg.cli import main

    out = tmp_path / "s"
    args = [
        "synth",
        str(out),
        "--train",
        "2",
        "--test",
        "1",
        "--test-small",
        "1",
        "--size",
        "64",
        "80",
        "--seed",
        "3",
        "--set",
        "sperm.count=[1,2]",
    ]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    from spermseg.data.io import read_image

    img = read_image(next((out / "train" / "images").glob("*.png")))
    assert img.shape == (64, 80)
    saved = json.loads((out / "synth.json").read_text())
    assert saved["config"]["sperm"]["count"] == [1, 2]
    assert main(args) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert main(["synth", str(tmp_path / "other"), "--overwrite", "--size", "64", "64"]) == 2
    assert (tmp_path / "other" / "keep.txt").exists()
    assert main(["synth", str(tmp_path / "x"), "--set", "nonsense=1"]) == 2


# ----------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_default_noise_resembles_paper_table2() -> None:
    """Default raters at 512x512: full IoU ~0.55-0.65, head clearly above tail (paper: 0.57, 0.70, 0.48)."""
    from spermseg.data.synth.stats import measure_noise

    res = measure_noise(SynthConfig(), seed=0, n_videos=4)["agreement"]
    assert 0.5 <= res["full"]["mean_pooled"] <= 0.68
    assert res["head"]["mean_pooled"] > res["tail"]["mean_pooled"] + 0.12
    assert 0.4 <= res["tail"]["mean_pooled"] <= 0.6


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes(tmp_path: Path) -> None:
    cfg = small_cfg(96)
    cfg.images_per_video = 2
    kw = dict(n_train=4, n_test=2, n_test_small=2, seed=8, n_videos=1, n_frames=2, mp4=False, show_progress=False)
    generate_dataset(tmp_path / "one", cfg, **kw)
    generate_dataset(tmp_path / "two", cfg, workers=2, **kw)
    assert tree_hashes(tmp_path / "one") == tree_hashes(tmp_path / "two")
