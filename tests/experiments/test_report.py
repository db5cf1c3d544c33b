"""Tests of the report writer and figures: every table and figure is present, the HTML is self-contained and
renders in headless Chromium, paper numbers appear only when asked, and the transcribed numbers match the paper."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from spermseg.experiments import paper_numbers as P
from spermseg.experiments.report import write_report
from spermseg.experiments.steps import StepRecord

RATERS = ["GT1", "GT2", "GT3"]
PARTS = ["full", "head", "tail"]
MODELS = ["unet", "att_unet", "fpn"]


def _stat(rng: np.random.Generator, lo: float = 0.5, hi: float = 0.9, n: int = 3) -> dict:
    return {"mean": float(rng.uniform(lo, hi)), "std": float(rng.uniform(0, 0.02)), "n": n}


def _disk_masks(rng: np.random.Generator, h: int = 32, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    ref = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < 60
    pred = ref.copy()
    pred[rng.random(ref.shape) < 0.05] ^= True
    return ref, pred


def make_records(out_dir: Path, rng: np.random.Generator) -> dict[str, StepRecord]:
    """A complete set of step results in the schema of spermseg.experiments.reproduce (numbers are random)."""
    iou = {p: {a: {b: float(rng.uniform(0.4, 0.8)) for b in RATERS} for a in RATERS} for p in PARTS}
    iou_prime = {
        k: {p: {a: {b: (1.0 if a == b else float(rng.uniform(0.7, 1))) for b in RATERS} for a in RATERS} for p in PARTS}
        for k in ("3", "5")
    }
    (out_dir / "steps/agreement").mkdir(parents=True)
    ref, pred = _disk_masks(rng)
    image = rng.random(ref.shape).astype(np.float32)
    labels = ["GT1", "GT2", "GT3", "union", "majority", "intersection"]
    np.savez(
        out_dir / "steps/agreement/aggregation_example.npz",
        image=image,
        labels=np.array(labels),
        name="x.png",
        **{f"mask_{lab}": ref for lab in labels},
    )
    agreement = {
        "split": "test_small",
        "n_images": 6,
        "raters": RATERS,
        "kernels": [3, 5],
        "iou": iou,
        "iou_prime": iou_prime,
        "mean_iou_prime": {k: {p: 0.8 for p in PARTS} for k in ("3", "5")},
        "aggregation_example": "steps/agreement/aggregation_example.npz",
    }
    normalization = {
        "models": MODELS,
        "normalizations": ["none", "mean", "minmax"],
        "metric": "validation AP",
        "ap": {m: {n: _stat(rng, n=1) for n in ("none", "mean", "minmax")} for m in MODELS},
    }
    t = np.linspace(0, 1, 51)
    base = {
        "split": "test",
        "rater": "GT1",
        "summary": {m: {k: _stat(rng) for k in ("ap", "iou_0.5", "iou_opt", "t_opt")} for m in MODELS},
        "ranking": MODELS,
        "curves": {
            m: {"thresholds": t.tolist(), "iou": (0.6 * np.sin(np.pi * t)).tolist(), "t_opt": 0.5, "iou_opt": 0.6}
            for m in MODELS
        },
    }
    sels = {"E1": MODELS, "E2": MODELS[:1], "E3": MODELS, "E4": MODELS[1:]}
    ensembles = {
        "selections": sels,
        "rank_on": "validation",
        "best": "ens_att_v2|E3",
        "best_base": "unet",
        "table": {
            metric: {kind: {e: _stat(rng, n=1 if kind == "avg" else 2) for e in sels} for kind in ("avg", "ens_att_v2")}
            for metric in ("ap", "iou_0.5", "iou_opt")
        },
    }
    variants = ["GT1", "GT2", "GT3", "union", "majority", "intersection", "staple"]
    raters = {
        "split": "test_small",
        "n_images": 6,
        "methods": {"best_base": "unet", "avg|E3": "avg|E3", "ens_att_v2|E3": "ens_att_v2|E3"},
        "iou_opt": {
            p: {
                v: {m: float(rng.uniform(0.3, 0.8)) for m in ("best_base", "avg|E3", "ens_att_v2|E3")} for v in variants
            }
            for p in PARTS
        },
    }
    kernels = [1, 3, 5, 7]
    blur = {
        "kernels": kernels,
        "rater": "GT1",
        "sigma_rule": "sigma = 0.3*((k-1)*0.5-1)+0.8",
        "highlight": "ens_att_v2|E3",
        "values": {
            m: {"iou_opt": sorted(rng.uniform(0.3, 0.7, 4))[::-1], "ap": sorted(rng.uniform(0.5, 0.9, 4))}
            for m in [*MODELS, "ens_att_v2|E3"]
        },
    }
    (out_dir / "steps/qualitative").mkdir(parents=True)
    arrays = {}
    for i in range(2):
        arrays[f"{i}/image"] = image
        arrays[f"{i}/ref"] = ref
        for m in [*MODELS, "ens_att_v2|E3"]:
            arrays[f"{i}/{m}"] = pred
    np.savez_compressed(out_dir / "steps/qualitative/examples.npz", **arrays)
    qualitative = {
        "examples": "steps/qualitative/examples.npz",
        "images": ["a.png", "b.png"],
        "rater": "GT1",
        "fig10_methods": MODELS,
        "fig11_methods": [*MODELS, "ens_att_v2|E3"],
        "thresholds": {m: 0.3 for m in MODELS},
    }
    temporal = {
        "sequence": "v0",
        "n_frames": 6,
        "series": {
            m: {
                "iou": rng.uniform(0.5, 1, 5).tolist(),
                "kept": rng.uniform(0.5, 1, 5).tolist(),
                "mean_iou": 0.7,
                "mean_kept": 0.8,
            }
            for m in MODELS
        },
    }
    results = {
        "agreement": agreement,
        "normalization": normalization,
        "base": base,
        "ensembles": ensembles,
        "raters": raters,
        "blur": blur,
        "qualitative": qualitative,
        "temporal": temporal,
    }
    return {
        k: StepRecord(k, "done", result=v, wall_s=float(rng.uniform(1, 100)), attempts=1) for k, v in results.items()
    }


class _Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.srcs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.links.append(a.get("href") or a.get("src") or "")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("report")
    recs = make_records(out, np.random.default_rng(0))
    md, html_path = write_report(
        out,
        recs,
        config={"preset": "demo", "models": MODELS},
        environment={"versions": {"torch": "x"}, "hardware": {"cpu_count": 2}},
        info={"dataset": "synthetic"},
    )
    return out, md, html_path


def test_report_has_every_table_and_figure(report: tuple[Path, Path, Path]) -> None:
    out, md, html_path = report
    text = md.read_text()
    for needle in (
        "Table 2 (top)",
        "Table 2 (bottom)",
        "Fig. 9",
        "Table 3 (top)",
        "Table 3: AP",
        "Table 3: IoU_opt",
        "Table 4: IoU_opt, tail",
        "Fig. 12",
        "Fig. 10",
        "Fig. 11",
        "Fig. 14",
        "Fig. 6",
        "Fig. 7",
        "Steps and wall time per step",
        "Versions and hardware",
        "preset: demo",
    ):
        assert needle in text, needle
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {
        "fig6_aggregation.png",
        "fig7_iou_threshold.png",
        "fig9_normalization.png",
        "fig10_difference_maps.png",
        "fig11_difference_maps.png",
        "fig12_blur_iou_opt.png",
        "fig14_temporal.png",
    } <= set(pngs)
    for p in pngs:
        assert f"figures/{p}" in text, f"report.md does not link {p}"
    parser = _Counter()
    parser.feed(html_path.read_text())
    assert parser.tags.get("img", 0) == len(pngs), "every figure embedded once"
    assert all(s.startswith("data:image/png;base64,") for s in parser.srcs), "figures must be embedded"
    assert parser.links == [], "no external assets"
    assert parser.tags.get("table", 0) >= 15
    assert not re.search(r"paper \d", text), "no paper numbers unless asked"


def _without_figures(recs: dict[str, StepRecord], keep: tuple[str, ...]) -> dict[str, StepRecord]:
    """Only the steps in ``keep``, with the figure data removed where possible (fast report renders)."""
    recs = {k: v for k, v in recs.items() if k in keep}
    if "base" in recs:
        recs["base"].result.pop("curves", None)
    if "agreement" in recs:
        recs["agreement"].result["kernels"] = []
        recs["agreement"].result.pop("aggregation_example", None)
    return recs


def test_paper_numbers_shown_with_difference(tmp_path: Path) -> None:
    recs = _without_figures(
        make_records(tmp_path, np.random.default_rng(1)), ("agreement", "base", "ensembles", "raters")
    )
    recs["agreement"].result["iou"]["full"]["GT1"]["GT2"] = 0.6767  # paper 0.5767
    recs["base"].result["summary"]["att_unet"]["ap"]["mean"] = 0.8434  # paper 0.8334
    md, _ = write_report(tmp_path, recs, compare_paper=True, environment={})
    text = md.read_text()
    assert "0.6767 (paper 0.5767, Δ +0.1000)" in text
    assert "| 0.8334 | +0.0100 |" in text, "Table 3: paper AP and the difference beside ours"
    assert "paper IoU_opt" in text and "paper best_base" in text and "paper ens_att_v2\\|E3" in text


def test_unfinished_steps_are_reported_honestly(tmp_path: Path) -> None:
    recs = _without_figures(make_records(tmp_path, np.random.default_rng(2)), ("agreement", "base", "raters"))
    recs["blur"] = StepRecord("blur", "unavailable", reason="spermseg.evaluation.blur is missing")
    recs["temporal"] = StepRecord(
        "temporal", "done", result={"status": "not_applicable", "reason": "the dataset has no frame sequence"}
    )
    del recs["raters"]
    md, _ = write_report(tmp_path, recs, environment={})
    text = md.read_text()
    assert "not available: spermseg.evaluation.blur is missing" in text
    assert "not applicable: the dataset has no frame sequence" in text
    assert "*Status: not run" in text.split("## 5.")[1].split("## 6.")[0]
    assert "Fig. 12 data" not in text


def _paper_text() -> str:
    files = glob.glob(str(Path(__file__).resolve().parents[3] / "shared" / "paper" / "*.md"))
    if not files:
        pytest.skip("paper text not found in ../shared/paper")
    return Path(files[0]).read_text()


def test_paper_numbers_match_the_paper_text() -> None:
    text = _paper_text()
    # Table 3 top block: each row of the paper, parsed, equals the transcription.
    for model, name in P.PAPER_MODEL_NAMES.items():
        line = next(ln for ln in text.splitlines() if ln.startswith(name + " ["))
        nums = [float(x) for x in re.findall(r"0\.\d{4}", line)]
        exp = P.TABLE3_BASE[model]
        assert nums == [
            exp["ap"][0],
            exp["ap"][1],
            exp["iou_0.5"][0],
            exp["iou_0.5"][1],
            exp["iou_opt"][0],
            exp["iou_opt"][1],
        ], model
    # Table 3 lower blocks: rows in order AP, IoU_0.5, IoU_opt blocks.
    rows = [ln for ln in text.splitlines() if re.match(r"(Avg|Ensemble\S*|EnsembleAtt\S+)\t", ln)]
    kinds = list(P.PAPER_ENSEMBLE_NAMES)
    assert len(rows) == 18
    for b, metric in enumerate(("ap", "iou_0.5", "iou_opt")):
        for i, kind in enumerate(kinds):
            nums = [float(x) for x in re.findall(r"0\.\d{4}", rows[6 * b + i])]
            exp = [v for e in ("E1", "E2", "E3", "E4") for v in P.TABLE3_ENSEMBLES[metric][kind][e] if v is not None]
            assert nums == exp, (metric, kind)
    # Table 4: 18 rows GT1..Feeling lucky for head, tail, full.
    t4 = text.split("$IoU_{opt}$ head")[1]
    rows = [ln for ln in t4.splitlines() if re.match(r"(GT\d|Full agreement|Majority voting|Feeling lucky)\t", ln)]
    order = ["GT1", "GT2", "GT3", "intersection", "majority", "union"]
    for b, part in enumerate(("head", "tail", "full")):
        for i, var in enumerate(order):
            nums = [float(x) for x in re.findall(r"0\.\d{4}", rows[6 * b + i])]
            assert nums == [P.TABLE4[part][var][m] for m in P.TABLE4_METHODS], (part, var)
    # Table 2: strict IoU rows and the IoU' matrices (diagonal 1).
    for part in ("full", "head", "tail"):
        line = next(ln for ln in text.splitlines() if ln.startswith(part.capitalize() + "\t0."))
        assert [float(x) for x in re.findall(r"0\.\d{4}", line)] == list(P.TABLE2_IOU[part].values())
    t2 = text.split("**IoU' (Eq. (1))**")[1]
    rows = [ln for ln in t2.splitlines() if re.match(r"GT\d\t", ln)][:9]
    for b, part in enumerate(("full", "head", "tail")):
        for i, ref in enumerate(RATERS):
            nums = [float(x) for x in rows[3 * b + i].split("\t")[1:] if x.strip()]
            assert nums == [P.TABLE2_IOU_PRIME_K3[part][ref][c] for c in RATERS], (part, ref)


def test_is_segsperm(tmp_path: Path) -> None:
    for split, n in P.SEGSPERM_SPLIT_SIZES.items():
        (tmp_path / split / "images").mkdir(parents=True)
        for i in range(n):
            (tmp_path / split / "images" / f"{i}.png").touch()
    assert P.is_segsperm(tmp_path)
    (tmp_path / "synth.json").write_text("{}")
    assert not P.is_segsperm(tmp_path)
    assert not P.is_segsperm(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------------------------
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _chromium() -> str:
    """Path of Debian's chromium. The test installs nothing: ``.ci/run`` (``make system-deps``) installs chromium
    on CI; elsewhere the test skips and says how to get it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed; run 'make system-deps' (apt-get install chromium) to run this test")


def test_report_renders_in_headless_chromium(report: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, html_path = report
    chromium = _chromium()
    base = [chromium, *CHROMIUM_FLAGS]
    dom = subprocess.run(
        [*base, f"--user-data-dir={tmp_path / 'profile1'}", "--dump-dom", html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    parser = _Counter()
    parser.feed(dom.stdout)
    n_img = parser.tags.get("img", 0)
    assert n_img >= 10 and parser.tags.get("table", 0) >= 15
    m = re.search(r'data-images-decoded="(\d+)/(\d+)"', dom.stdout)
    assert m, "the load handler did not run"
    assert int(m.group(1)) == int(m.group(2)) == n_img, f"only {m.group(1)} of {m.group(2)} figures decoded"


@pytest.mark.slow
def test_report_screenshot_in_headless_chromium(report: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, html_path = report
    base = [_chromium(), *CHROMIUM_FLAGS]
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [
            *base,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2400",
            html_path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    from skimage.io import imread

    img = imread(shot)
    assert img.shape[0] == 2400 and img.shape[1] == 1200
    # A rendered page with tables and figures is far from blank: many distinct gray levels.
    assert np.unique(img[..., :3].reshape(-1, 3), axis=0).shape[0] > 50
