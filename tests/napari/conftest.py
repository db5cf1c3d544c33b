"""Fixtures of the napari plugin tests: an X display for Qt's OpenGL canvas, a model, synthetic frames.

napari draws its canvas with OpenGL, which Qt 6's ``offscreen`` platform does not provide (Qt 5's did, through
GLX); so the viewers run on Qt's ``xcb`` platform on a private Xvfb started for the session when no ``DISPLAY`` is
set (``make system-deps`` installs it), never shown (``show=False``). Without an X server the tests that need a
viewer skip and say why; the others (layers, reader) need neither Qt nor a display.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

_OWN_PLATFORM = "QT_QPA_PLATFORM" not in os.environ
os.environ.setdefault("QT_QPA_PLATFORM", "xcb")  # before any QApplication exists (see the module docstring)


def _no_display() -> None:
    """No X server: Qt's xcb platform would abort the process at the first QApplication (pytest-qt's ``qapp``),
    so the Qt tests that need no OpenGL run on ``offscreen`` instead and the viewer tests skip."""
    if _OWN_PLATFORM:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"


pytest.importorskip("onnxruntime", reason="the plugin tests' stand-in model is an ONNX graph (pip install '.[dev]')")

from napari_helpers import synthetic, write_dark_detector  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _x_display() -> Iterator[str | None]:
    """The X display for Qt's OpenGL: the one set, or a private Xvfb started here (None when neither exists)."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        _no_display()
        yield None
        return
    read_fd, write_fd = os.pipe()
    # -terminate: the server exits when its last client (this process's QApplication) disconnects, which is at
    # interpreter exit; killing it while Qt is still connected makes Qt exit the process with status 1
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", "1600x1200x24", "-nolisten", "tcp", "-terminate"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        number = fh.readline().strip()  # Xvfb writes its display number once it accepts connections
    if not number:
        proc.kill()
        _no_display()
        yield None
        return
    os.environ["DISPLAY"] = f":{number}"
    yield os.environ["DISPLAY"]
    if not _qt_connected():
        proc.terminate()  # no client ever connected: -terminate would never fire
        proc.wait(timeout=10)


def _qt_connected() -> bool:
    """Whether this process made a QApplication (then it holds a connection to the X server)."""
    import sys

    qt = sys.modules.get("qtpy.QtWidgets")
    return qt is not None and qt.QApplication.instance() is not None


@pytest.fixture
def viewer(_x_display: str | None, request: pytest.FixtureRequest):  # noqa: ANN201 - napari.Viewer
    """A napari viewer (never shown, on the X display); skips without one. napari's ``make_napari_viewer`` is
    requested only after that check: set up and then skipped, its teardown fails (no ``rep_call`` on the test)."""
    if _x_display is None:
        pytest.skip("no X display for Qt's OpenGL and no Xvfb to start one: run 'make system-deps' (installs xvfb)")
    return request.getfixturevalue("make_napari_viewer")()


@pytest.fixture(scope="session")
def dark_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic stand-in for a trained network (helpers.write_dark_detector), threshold 0.5."""
    return write_dark_detector(tmp_path_factory.mktemp("model") / "dark.onnx")


@pytest.fixture(scope="session")
def frames() -> tuple[np.ndarray, dict[str, float]]:
    """5 consecutive synthetic frames (5, 256, 256) uint8 and their calibration (the drawn pixel size, 25 fps)."""
    return synthetic(5)
