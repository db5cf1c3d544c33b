"""The output folder of ``spermseg predict``: CSV rows written whole, and the rule for a folder that holds results.

See :mod:`spermseg.inference.predict` (module docstring) for the rule; :func:`prepare_out` applies it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spermseg.errors import SpermsegError

if TYPE_CHECKING:  # pragma: no cover
    from spermseg.inference.options import PredictOptions

PREDICTION_COLUMNS = (
    "input", "frame", "height", "width", "threshold", "foreground_px", "mean_prob", "n_sperm",
    "soft_mask", "binary_mask", "overlay",
)  # fmt: skip
OUTPUT_SUFFIXES = ("_prob.png", "_prob.npy", "_mask.png", "_overlay.png", "_overlay.mp4")
LOCK_NAME = ".spermseg-predict.lock"
_CSV_NAMES = ("predictions.csv", "sperm.csv")
_FILE_COLUMNS = ("soft_mask", "binary_mask", "overlay")


def _output_names(files: Sequence[Path], taken: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """A unique output name per input: the file stem, with the parent folder prefixed where stems collide.

    Args:
        files: the inputs.
        taken: names already used in ``OUT`` by other inputs (``append``); they get a ``_N`` suffix too.
    """
    stems = [f.stem for f in files]
    out = []
    for f, stem in zip(files, stems):
        out.append(f"{f.parent.name}_{stem}" if stems.count(stem) > 1 else stem)
    used = set(taken)
    for i, name in enumerate(out):
        k, candidate = 1, name
        while candidate in used:
            k += 1
            candidate = f"{name}_{k}"
        out[i] = candidate
        used.add(candidate)
    return out


class _CsvWriter:
    """Append rows to a CSV with one ``write`` call per block of rows, so a kill never leaves half a row."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *rows: dict[str, Any]) -> None:
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        os.write(self._fd, buf.getvalue().encode("utf-8"))

    def close(self) -> None:
        os.close(self._fd)


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of an output CSV; a last line without its newline (a killed write) is dropped."""
    if not path.is_file():
        return [], []
    text = path.read_text(encoding="utf-8")
    text = text[: text.rfind("\n") + 1] if not text.endswith("\n") else text
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _sperm_columns() -> list[str]:
    from dataclasses import fields

    from spermseg.inference.morphometry import SpermMeasurement

    return ["input", "frame", *[f.name for f in fields(SpermMeasurement)]]


def _same_file(a: str | Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


def check_out_holds_no_input(inputs: Sequence[str | Path], files: Sequence[Path], out: Path) -> None:
    """Refuse an ``OUT`` that is an input folder or contains any input file (outputs must never replace inputs).

    Raises:
        SpermsegError: naming the input.
    """
    target = out.resolve()
    for item in inputs:
        if Path(item).is_dir() and Path(item).resolve() == target:
            raise SpermsegError(
                f"--out {out} is the input folder {item}: outputs would mix with (and could replace) the inputs, and "
                f"a second run would read them back as inputs; choose another --out, e.g. {Path(item).name}_pred"
            )
    for f in files:
        if target in f.resolve().parents:
            raise SpermsegError(
                f"--out {out} holds the input {f}: outputs could replace it; choose an --out outside the inputs"
            )


def _output_files_in(out: Path) -> list[Path]:
    """Files in ``OUT`` (and its video frame folders) named like this tool's outputs, or its temporary files."""
    found = []
    for folder in [out, *(d for d in out.iterdir() if d.is_dir())]:
        for p in folder.iterdir():
            if not p.is_file():
                continue
            temporary = p.name.startswith(".") and p.suffix in (".png", ".npy", ".mp4", ".avi", ".csv")
            if temporary or p.name.endswith(OUTPUT_SUFFIXES):
                found.append(p)
    return found


def _listed_files(rows: Sequence[dict[str, str]], out: Path) -> set[Path]:
    return {out / row[c] for row in rows for c in _FILE_COLUMNS if row.get(c)}


