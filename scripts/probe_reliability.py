"""Run bad-input, fault and interruption cases through the CLI in-process and count which ones hold (issue 14).

Usage::

    PYTHONPATH=src python scripts/probe_reliability.py [--verbose]

A case holds when the command answers as documented: the expected exit code, a one-line error without a
traceback, and no harm done (no input replaced, no result dropped, CSVs listing exactly the files beside them).
Everything happens in a temporary folder with tiny untrained models; it takes about half a minute on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def call(argv: list[str]) -> tuple[int, str, str]:
    """``spermseg ARGV`` in-process: (exit code, stdout, stderr); argparse's exits count as their codes."""
    from spermseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
        except Exception as exc:  # noqa: BLE001 - a crash is what the probe looks for
            code = 99
            err.write(f"Traceback: {type(exc).__name__}: {exc}\n")
    return code, out.getvalue(), err.getvalue()


def one_line(code: int, err: str, expected: int = 2, needle: str = "") -> bool:
    lines = [line for line in err.splitlines() if not line.startswith("usage:") and not line.startswith("  ")]
    errors = [line for line in lines if "error" in line]
    return code == expected and "Traceback" not in err and len(errors) == 1 and needle in err


def csv_agrees(out: Path) -> bool:
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    listed = {r[c] for r in rows for c in ("soft_mask", "binary_mask", "overlay") if r[c]}
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.suffix != ".csv"}
    return listed == present


def setup(tmp: Path) -> dict[str, Path]:
    import cv2
    import tifffile
    import torch

    from spermseg.inference.bundle import create_bundle
    from spermseg.models import create_model
    from spermseg.models.checkpoints import save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tmp / "run"
    save_checkpoint(model / "best", create_model("unet", width=4), {"normalization": "minmax", "threshold": 0.5})
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "a_prob.png", "b.png"):
        cv2.imwrite(str(images / name), rng.integers(0, 255, (32, 40), dtype=np.uint8))
    stack = tmp / "stack"
    stack.mkdir()
    tifffile.imwrite(stack / "s.tif", np.zeros((3, 32, 40), np.uint8), photometric="minisblack")
    data = tmp / "data"
    for split in ("train", "test"):
        for i in range(2):
            (data / split / "images").mkdir(parents=True, exist_ok=True)
            (data / split / "GT1_full").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(data / split / "images" / f"{i}_0000_1.png"), rng.integers(0, 255, (32, 32), np.uint8))
            mask = ((rng.random((32, 32)) > 0.8) * 255).astype(np.uint8)
            cv2.imwrite(str(data / split / "GT1_full" / f"{i}_0000_1.png"), mask)
    (model / "result.json").write_text(json.dumps({"validation": {"ap": 0.5}}))
    a_file = tmp / "a_file"
    a_file.write_text("x")
    bundle = create_bundle([model], tmp / "bundle")
    return {"tmp": tmp, "model": model, "images": images, "stack": stack, "data": data, "file": a_file,
            "bundle": bundle}  # fmt: skip


def bundle_case(p: dict[str, Path], name: str, change: Callable[[dict], None], rehash: bool, needle: str) -> bool:
    import shutil

    from spermseg.inference.bundle import manifest_digest

    b = p["tmp"] / f"bundle_{name}"
    shutil.copytree(p["bundle"], b)
    manifest = json.loads((b / "bundle.json").read_text())
    change(manifest)
    if rehash:
        manifest["manifest_sha256"] = manifest_digest(manifest)
    (b / "bundle.json").write_text(json.dumps(manifest))
    code, _, err = call(
        ["predict", str(p["images"] / "a.png"), "--model", str(b), "--out", str(p["tmp"] / f"o_{name}")]
    )
    return one_line(code, err, 2, needle) and not (p["tmp"] / f"o_{name}").exists()


