"""encoder — subscribes to ``faces``, publishes ``queries``.

Turns the visitor's aligned chip into a 128-D dlib descriptor and publishes it as a query for
the matchers. Works on the newest face message only; frames without a visitor are ignored.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from actors import runtime, vision
from messages import CHIP_PX, Faces, Query


class Encoder(runtime.Actor):
    ROLE = "encoder"
    RECEIVES = ("faces",)
    SENDS = ("queries",)
    DRAIN = ("faces",)

    def on_start(self) -> None:
        vision.load_models()
        self.log.info("using %s", vision.dlib_description())

    def handle(self, msg: Faces) -> list[Any]:
        if msg.visitor < 0:
            return []
        chip = np.frombuffer(msg.chip, np.uint8).reshape(CHIP_PX, CHIP_PX, 3)
        descriptor = vision.describe(chip, self.cfg["encoder"]["jitter"])
        return [
            Query(
                self.header(msg.header.frame_id),
                query_id=time.monotonic_ns(),  # unique on this machine, across encoder processes
                captured_ns=msg.captured_ns,
                k=self.cfg["search"]["top_k"],
                descriptor=descriptor.astype("<f4").tobytes(),
            )
        ]


if __name__ == "__main__":
    raise SystemExit(runtime.main(Encoder))
