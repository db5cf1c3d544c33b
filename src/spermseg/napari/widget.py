"""The "Segment sperm" dock widget (the only module of the plugin that imports Qt and napari).

Choose an image layer (2-D, or a (T, H, W) time series), a model (``builtin`` when this spermseg ships one, a
bundle or run directory, a checkpoint, an ``.onnx`` file), threshold (default: the model's), device, TTA, pixel
size and frame rate; **Run** calls :func:`spermseg.napari.layers.segment_layers` in a napari worker thread with a
progress bar (**Cancel** stops it between two steps) and adds its layers beside the image. The per-sperm table
(or, for a stack, the kinematics table) docks below; clicking a row selects that sperm's label (and, for tracks,
jumps to its first frame); **Export CSV** writes the table. Selecting any Labels layer that carries a spermseg
table (also one opened by the reader) shows its table.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from spermseg.napari import _core
from spermseg.napari.layers import META_KEY, Cancelled, LayerDataTuple, segment_layers

if TYPE_CHECKING:  # pragma: no cover
    import napari

DEVICES = ("auto", "cpu", "cuda")
TABLE_DIGITS = 3  # shown in the dock; the CSV export keeps every digit


class _Progress(QObject):
    """Carries progress from the worker thread to the GUI thread (a queued Qt signal)."""

    changed = Signal(int, int, str)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.{TABLE_DIGITS}f}".rstrip("0").rstrip(".")
    return "" if value is None else str(value)


class SegmentSpermWidget(QWidget):
    """Dock widget: segment the chosen image layer and show the per-sperm (or per-track) table."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.table_layer: Any = None
        self._cancel = threading.Event()
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._refresh_layers()

    # -- layout ---------------------------------------------------------------------------------------------------

    def _build(self) -> None:
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self._prefill_calibration)
        form.addRow("image", self.image_combo)
        # 'builtin' is offered (prefilled) only when this installation has the built-in weights
        has_builtin = _core.builtin_model_path() is not None
        self.model_edit = QLineEdit(_core.BUILTIN if has_builtin else "")
        hint = "bundle or run directory, or .onnx file"
        self.model_edit.setPlaceholderText(f"builtin, {hint}" if has_builtin else hint)
        browse_dir, browse_file = QPushButton("dir..."), QPushButton("file...")
        browse_dir.clicked.connect(lambda: self._browse(directory=True))
        browse_file.clicked.connect(lambda: self._browse(directory=False))
        row = QHBoxLayout()
        for w in (self.model_edit, browse_dir, browse_file):
            row.addWidget(w)
        form.addRow("model", row)
        self.threshold = self._spin(-0.01, 1.0, 0.05, 2, "model's")
        form.addRow("threshold", self.threshold)
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)  # cuda:N
        self.device_combo.addItems(DEVICES)
        form.addRow("device", self.device_combo)
        self.tta_check = QCheckBox("average over flips (4x slower)")
        form.addRow("TTA", self.tta_check)
        self.pixel_size = self._spin(0.0, 100.0, 0.01, 4, "unknown")
        form.addRow("pixel size (um)", self.pixel_size)
        self.fps = self._spin(0.0, 10000.0, 1.0, 2, "unknown")
        form.addRow("fps (stacks)", self.fps)
        self.run_button, self.cancel_button = QPushButton("Run"), QPushButton("Cancel")
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table_label = QLabel("no table")
        self.table = QTableWidget()
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setSelectionMode(QTableWidget.SingleSelection)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.export_button = QPushButton("Export CSV...")
        self.export_button.clicked.connect(lambda: self.export_csv())
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table_label)
        layout.addWidget(self.table, stretch=1)
        layout.addWidget(self.export_button)

    @staticmethod
    def _spin(low: float, high: float, step: float, decimals: int, special: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setDecimals(decimals)
        spin.setSingleStep(step)
        spin.setSpecialValueText(special)  # shown at the minimum: "use the default" / "unknown"
        spin.setValue(low)
        return spin

    def _browse(self, directory: bool) -> None:
        if directory:
            path = QFileDialog.getExistingDirectory(self, "bundle or run directory")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "model file", "", "ONNX or checkpoint (*.onnx *.json)")
        if path:
            self.model_edit.setText(path)

    # -- layers ---------------------------------------------------------------------------------------------------

    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, *_: Any) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if current not in names:
            self._prefill_calibration(self.image_combo.currentText())

    def _prefill_calibration(self, name: str) -> None:
        """Fill an empty pixel size / fps from the layer's ``metadata["spermseg"]`` (sample data, reader)."""
        if not name or name not in self.viewer.layers:
            return
        meta = self.viewer.layers[name].metadata.get(META_KEY) or {}
        for key, spin in (("pixel_size_um", self.pixel_size), ("fps", self.fps)):
            if meta.get(key) and spin.value() <= spin.minimum():
                spin.setValue(float(meta[key]))

    def selected_image(self) -> Any:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    # -- running --------------------------------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`segment_layers` set in the form."""
        thr = self.threshold.value()
        return {
            "model": self.model_edit.text().strip(),
            "threshold": None if thr <= self.threshold.minimum() else float(thr),
            "device": self.device_combo.currentText().strip() or "auto",
            "tta": self.tta_check.isChecked(),
            "pixel_size_um": self.pixel_size.value() or None,
            "fps": self.fps.value() or None,
        }

    def run(self) -> Any:
        """Start the segmentation of the chosen layer in a worker thread; returns the worker (None if refused)."""
        from napari.qt.threading import thread_worker

        layer = self.selected_image()
        if layer is None:
            self.status.setText("no image layer: open an image (or File > Open Sample > spermseg) first")
            return None
        if self.worker is not None:
            return None
        data = layer.data[0] if layer.multiscale else layer.data  # a pyramid: its full-resolution level
        data, rgb, name = np.asarray(data), bool(layer.rgb), layer.name
        opts = self.options()
        self._cancel.clear()

        def report(done: int, total: int, stage: str) -> None:
            if self._cancel.is_set():
                raise Cancelled()
            self._progress.changed.emit(done, total, stage)

        @thread_worker(ignore_errors=True)  # errors are shown by _on_error, not re-raised in the GUI thread
        def work() -> list[LayerDataTuple]:
            return segment_layers(data, rgb=rgb, name=name, progress=report, **opts)

        self.worker = work()
        self.worker.returned.connect(lambda result: self._add_layers(result, layer))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)  # busy until the first report
        self.status.setText(f"segmenting {name} ...")
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        """Stop the running segmentation at its next step."""
        self._cancel.set()
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelling ...")

    def _on_progress(self, done: int, total: int, stage: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.status.setText(f"{stage} ({done}/{total})")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.status.setText("cancelled")
            return
        self.status.setText(f"error: {exc}")
        try:
            from napari.utils.notifications import show_error

            show_error(f"Segment sperm: {exc}")
        except Exception:  # noqa: BLE001 - a notification must never hide the message above
            pass

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)

    def _add_layers(self, result: list[LayerDataTuple], source: Any) -> None:
        """Add (or replace, on a rerun) the result layers, aligned with the source image; show the table."""
        from napari.layers import Layer

        table_layer = None
        for data, meta, kind in result:
            meta = {**meta, "scale": source.scale, "translate": source.translate}  # the source's ndim = ours
            if meta["name"] in self.viewer.layers:
                self.viewer.layers.remove(meta["name"])
            layer = self.viewer.add_layer(Layer.create(data, meta, kind))
            if kind == "labels" and META_KEY in layer.metadata:
                table_layer = layer
        self.status.setText(f"done: {len(result)} layers" + (f", {len(self.rows())} rows" if table_layer else ""))
        if table_layer is not None:
            self.show_table(table_layer)
            self.viewer.layers.selection.active = table_layer

    # -- the table ------------------------------------------------------------------------------------------------

    def _on_active_layer(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and META_KEY in getattr(layer, "metadata", {}) and "rows" in layer.metadata[META_KEY]:
            self.show_table(layer)

    def table_meta(self) -> dict[str, Any]:
        return self.table_layer.metadata[META_KEY] if self.table_layer is not None else {}

    def rows(self) -> list[dict[str, Any]]:
        """The rows of the shown table (the layer's ``sperm.csv`` / ``kinematics.csv`` rows)."""
        return list(self.table_meta().get("rows", []))

    def show_table(self, layer: Any) -> None:
        """Show the table of a Labels layer that carries one."""
        self.table_layer = layer
        meta = self.table_meta()
        id_column = meta.get("id_column")
        columns = [c for c in [id_column] if c] + [c for c in meta.get("columns", []) if c != id_column]  # id first
        rows = self.rows()
        self.table.blockSignals(True)
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels(columns)
        for i, row in enumerate(rows):
            for j, col in enumerate(columns):
                item = QTableWidgetItem(_cell(row.get(col)))
                item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                self.table.setItem(i, j, item)
        self.table.blockSignals(False)
        what = "sperm" if meta.get("kind") == "sperm" else "tracks"
        self.table_label.setText(f"{layer.name}: {len(rows)} {what}")

    def select_row(self, index: int) -> None:
        """Select table row ``index`` (as a click does)."""
        self.table.selectRow(index)

    def _on_row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or self.table_layer is None:
            return
        row = self.rows()[rows[0].row()]
        meta = self.table_meta()
        label = int(row[meta["id_column"]])
        layer = self.table_layer
        layer.selected_label = label
        layer.show_selected_label = True
        frame = row.get("frame")
        if meta.get("kind") == "kinematics":
            first = [r for r in meta.get("tracks", []) if int(r["track_id"]) == label]
            frame = min(int(r["frame"]) for r in first) if first else None
        if frame is not None and layer.ndim == 3:
            self.viewer.dims.set_current_step(0, int(frame))

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Write the shown table as CSV (asks for the file when ``path`` is None); returns the path written."""
        if self.table_layer is None:
            self.status.setText("no table to export: run a segmentation or select a spermseg labels layer")
            return None
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(self, "export table", f"{self.table_layer.name}.csv", "CSV (*.csv)")
            if not chosen:
                return None
            path = chosen
        _core.write_csv(Path(path), self.table_meta()["columns"], self.rows())
        self.status.setText(f"wrote {path}")
        return Path(path)