def predict_cases(p: dict[str, Path]) -> list[tuple[str, Callable[[], bool]]]:  # noqa: C901 - a flat list
    """Bad input, locks, reuse and interruption of ``spermseg predict``."""
    t, m, img = p["tmp"], str(p["model"]), p["images"]

    def predict(*args: str) -> tuple[int, str, str]:
        return call(["predict", *args, "--model", m, "--no-overlay"])

    def out_is_input() -> bool:
        before = (img / "a_prob.png").read_bytes()
        code, _, err = predict(str(img), "--out", str(img))
        return one_line(code, err, 2, "input folder") and (img / "a_prob.png").read_bytes() == before

    def reuse() -> bool:
        out = t / "reuse"
        first = predict(str(img / "a.png"), "--out", str(out))[0] == 0
        code, _, err = predict(str(img / "b.png"), "--out", str(out))
        rows = list(csv.DictReader((out / "predictions.csv").open()))
        return first and one_line(code, err, 2, "earlier run") and len(rows) == 1

    def append() -> bool:
        out = t / "reuse"
        ok = predict(str(img / "b.png"), "--out", str(out), "--append")[0] == 0
        ok &= predict(str(img / "b.png"), "--out", str(out), "--append")[0] == 0
        rows = list(csv.DictReader((out / "predictions.csv").open()))
        return ok and sorted(Path(r["input"]).name for r in rows) == ["a.png", "b.png"] and csv_agrees(out)

    def overwrite() -> bool:
        out = t / "reuse"
        ok = predict(str(img / "b.png"), "--out", str(out), "--overwrite")[0] == 0
        rows = list(csv.DictReader((out / "predictions.csv").open()))
        return ok and [Path(r["input"]).name for r in rows] == ["b.png"] and csv_agrees(out)

    def interrupted() -> bool:
        out = t / "reuse"
        with open(out / "predictions.csv", "a") as fh:
            fh.write("half,a row")
        (out / "zz_mask.png").write_bytes((out / "b_mask.png").read_bytes())
        (out / ".b_prob.tmp1.png").write_bytes(b"partial")
        ok = predict(str(img / "a.png"), "--out", str(out), "--append")[0] == 0
        return ok and csv_agrees(out)

    def locked() -> bool:
        from spermseg.utils.lock import exclusive_lock

        out = t / "locked"
        out.mkdir()
        with exclusive_lock(out / ".spermseg-predict.lock", "probe"):
            code, _, err = predict(str(img / "a.png"), "--out", str(out))
        return one_line(code, err, 2, "already writing")

    def stale_lock() -> bool:
        out = t / "stale"
        out.mkdir()
        (out / ".spermseg-predict.lock").write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))
        return predict(str(img / "a.png"), "--out", str(out))[0] == 0

    def bad(*args: str, needle: str = "") -> Callable[[], bool]:
        def run() -> bool:
            out = t / f"bad{abs(hash(args))}"
            code, _, err = predict(str(img / "a.png"), "--out", str(out), *args)
            return one_line(code, err, 2, needle) and not out.exists()

        return run

    def multipage() -> bool:
        code, _, err = predict(str(p["stack"]), "--out", str(t / "mp"))
        return code == 1 and "3 pages" in err and "Traceback" not in err

    def corrupt_among_good() -> bool:
        mixed = t / "mixed"
        mixed.mkdir()
        (mixed / "ok.png").write_bytes((img / "a.png").read_bytes())
        (mixed / "broken.png").write_bytes((img / "a.png").read_bytes()[:100])
        code, _, err = predict(str(mixed), "--out", str(t / "mixed_out"))
        return code == 1 and "broken.png" in err and csv_agrees(t / "mixed_out")

    f = str(p["file"])
    return [
        ("predict --out = input folder (a_prob.png kept)", out_is_input),
        ("predict --out holds an input file", lambda: one_line(*predict(str(img / "a.png"), "--out", str(t))[::2])),
        ("predict into a folder with results: refused", reuse),
        ("predict --append: union of rows, CSV = files", append),
        ("predict --overwrite: only this run's rows", overwrite),
        ("predict --append after a kill: cleaned", interrupted),
        ("predict while another run holds the lock", locked),
        ("predict takes over a stale lock", stale_lock),
        ("predict --tile-overlap >= --tile", bad("--tile", "16", "--tile-overlap", "16", needle="--tile-overlap")),
        ("predict --tile-overlap < 0", bad("--tile", "16", "--tile-overlap", "-1", needle="--tile-overlap")),
        ("predict --pixel-size < 0", bad("--pixel-size", "-0.3", needle="--pixel-size")),
        ("predict --batch-size 0", bad("--batch-size", "0", needle="--batch-size")),
        ("predict --threshold 1.5", bad("--threshold", "1.5", needle="--threshold")),
        ("predict --out is a file", lambda: one_line(*predict(str(img / "a.png"), "--out", f)[::2], needle="--out")),
        ("predict --out under a file", lambda: one_line(*predict(str(img), "--out", f + "/x")[::2], needle="--out")),
        (
            "predict missing model",
            lambda: one_line(*call(["predict", str(img), "--model", str(t / "no"), "--out", str(t / "nm")])[::2]),
        ),  # fmt: skip
        ("predict missing input", lambda: one_line(*predict(str(t / "nothing.png"), "--out", str(t / "mi"))[::2])),
        ("predict multi-page TIFF names its pages", multipage),
        ("predict a corrupt file among good ones", corrupt_among_good),
    ]


