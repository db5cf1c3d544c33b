"""The napari plugin is optional: spermseg's core and the plugin's Qt-free modules import neither Qt nor napari."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "magicgui", "superqt", "npe2")


def test_core_and_plugin_library_import_no_qt_or_napari() -> None:
    code = (
        "import sys\n"
        "import spermseg, spermseg.cli, spermseg.napari\n"
        "import spermseg.napari.layers, spermseg.napari.reader, spermseg.napari.sample\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI!r})\n"
        "print(','.join(bad))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported GUI modules: {done.stdout.strip()}"
