"""Reading `--densepose` rows back: a row's stored chart -> numpy arrays, in its box or over the frame.

A densepose/ row (pipeline.io.schema.DENSEPOSE_SCHEMA) holds the chart as detectron2 stores it: an
RGB PNG of the chart box's size whose planes are I (0 background, 1..24 the body-surface chart the
pixel shows), U*255 and V*255 (uint8, truncated), and the integer box ``chart_box_xywh`` it covers in
frame pixels. `decode_row` gives I as uint8 and U, V as float32 in [0, 1] (k/255), with the box;
`DensePoseChart.in_frame` places them in a frame-sized canvas (0 outside the box) for overlays.

    from posepipe.pipeline.io.readback import read_densepose
    from posepipe.pipeline.downstream.densepose import decode_row
    rows = read_densepose("out/demo").to_pylist()
    chart = decode_row(rows[0])          # chart.i (h, w) uint8; chart.u, chart.v (h, w) float32
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from posepipe.models.densepose import decode_iuv_png

NUM_CHARTS = 24   # I in 1..24: DensePose-COCO's body-surface charts (0: background)


@dataclass(frozen=True)
class DensePoseChart:
    """One row's chart: I (h, w) uint8, U and V (h, w) float32 in [0, 1], over box_xywh (frame pixels)."""

    video_id: str
    frame_index: int
    person_index: int
    track_id: int
    bbox_xyxy: np.ndarray          # (4,) float32: the person box DensePose ran on
    box_xywh: tuple[int, int, int, int]
    i: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def in_frame(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(I, U, V) over a (height, width) frame: the chart at its box, clipped to the frame; 0 elsewhere."""
        x, y, w, h = self.box_xywh
        canvas_i = np.zeros((height, width), np.uint8)
        canvas_u = np.zeros((height, width), np.float32)
        canvas_v = np.zeros((height, width), np.float32)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            window = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
            canvas_i[y0:y1, x0:x1] = self.i[window]
            canvas_u[y0:y1, x0:x1] = self.u[window]
            canvas_v[y0:y1, x0:x1] = self.v[window]
        return canvas_i, canvas_u, canvas_v


def decode_iuv(png: bytes) -> np.ndarray:
    """A stored chart's PNG bytes -> (3, h, w) uint8: I, U*255, V*255 (ValueError for another image)."""
    return decode_iuv_png(png)


def decode_row(row: Mapping[str, Any]) -> DensePoseChart | None:
    """A densepose/ row (a dict: pyarrow's to_pylist, Polars' rows(named=True), a pandas row) -> its chart;
    None for a row without one (detectron2 dropped its box). Checks the PNG against the row's box."""
    png = row.get("iuv_png")
    if png is None:
        return None
    iuv = decode_iuv(bytes(png))
    x, y, w, h = (int(c) for c in row["chart_box_xywh"])
    if iuv.shape[1:] != (h, w):
        raise ValueError(f"densepose row ({row.get('video_id')!r}, frame {row.get('frame_index')}, person "
                         f"{row.get('person_index')}): a {iuv.shape[2]}x{iuv.shape[1]} chart for a {w}x{h} box; "
                         "the table was changed since it was written")
    if int(iuv[0].max(initial=0)) > NUM_CHARTS:
        raise ValueError(f"densepose row: I reaches {int(iuv[0].max())}, beyond the {NUM_CHARTS} charts; not a "
                         "DensePose chart")
    return DensePoseChart(
        video_id=str(row.get("video_id", "")), frame_index=int(row.get("frame_index", -1)),
        person_index=int(row.get("person_index", -1)), track_id=int(row.get("track_id", -1)),
        bbox_xyxy=np.asarray(row.get("bbox_xyxy", (0, 0, 0, 0)), np.float32), box_xywh=(x, y, w, h),
        i=iuv[0], u=iuv[1].astype(np.float32) / 255.0, v=iuv[2].astype(np.float32) / 255.0)


__all__ = ["NUM_CHARTS", "DensePoseChart", "decode_iuv", "decode_row"]
