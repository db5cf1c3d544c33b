"""Top-level CLI behaviour and the shared utilities."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spermseg import __version__
from spermseg.cli import COMMANDS, main
from spermseg.utils.atomic import atomic_path, atomic_write_json


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_nonzero() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_python_dash_m_works() -> None:
    done = subprocess.run([sys.executable, "-m", "spermseg", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in done.stdout


def test_every_command_module_exists_and_has_the_interface() -> None:
    import importlib

    for name, (module, _help) in COMMANDS.items():
        mod = importlib.import_module(f"spermseg.cli.{module}")
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_import_is_light() -> None:
    heavy = "('torch', 'scipy', 'skimage', 'cv2', 'matplotlib')"
    code = f"import sys, spermseg, spermseg.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    atomic_write_json(target, {"a": 1.0, "b": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1.0, "b": None}
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert json.loads(target.read_text())["a"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert target.stat().st_mode & 0o044 == 0o044  # readable by others, like a file made with open()


def test_row_writer_streams_the_same_csv_as_write_rows_csv(tmp_path: Path) -> None:
    """RowWriter (spermseg track's tracks.csv) writes byte for byte what write_rows_csv writes, and nothing
    appears at the path before close (a reader never sees half a table)."""
    from spermseg.utils.table import RowWriter, write_rows_csv

    cols = ("a", "b", "c")
    rows = [{"a": 1, "b": 0.5, "c": float("nan")}, {"a": 2, "b": 1 / 3}, {"a": 3, "b": -0.0, "c": "x"}]
    write_rows_csv(tmp_path / "whole.csv", cols, rows)
    w = RowWriter(tmp_path / "streamed.csv", cols)
    w.write(rows[:1])
    w.write(rows[1:])
    assert not (tmp_path / "streamed.csv").exists()
    w.close()
    w.close()
    assert (tmp_path / "streamed.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert w.n_rows == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["streamed.csv", "whole.csv"]
