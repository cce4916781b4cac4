"""detector — subscribes to ``frames``, publishes ``faces``.

Works on the newest frame only (older waiting frames are dropped, so it never falls behind
the camera). Finds faces with dlib's HOG detector on a downscaled copy, takes the largest as
the visitor, and publishes every box plus the visitor's aligned 150x150 chip.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actors import runtime, vision
from messages import Faces, Frame


def find_visitor(rgb: np.ndarray, scale: float, upsample: int, min_face_px: int) -> tuple[list[vision.Box], int, bytes]:
    """All face boxes, the index of the visitor's (-1: none) and the visitor's chip bytes."""
    boxes = vision.detect(rgb, scale=scale, upsample=upsample, min_face_px=min_face_px)
    visitor = vision.largest(boxes)
    chip = vision.face_chip(rgb, boxes[visitor]).tobytes() if visitor >= 0 else b""
    return boxes, visitor, chip


class Detector(runtime.Actor):
    ROLE = "detector"
    RECEIVES = ("frames",)
    SENDS = ("faces",)
    DRAIN = ("frames",)

    def on_start(self) -> None:
        vision.load_models()
        self.log.info("using %s", vision.dlib_description())

    def handle(self, msg: Frame) -> list[Any]:
        rgb = np.frombuffer(msg.pixels, np.uint8).reshape(msg.height_px, msg.width_px, 3)
        d = self.cfg["detector"]
        boxes, visitor, chip = find_visitor(rgb, d["scale"], d["upsample"], d["min_face_px"])
        self.stats["faces.with_visitor" if visitor >= 0 else "faces.empty"] += 1
        return [
            Faces(
                self.header(msg.header.frame_id),
                msg.width_px,
                msg.height_px,
                msg.header.t_ns,
                [list(b) for b in boxes],
                visitor,
                chip,
            )
        ]


if __name__ == "__main__":
    raise SystemExit(runtime.main(Detector))
