"""button — receives ``session`` (the window's session state); sends ``presses`` and ``button_status``.

The physical illuminated print button, as in the original installation: lit when the visitor's
best match is under the threshold, pulsing while the receipt prints, off otherwise. A press goes
to the display as a :class:`~messages.ButtonPress` and the display handles it exactly as a touch
of its own print button: the same print job on the same REQ socket to the printer, the same rules
(one job at a time, one receipt per visitor). So the light follows what the window says
(``session``: its phase and whether its print button is lit), and the button never talks to the
printer itself.

``button.backend`` chooses the device (actors/button/devices.py):

- ``serial``: an Arduino-style button on ``button.serial_port`` speaking a short line protocol
  (``PRESS``, ``HELLO``; ``LED ON|OFF|PULSE``; actors/button/logic.py, docs/BUTTON.md);
- ``gpio``: a button and its LED on two GPIO pins (gpiozero);
- ``key``: a USB button that types a key; the window takes the key itself (ui_kivy/app.py) and
  the light is only on screen, so this actor just says so;
- ``none`` (the default): no button. The actor still runs, idle, so the Procfile is the same on
  every kiosk (honcho stops the whole graph when one line exits).

A device that can't be opened, or goes away mid-session, is reported on ``button_status`` (the
window's alert line, the headless display's log) and looked for again after ``button.reconnect_s``,
then ever less often, up to ``button.reconnect_max_s``; the kiosk keeps working with the screen's
button meanwhile. Presses closer together than ``button.debounce_ms`` are one press. A line from
the device that isn't the protocol's is counted (``button.bad_lines``), logged and dropped.
Nothing about the visitor passes through here.
"""

from __future__ import annotations

import contextlib
from typing import Any

from actors import runtime
from actors.button.devices import Device, DeviceMissing, GpioDevice, SerialDevice
from actors.button.logic import NS, OFF, Backoff, Debounce, hello_problem, light_for
from messages import ButtonPress, ButtonStatus, SessionState

STATUS_EVERY_S = 1.0
DEVICE_POLL_MS = 20.0  # how often an open device is read: a press reaches the display within this
BAD_LINE_LOG_EVERY_S = 10.0  # a device sending noise is logged at most this often (always counted)


def make_device(button: dict[str, Any]) -> Device | None:
    """The configured device, not opened yet (None: no device for this actor to drive)."""
    if button["backend"] == "serial":
        return SerialDevice(button["serial_port"], button["serial_baud"])
    if button["backend"] == "gpio":
        return GpioDevice(button["gpio_button_pin"], button["gpio_led_pin"], button["gpio_pull_up"])
    return None


