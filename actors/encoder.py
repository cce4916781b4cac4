"""encoder — pulls ``chips`` (FaceJob), pushes ``descriptors`` (Encoded).

Turns one aligned 150x150 chip into the 128-D dlib descriptor (``encoder.jitter`` network
passes). The detector pushes each job to exactly one encoder, so several encoder processes
(``honcho start -c encoder=2``) share the load; the detector puts their answers back in order
and publishes the queries. A chip of the wrong size is counted and dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import faces
from actors import runtime
from messages import CHIP_PX, Encoded, FaceJob


class Encoder(runtime.Actor):
    ROLE = "encoder"
    RECEIVES = ("chips",)
    SENDS = ("descriptors",)

    def on_start(self) -> None:
        faces.load_models()
        self.log.info("using %s", faces.dlib_description())

    def on_scrub(self) -> None:
        """dlib's network keeps its last activations (the last descriptor among them): overwrite them."""
        faces.describe(np.zeros((CHIP_PX, CHIP_PX, 3), np.uint8), self.cfg["encoder"]["jitter"])

    def handle(self, msg: FaceJob) -> list[Any]:
        if len(msg.chip) != CHIP_PX * CHIP_PX * 3:
            self.stats["chips.malformed"] += 1
            self.log.warning("dropped job %d: chip of %d bytes, expected %d", msg.job_id, len(msg.chip), CHIP_PX**2 * 3)
            return []
        chip = np.frombuffer(msg.chip, np.uint8).reshape(CHIP_PX, CHIP_PX, 3)
        descriptor = faces.describe(chip, self.cfg["encoder"]["jitter"])
        return [
            Encoded(
                self.header(msg.header.frame_id),
                msg.job_id,
                msg.captured_ns,
                msg.track_id,
                descriptor.astype("<f4").tobytes(),
            )
        ]


if __name__ == "__main__":
    raise SystemExit(runtime.main(Encoder))
