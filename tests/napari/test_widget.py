"""The "Segment sperm" widget in a real napari viewer (hidden, on Xvfb): layers, table, row selection, CSV, manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari plugin needs pip install '.[napari]'")
pytest.importorskip("pytestqt", reason="the widget tests need pytest-qt (pip install '.[dev]')")

from spermseg.napari.layers import META_KEY  # noqa: E402
from spermseg.utils.table import read_rows_csv  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[2] / "src" / "spermseg" / "napari" / "napari.yaml"
TIMEOUT_MS = 240_000  # the shared 2-core CI machine; the run itself takes a few seconds


def _widget(viewer, model: Path):  # noqa: ANN202 - SegmentSpermWidget
    from spermseg.napari.widget import SegmentSpermWidget

    widget = SegmentSpermWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment sperm")
    widget.model_edit.setText(str(model))
    return widget


def _run(qtbot, widget) -> None:
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)  # _on_finished (connected before start)


def test_widget_segments_a_frame_and_its_table_selects_and_exports(viewer, qtbot, dark_model, frames, tmp_path) -> None:
    image = frames[0][0]
    viewer.add_image(image, name="f", scale=(0.5, 0.5))
    widget = _widget(viewer, dark_model)
    widget.pixel_size.setValue(0.3)
    _run(qtbot, widget)
    assert widget.status.text().startswith("done"), widget.status.text()
    assert [layer.name for layer in viewer.layers] == ["f", "f sperm prob", "f sperm"]
    prob, sperm = viewer.layers["f sperm prob"], viewer.layers["f sperm"]
    assert not prob.visible and tuple(sperm.scale) == (0.5, 0.5)  # aligned with the image
    rows = widget.rows()
    ids = sorted(set(np.unique(sperm.data).tolist()) - {0})
    assert sorted(int(r["sperm_id"]) for r in rows) == ids and widget.table.rowCount() == len(ids) >= 2
    assert widget.table_layer is sperm and rows[0]["area_um2"] == pytest.approx(rows[0]["area"] * 0.09)
    widget.select_row(1)  # as a click on the second row
    assert sperm.selected_label == int(rows[1]["sperm_id"]) and sperm.show_selected_label
    written = widget.export_csv(tmp_path / "table.csv")
    back = read_rows_csv(written)
    assert [r["sperm_id"] for r in back] == [r["sperm_id"] for r in rows]
    assert back[0]["tail_length"] == pytest.approx(rows[0]["tail_length"], abs=1e-6)
    _run(qtbot, widget)  # a rerun replaces its layers instead of adding copies
    assert [layer.name for layer in viewer.layers] == ["f", "f sperm prob", "f sperm"]


def test_widget_tracks_a_5_frame_stack(viewer, qtbot, dark_model, frames) -> None:
    stack, cal = frames
    viewer.add_image(stack, name="v", metadata={META_KEY: cal})  # the calibration as the sample data carry it
    widget = _widget(viewer, dark_model)
    assert widget.pixel_size.value() == pytest.approx(cal["pixel_size_um"], abs=1e-4)  # the spin box keeps 4 decimals
    assert widget.fps.value() == pytest.approx(25.0)
    _run(qtbot, widget)
    assert widget.status.text().startswith("done"), widget.status.text()
    assert [layer.name for layer in viewer.layers] == ["v", "v sperm prob", "v sperm", "v tracks"]
    tracks, sperm = viewer.layers["v tracks"], viewer.layers["v sperm"]
    assert sperm.data.shape == stack.shape and tracks.data.shape[1] == 4
    rows = widget.rows()
    assert widget.table_meta()["kind"] == "kinematics"
    assert {int(r["track_id"]) for r in rows} == set(np.unique(sperm.data).tolist()) - {0}
    last = len(rows) - 1
    widget.select_row(last)
    tid = int(rows[last]["track_id"])
    first = min(int(f) for t, f in tracks.data[:, :2] if int(t) == tid)
    assert sperm.selected_label == tid and viewer.dims.current_step[0] == first


def test_widget_cancel_and_errors(viewer, qtbot, dark_model, frames) -> None:
    stack, cal = frames
    viewer.add_image(stack, name="v")
    widget = _widget(viewer, dark_model)
    widget.pixel_size.setValue(cal["pixel_size_um"])
    widget.fps.setValue(cal["fps"])
    assert widget.run() is not None
    widget.cancel()  # before the first step: nothing is added
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert widget.status.text() == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["v"]
    widget.model_edit.setText("")
    _run(qtbot, widget)
    assert widget.status.text().startswith("error: no model chosen")
    assert widget.run_button.isEnabled() and [layer.name for layer in viewer.layers] == ["v"]


@pytest.fixture
def plugin_viewer(npe2pm, _x_display, request):  # noqa: ANN001, ANN201
    """A viewer whose (mocked, test-only) npe2 plugin manager knows spermseg's manifest, registered before it."""
    import npe2

    if _x_display is None:
        pytest.skip("no X display for Qt's OpenGL and no Xvfb to start one: run 'make system-deps' (installs xvfb)")
    npe2pm.register(npe2.PluginManifest.from_file(MANIFEST))
    return request.getfixturevalue("make_napari_viewer")()  # after the skip (see conftest.viewer)


def test_manifest_contributes_widget_reader_and_samples(plugin_viewer) -> None:
    from spermseg.napari import sample

    viewer = plugin_viewer
    small = sample.synthetic_frame(size=128)
    sample_px = small[0][1]["metadata"][META_KEY]["pixel_size_um"]
    assert small[0][0].shape == (128, 128) and 0.05 < sample_px < 0.5  # drawn per video by the generator
    viewer.open_sample("spermseg", "frame")
    assert viewer.layers[-1].name == "synthetic sperm" and viewer.layers[-1].data.shape == (512, 512)
    _, widget = viewer.window.add_plugin_dock_widget("spermseg", "Segment sperm")
    assert widget.image_combo.currentText() == "synthetic sperm"
    big_px = viewer.layers[-1].metadata[META_KEY]["pixel_size_um"]
    assert widget.pixel_size.value() == pytest.approx(big_px, abs=1e-4)  # from the sample's metadata
    stack = sample.synthetic_stack(n_frames=3, size=96)[0][0]
    assert stack.shape == (3, 96, 96) and not np.array_equal(stack[0], stack[2])  # the sperm move
