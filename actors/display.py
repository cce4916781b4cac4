"""display — subscribes to ``frames``, ``faces``, ``matches``, ``camera_status`` and ``button_status``;
sends ``print`` requests.

The headless display: no window; it prints every result as one JSON line on stdout and logs the
camera's own words when it is lost and when it is back (``camera_status``), and the print button's
when its device is missing and when it is back (``button_status``). It has no session, so it
tells the print button nothing and prints nothing on its presses: the button stays dark. The display process
(``python -m ui_kivy``, the Procfile's ``display`` line) runs this actor when ``display.headless``
is set (or ``MEGAPIXELS_HEADLESS=1``), and the Kivy window of ``ui_kivy`` otherwise, which shows
the same texts on its alert line.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from actors import runtime
from actors.button.logic import button_alert
from messages import ButtonStatus, CameraStatus, Matches


def result_line(msg: Matches) -> str:
    """One JSON line per result list, as printed by the headless display: strict JSON, no NaN.

    The codec lets no NaN or infinite number through; should one come anyway, ``json.dumps``
    raises, and the run loop counts (``handle.failed``) and skips the message.
    """
    return json.dumps(
        {
            "query_id": msg.query_id,
            "frame_id": msg.header.frame_id,
            "partial": msg.partial,
            "missing_shards": msg.missing_shards,
            "latency_ms": round(msg.latency_ms, 1),
            "results": [dataclasses.asdict(r) for r in msg.results],
            "lookalikes": msg.lookalikes,
        },
        allow_nan=False,
    )


def camera_alert(status: CameraStatus | None, reconnect_s: float) -> str:
    """What the operator reads about the camera, in its own words ('' unless it says it is lost)."""
    if status is None or status.state != "lost":
        return ""
    why = f": {status.detail}" if status.detail else ""
    return f"camera lost: {status.source}{why}; reconnecting every {reconnect_s:g} s"


class HeadlessDisplay(runtime.Actor):
    ROLE = "display"
    RECEIVES = ("matches", "camera_status", "button_status")

    def on_start(self) -> None:
        self.camera_state = ""
        self.button_state = ""

    def handle(self, msg: Matches | CameraStatus | ButtonStatus) -> list[Any]:
        if isinstance(msg, CameraStatus):
            self.on_camera(msg)
        elif isinstance(msg, ButtonStatus):
            self.on_button(msg)
        else:
            print(result_line(msg), flush=True)
        return []

    def on_camera(self, msg: CameraStatus) -> None:
        """Log each change of the camera's state (statuses repeat every second)."""
        if msg.state == self.camera_state:
            return
        if msg.state == "lost":
            self.log.warning("%s", camera_alert(msg, self.cfg["camera"]["reconnect_s"]))
        else:
            self.log.info("camera %s: %s%s", msg.state, msg.source, f" ({msg.detail})" if msg.detail else "")
        self.camera_state = msg.state

    def on_button(self, msg: ButtonStatus) -> None:
        """Log each change of the print button's state (statuses repeat every second)."""
        if msg.state == self.button_state:
            return
        if msg.state == "missing":
            self.log.warning("%s", button_alert(msg))
        else:
            self.log.info("print button %s: %s %s", msg.state, msg.device or msg.backend, msg.detail)
        self.button_state = msg.state


if __name__ == "__main__":
    raise SystemExit(runtime.main(HeadlessDisplay))
