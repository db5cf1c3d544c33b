"""Headless screenshot of the napari "Segment sperm" widget on one image (docs/napari.md).

Opens the image in napari (OpenGL needs an X server: run it under ``xvfb-run -a``, or with DISPLAY set), runs the
widget with the given model, selects one row of the per-sperm table and saves the whole window.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/napari_screenshot.py IMAGE.png --model RUN_DIR \
        --out docs/figures/napari_widget.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Make the screenshot; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="image file to open (PNG/TIFF)")
    parser.add_argument("--model", required=True, help="bundle or run directory, or .onnx file")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/napari_widget.png"), help="PNG to write")
    parser.add_argument("--pixel-size", type=float, default=0.0, help="micrometres per pixel (0: unknown)")
    parser.add_argument("--row", type=int, default=0, help="table row to select (highlights that sperm)")
    parser.add_argument("--only-selected", action="store_true", help="show only the selected sperm's label")
    parser.add_argument("--size", type=int, nargs=2, default=(1500, 820), metavar=("W", "H"), help="window size")
    parser.add_argument("--colors", type=int, default=128, help="palette colours of the PNG (keeps it small)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")  # Qt 6's offscreen platform has no OpenGL for the canvas
    if not os.environ.get("DISPLAY"):
        print("napari_screenshot: error: no X display for OpenGL; run it under 'xvfb-run -a'", file=sys.stderr)
        return 2

    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from spermseg.napari.widget import SegmentSpermWidget

    viewer = napari.Viewer(show=True, title="spermseg - Segment sperm")
    viewer.window._qt_window.resize(*args.size)
    viewer.open(str(args.image), name=args.image.stem)
    widget = SegmentSpermWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment sperm", area="right")
    widget.model_edit.setText(str(args.model))
    if args.pixel_size:
        widget.pixel_size.setValue(args.pixel_size)
    start = time.perf_counter()
    widget.run()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.05)
    print(f"{widget.status.text()} in {time.perf_counter() - start:.1f} s")
    if not widget.rows():
        print(f"napari_screenshot: error: no table ({widget.status.text()})", file=sys.stderr)
        return 1
    widget.select_row(min(args.row, len(widget.rows()) - 1))
    viewer.layers.selection.active = widget.table_layer
    widget.table_layer.show_selected_label = args.only_selected  # default: every sperm, the row still selected
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(shot[..., :3]).quantize(colors=args.colors).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB, {shot.shape[1]}x{shot.shape[0]})")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