def _name_of(row: dict[str, str]) -> str:
    """The output name an earlier row used: ``NAME`` of ``NAME_prob.png`` or of ``NAME/frame_000000_prob.png``."""
    soft = Path(row.get("soft_mask") or "")
    if len(soft.parts) > 1:
        return soft.parts[0]
    stem = soft.name
    for suffix in OUTPUT_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _planned_paths(out: Path, files: Sequence[Path], names: Sequence[str], options: PredictOptions) -> list[Path]:
    from spermseg.inference.video import is_video

    soft = "_prob.png" if options.soft_format == "png16" else "_prob.npy"
    paths = []
    for f, name in zip(files, names):
        if is_video(f):
            paths += [out / name, out / f"{name}_overlay.mp4"]
        else:
            paths += [out / f"{name}{soft}", out / f"{name}_mask.png", out / f"{name}_overlay.png"]
    return paths


def prepare_out(out: Path, inputs: Sequence[str | Path], files: Sequence[Path], options: PredictOptions) -> list[str]:
    """Apply the output-folder rule (module docstring) and return one output name per input.

    With ``overwrite`` the earlier run's listed outputs are removed; with ``append`` the rows of inputs predicted
    again are dropped with their files. Both also drop rows whose files are missing and remove output files no
    row lists (what a killed run leaves), then rewrite the CSVs atomically, so they agree with the folder before
    this run adds to them. Call it while holding the folder's lock.

    Raises:
        SpermsegError: ``refuse`` and ``OUT`` holds results, or a file this run would replace.
    """
    from spermseg.utils.atomic import atomic_write_text

    columns = {"predictions.csv": list(PREDICTION_COLUMNS), "sperm.csv": _sperm_columns()}
    has_results = any((out / n).is_file() for n in _CSV_NAMES)
    if not has_results:
        names = _output_names(files)
        clash = next((p for p in _planned_paths(out, files, names, options) if p.exists()), None)
        if clash is not None and options.existing == "refuse":
            raise SpermsegError(
                f"--out {out} already holds {clash.name}, which this run would replace; choose an empty --out "
                "(or pass --overwrite to replace it)"
            )
        kept: list[dict[str, str]] = []
        kept_sperm: list[dict[str, str]] = []
    else:
        if options.existing == "refuse":
            raise SpermsegError(
                f"--out {out} already holds the results of an earlier run (predictions.csv); pass --overwrite to "
                "replace them, --append to add to them, or choose another --out"
            )
        header, rows = read_csv_rows(out / "predictions.csv")
        sperm_header, sperm_rows = read_csv_rows(out / "sperm.csv")
        if options.existing == "append" and (
            (header and header != columns["predictions.csv"]) or (sperm_header and sperm_header != columns["sperm.csv"])
        ):
            raise SpermsegError(
                f"the CSVs in --out {out} have other columns (another spermseg version); use --overwrite or another "
                "--out"
            )
        kept = []
        if options.existing == "append":
            again = {f.resolve() for f in files}
            for row in rows:
                files_ok = all((out / row[c]).is_file() for c in _FILE_COLUMNS if row.get(c))
                if files_ok and not any(_same_file(row["input"], f) for f in again):
                    kept.append(row)
        frames = {(r["input"], r["frame"]) for r in kept}
        kept_sperm = [r for r in sperm_rows if (r.get("input"), r.get("frame")) in frames]
        names = _output_names(files, taken={_name_of(r) for r in kept})
    if has_results or options.existing != "refuse":
        # Remove every output file that no kept row lists: the earlier run's (overwrite), those of inputs predicted
        # again (append), and what an interrupted run left behind.
        keep = _listed_files(kept, out)
        for path in _output_files_in(out):
            if path not in keep:
                path.unlink(missing_ok=True)
        for folder in (d for d in out.iterdir() if d.is_dir()):
            if not any(folder.iterdir()):
                folder.rmdir()
    atomic_write_text(out / "predictions.csv", _csv_text(columns["predictions.csv"], kept))
    atomic_write_text(out / "sperm.csv", _csv_text(columns["sperm.csv"], kept_sperm))
    return names
