"""encoder — connects to ``chips`` (DEALER): receives FaceJob, sends Encoded and Credit.

Turns one aligned 150x150 chip into the 128-D dlib descriptor (``encoder.jitter`` network
passes). It announces how many jobs it takes at once (``Credit``, ``encoder.credits``) when its
connection opens (at start, and after the privacy scrub reopens it), and again whenever it has
sent nothing for a fifth of ``encoder.liveness_s``, so the detector knows it is alive and a
restarted detector learns of it. The detector sends it a chip only while it has a free credit,
and each descriptor it sends back frees one; so several encoder processes (``honcho start -c
encoder=2``) share the load, none gets more than it can take, and the detector puts their answers
back in order. A chip of the wrong size is counted and answered with an empty descriptor (the
detector gives that job up and the credit comes free).
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

import faces
from actors import runtime
from messages import CHIP_PX, Credit, Encoded, FaceJob


class Encoder(runtime.Actor):
    ROLE = "encoder"
    RECEIVES = ("chips",)
    SENDS = ("chips",)

    def on_start(self) -> None:
        faces.load_models()
        self.instance = random.getrandbits(62)  # this process, whatever connections it opens
        self.heartbeat_ns = int(self.cfg["encoder"]["liveness_s"] * 1e9 / 5)
        self.sent_ns: int | None = None  # the last message sent on the current connection
        self.log.info("using %s", faces.dlib_description())

    def on_scrub(self) -> None:
        """dlib's network keeps its last activations (the last descriptor among them): overwrite them.

        The run loop reopens the connection next, so the credits are announced again on the new one.
        """
        faces.describe(np.zeros((CHIP_PX, CHIP_PX, 3), np.uint8), self.cfg["encoder"]["jitter"])
        self.sent_ns = None

    def tick(self, now_ns: int) -> list[Any]:
        if self.sent_ns is not None and now_ns - self.sent_ns < self.heartbeat_ns:
            return []
        self.sent_ns = now_ns
        return [Credit(self.header(), self.cfg["encoder"]["credits"], self.instance)]

    def handle(self, msg: FaceJob) -> list[Any]:
        descriptor = b""
        if len(msg.chip) != CHIP_PX * CHIP_PX * 3:
            self.stats["chips.malformed"] += 1
            self.log.warning("job %d: chip of %d bytes, expected %d", msg.job_id, len(msg.chip), CHIP_PX**2 * 3)
        else:
            chip = np.frombuffer(msg.chip, np.uint8).reshape(CHIP_PX, CHIP_PX, 3)
            descriptor = faces.describe(chip, self.cfg["encoder"]["jitter"]).astype("<f4").tobytes()
        self.sent_ns = time.monotonic_ns()
        return [Encoded(self.header(msg.header.frame_id), msg.job_id, msg.captured_ns, msg.track_id, descriptor)]


if __name__ == "__main__":
    raise SystemExit(runtime.main(Encoder))