class Button(runtime.Actor):
    ROLE = "button"
    RECEIVES = ("session",)
    SENDS = ("presses", "button_status")
    DRAIN = ("session",)  # only the window's latest word matters

    def on_start(self) -> None:
        b = self.cfg["button"]
        self.backend: str = b["backend"]
        self.device = make_device(b)
        self.debounce = Debounce(b["debounce_ms"] / 1000)
        self.backoff = Backoff(b["reconnect_s"], b["reconnect_max_s"])
        self.session: SessionState | None = None
        self.connected = False
        self.detail = self._idle_detail(b)
        self.light = OFF  # what the device was last told
        self.retry_ns = 0  # when to look for a missing device again
        self.refresh_ns = 0  # when to say the light again
        self.status_ns = 0  # when to publish the status again
        self.last_status: tuple = ()  # the status last published, without its header
        self.bad_logged_ns: int | None = None
        self.presses = 0
        self.bad_lines = 0
        if self.device is None:
            self.log.info("no device to drive: %s", self.detail)
        else:
            self.log.info("button on %s", self.device.name)

    @staticmethod
    def _idle_detail(b: dict[str, Any]) -> str:
        if b["backend"] == "key":
            return f"a USB button typing '{b['key']}': the window takes it; the light is on screen only"
        if b["backend"] == "none":
            return "no button configured (button.backend = none): the screen's button only"
        return ""

    def handle(self, msg: SessionState) -> list[Any]:
        self.session = msg
        return []

    def next_tick_ms(self, now_ns: int) -> float:
        return DEVICE_POLL_MS if self.connected else runtime.POLL_MS

    def tick(self, now_ns: int) -> list[Any]:
        out: list[Any] = []
        if self.device is not None:
            try:
                if not self.connected and now_ns >= self.retry_ns:
                    self._connect(now_ns)
                if self.connected:
                    out += self._read(now_ns)
                    self._show(now_ns)
            except DeviceMissing as e:
                self._lost(now_ns, e)
        said = self._said()
        if said != self.last_status or now_ns >= self.status_ns:
            self.last_status = said
            self.status_ns = now_ns + int(STATUS_EVERY_S * NS)
            out.append(ButtonStatus(self.header(), *said))
        return out

    def _connect(self, now_ns: int) -> None:
        assert self.device is not None
        try:
            self.device.open()
        except DeviceMissing as e:
            self.device.close()
            delay_s = self.backoff.next_delay_s()
            self.retry_ns = now_ns + int(delay_s * NS)
            if str(e) != self.detail:  # the same reason again: said once
                self.log.warning(
                    "button %s missing: %s%s; looking again in %g s", self.device.name, e, _cause(e), delay_s
                )
            self.detail = str(e)
            self.stats["button.open_failed"] += 1
            return
        self.connected = True
        self.backoff.reset()
        self.detail = "connected; no HELLO from the device yet" if isinstance(self.device, SerialDevice) else ""
        self.refresh_ns = 0  # tell the device its light at once
        self.stats["button.connected"] += 1
        self.log.info("button %s connected", self.device.name)

    def _lost(self, now_ns: int, why: DeviceMissing) -> None:
        assert self.device is not None
        self.device.close()
        self.connected = False
        self.detail = str(why)
        delay_s = self.backoff.next_delay_s()
        self.retry_ns = now_ns + int(delay_s * NS)
        self.stats["button.lost"] += 1
        self.log.warning("button %s lost: %s%s; looking again in %g s", self.device.name, why, _cause(why), delay_s)

    def _read(self, now_ns: int) -> list[Any]:
        assert self.device is not None
        out: list[Any] = []
        for line in self.device.read():
            if line.kind == "press":
                if self.debounce.accept(now_ns):
                    self.presses += 1
                    self.stats["button.presses"] += 1
                    self.log.info("pressed (%s)", self.device.name)
                    out.append(ButtonPress(self.header(), self.device.name[:256]))  # the wire's limit
                else:
                    self.stats["button.bounced"] += 1
            elif line.kind == "hello":
                problem = hello_problem(line)
                self.detail = problem or f"connected: {line.text}"
                (self.log.warning if problem else self.log.info)("the device says %r %s", line.text, problem)
                self.refresh_ns = 0  # a device that (re)started learns its light at once
            else:
                self.bad_lines += 1
                self.stats["button.bad_lines"] += 1
                if self.bad_logged_ns is None or now_ns - self.bad_logged_ns >= BAD_LINE_LOG_EVERY_S * NS:
                    self.bad_logged_ns = now_ns
                    self.log.warning(
                        "dropped a line from the device (%s): %s (%d so far)", line.why, line.text, self.bad_lines
                    )
        return out

    def _show(self, now_ns: int) -> None:
        assert self.device is not None
        light = light_for(self.session, now_ns)
        refresh = self.device.refresh_s
        if light != self.light or now_ns >= self.refresh_ns:
            if light != self.light:
                self.log.info("light %s -> %s", self.light, light)
            self.device.show(light)
            self.light = light
            self.refresh_ns = now_ns + int(refresh * NS) if refresh is not None else 2**62

    def _said(self) -> tuple[str, str, str, str, str, int, int]:
        """The fields of the status (ButtonStatus after its header)."""
        if self.device is None:
            state, device = "off", ""
        else:
            state, device = ("connected" if self.connected else "missing"), self.device.name[:256]
        light = self.light if self.connected else OFF
        return state, self.backend, device, self.detail[:1000], light, self.presses, self.bad_lines

    def on_stop(self) -> None:
        if getattr(self, "device", None) is not None and self.connected:
            with contextlib.suppress(DeviceMissing):
                self.device.show(OFF)  # the kiosk is closing: no lit button nobody answers
            self.device.close()


def _cause(e: BaseException) -> str:
    """The library's own words behind a DeviceMissing, for the log."""
    return f" ({e.__cause__})" if e.__cause__ is not None and str(e.__cause__) else ""