def pipeline_cases(p: dict[str, Path]) -> list[tuple[str, Callable[[], bool]]]:
    """Bad input and damaged files of the other commands: train, masks, export, bundle, data, synth, evaluate."""
    t, m = p["tmp"], str(p["model"])

    def cache_broken() -> bool:
        cache = t / "cache"
        ok = call(["masks", "--runs", m, "--data", str(p["data"]), "--out", str(cache), "--device", "cpu"])[0] == 0
        entry = next((cache / "masks").rglob("test.npy"))
        good = entry.read_bytes()
        entry.write_bytes(good[: len(good) // 2])
        code, _, err = call(["ensemble", "eval", "--cache", str(cache), "--out", str(t / "t3")])
        ok &= one_line(code, err, 2, "broken")
        code, out, _ = call(["masks", "--runs", m, "--data", str(p["data"]), "--out", str(cache), "--device", "cpu"])
        return ok and code == 0 and "built 1" in out and entry.read_bytes() == good

    def state_flip() -> bool:
        import torch

        from spermseg.errors import CheckpointError
        from spermseg.models import create_model
        from spermseg.training.state import load_training_state, save_training_state

        model = create_model("unet", width=4)
        opt = torch.optim.Adam(model.parameters())
        save_training_state(t / "state_run", epoch=1, model=model, optimizer=opt, scheduler=None)
        f = t / "state_run" / "state" / "epoch_0001.safetensors"
        data = bytearray(f.read_bytes())
        data[-1] ^= 1
        f.write_bytes(bytes(data))
        try:
            load_training_state(t / "state_run", model=model, optimizer=opt, scheduler=None)
        except CheckpointError:
            return True
        return False

    def help_all() -> bool:
        from spermseg.cli import COMMANDS

        return all("example:" in call([name, "--help"])[1] for name in COMMANDS)

    d, f = str(p["data"]), str(p["file"])
    return [
        ("train --out is a file", lambda: one_line(*call(["train", "--data", d, "--out", f])[::2], needle="--out")),
        (
            "masks --out under a file",
            lambda: one_line(*call(["masks", "--runs", m, "--data", d, "--out", f + "/c"])[::2], needle="--out"),
        ),  # fmt: skip
        (
            "masks --batch-size -2",
            lambda: one_line(
                *call(["masks", "--runs", m, "--data", d, "--out", str(t / "c2"), "--batch-size", "-2"])[::2]
            ),
        ),  # fmt: skip
        ("export --out under a file", lambda: one_line(*call(["export", "--model", m, "--out", f + "/m.onnx"])[::2])),
        (
            "export --opset 3",
            lambda: one_line(
                *call(["export", "--model", m, "--out", str(t / "m.onnx"), "--opset", "3"])[::2], needle="opset"
            ),
        ),  # fmt: skip
        (
            "bundle --threshold 2",
            lambda: one_line(*call(["bundle", "--base", m, "--out", str(t / "b2"), "--threshold", "2"])[::2]),
        ),  # fmt: skip
        (
            "bundle.json threshold 7.5 (hand edit)",
            lambda: bundle_case(p, "thr", lambda x: x.update(threshold=7.5), False, "checksum"),
        ),  # fmt: skip
        (
            "bundle.json threshold 7.5 (rehashed)",
            lambda: bundle_case(p, "thr2", lambda x: x.update(threshold=7.5), True, "threshold"),
        ),  # fmt: skip
        (
            "bundle.json member sha256 removed",
            lambda: bundle_case(p, "sha", lambda x: x["members"][0].pop("sha256"), True, "sha256"),
        ),  # fmt: skip
        (
            "bundle.json member path outside",
            lambda: bundle_case(
                p, "path", lambda x: x["members"][0].update(file="../run/best.safetensors"), True, "inside the bundle"
            ),
        ),  # fmt: skip
        (
            "bundle.json unknown normalization",
            lambda: bundle_case(
                p, "norm", lambda x: x["members"][0].update(normalization="zscore"), True, "normalization"
            ),
        ),  # fmt: skip
        (
            "bundle.json manifest checksum removed",
            lambda: bundle_case(p, "nosum", lambda x: x.pop("manifest_sha256"), False, "manifest_sha256"),
        ),  # fmt: skip
        ("mask cache: truncated entry", cache_broken),
        ("resume state with a flipped bit", state_flip),
        ("data check without a dataset", lambda: one_line(*call(["data", "check"])[::2], needle="--data")),
        (
            "data check on a multi-page TIFF",
            lambda: (
                "3 pages" in call(["data", "check", "--data", str(t / "stackds")])[1] if _stack_dataset(p) else False
            ),
        ),  # fmt: skip
        (
            "synth --test-small > --test",
            lambda: one_line(
                *call(["synth", "--out", str(t / "syn"), "--test", "1", "--test-small", "2"])[::2],
                needle="--test-small",
            ),
        ),
        (
            "old spelling evaluate --gt still works",
            lambda: (
                call(["evaluate", "--pred", str(t / "none"), "--gt", d])[0] == 2
                and "--data is required" not in call(["evaluate", "--pred", str(t / "none"), "--gt", d])[2]
            ),
        ),
        ("every --help shows an example", help_all),
    ]


def cases(p: dict[str, Path]) -> list[tuple[str, Callable[[], bool]]]:
    return predict_cases(p) + pipeline_cases(p)


def _stack_dataset(p: dict[str, Path]) -> bool:
    import shutil

    import tifffile

    root = p["tmp"] / "stackds"
    shutil.copytree(p["data"], root)
    first = root / "train" / "images" / "0_0000_1.png"
    first.unlink()
    tifffile.imwrite(first.with_suffix(".tif"), np.zeros((3, 32, 32), np.uint8), photometric="minisblack")
    mask = root / "train" / "GT1_full" / "0_0000_1.png"
    tifffile.imwrite(mask.with_suffix(".tif"), np.zeros((32, 32), np.uint8))
    mask.unlink()
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print every case, not only the failed ones")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spermseg-probe-") as tmp:
        paths = setup(Path(tmp))
        held = 0
        all_cases = cases(paths)
        for name, check in all_cases:
            try:
                ok = bool(check())
            except Exception as exc:  # noqa: BLE001 - a probe that crashes has failed
                ok = False
                name += f" ({type(exc).__name__}: {exc})"
            held += ok
            if args.verbose or not ok:
                print(f"{'held  ' if ok else 'FAILED'} {name}")
    print(f"held {held}/{len(all_cases)}, failed {len(all_cases) - held}")
    return 0 if held == len(all_cases) else 1


if __name__ == "__main__":
    sys.exit(main())
