"""The print button's devices: a serial line (pyserial) and a pair of GPIO pins (gpiozero).

Each device is opened, read and told its light by the actor's loop, never blocking it: the serial
port is read and written without waiting (timeout 0), and gpiozero's press callback (its own
thread, or the caller's on mock pins) only appends to a deque the loop empties. A device that
can't be opened or has gone raises :class:`DeviceMissing` with the reason the operator reads; the
actor then closes it and looks for it again later. pyserial and gpiozero are imported only when
their backend is chosen.
"""

from __future__ import annotations

import contextlib
import errno
import warnings
from collections import deque
from typing import Any, Protocol

from actors.button.logic import HELLO, OFF, ON, PULSE, DeviceLine, LineSplitter, command

PULSE_FADE_S = 0.7  # the screen's print button pulses at this pace too (ui_kivy/app.py PrintButton)
BLINK_S = 0.5  # an LED on a pin without PWM blinks instead of pulsing


class DeviceMissing(Exception):
    """The device can't be opened, or has gone; the text says why in a few words, for the operator's
    alert line, and the exception it was raised from (``__cause__``) gives the library's own words."""


def _open_problem(e: Exception) -> str:
    """A serial port's failure to open, in the operator's words."""
    code = getattr(e, "errno", None)
    if code == errno.ENOENT:
        return "not plugged in (no such port)"
    if code in (errno.EACCES, errno.EPERM):
        return "no permission to open the port (is the kiosk's user in the dialout group?)"
    if code in (errno.EBUSY, errno.EAGAIN):
        return "the port is in use by another program"
    return str(e)


class Device(Protocol):
    name: str  # "serial:/dev/ttyACM0", "gpio:17"
    refresh_s: float | None  # say the light again this often (None: the device keeps it)

    def open(self) -> None: ...

    def read(self) -> list[DeviceLine]: ...

    def show(self, light: str) -> None: ...

    def close(self) -> None: ...


class SerialDevice:
    """An Arduino-style button on a serial port, speaking the line protocol of actors/button/logic.py."""

    refresh_s = 2.0

    def __init__(self, port: str, baud: int):
        self.port, self.baud = port, baud
        self.name = f"serial:{port}"
        self._ser: Any = None
        self._lines = LineSplitter()

    def open(self) -> None:
        import serial

        try:
            # timeout 0 and write_timeout 0: reads and writes return at once with what they could do.
            # exclusive: a second kiosk (or a modem manager) on the same port is refused, not shared.
            self._ser = serial.Serial(self.port, self.baud, timeout=0, write_timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            raise DeviceMissing(_open_problem(e)) from e
        self._lines = LineSplitter()
        self._write(HELLO)

    def read(self) -> list[DeviceLine]:
        import serial

        try:
            data = self._ser.read(4096)
        except (serial.SerialException, OSError) as e:  # unplugged: the port reports readable, then nothing
            raise DeviceMissing("unplugged (the port stopped answering)") from e
        return self._lines.feed(data) if data else []

    def show(self, light: str) -> None:
        self._write(command(light))

    def _write(self, line: bytes) -> None:
        import serial

        try:
            self._ser.write(line)  # a full output buffer takes less; the light is said again soon
        except (serial.SerialException, OSError) as e:
            raise DeviceMissing("unplugged (the port stopped answering)") from e

    def close(self) -> None:
        if self._ser is not None:
            with contextlib.suppress(Exception):  # a vanished device may refuse even that; closed for us
                self._ser.close()
            self._ser = None


class GpioDevice:
    """A push button on one GPIO pin and its LED on another (gpiozero's Button and PWMLED, or LED)."""

    refresh_s = None

    def __init__(self, button_pin: int, led_pin: int, pull_up: bool):
        self.button_pin, self.led_pin, self.pull_up = button_pin, led_pin, pull_up
        self.name = f"gpio:{button_pin}"
        self._presses: deque[None] = deque()
        self._button: Any = None
        self._led: Any = None
        self._pwm = False

    def open(self) -> None:
        import gpiozero

        try:
            # gpiozero warns on stderr about every pin library it tries; the error below says enough.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._button = gpiozero.Button(self.button_pin, pull_up=self.pull_up, bounce_time=None)
                try:
                    self._led, self._pwm = gpiozero.PWMLED(self.led_pin), True
                except gpiozero.PinPWMUnsupported:
                    self._led, self._pwm = gpiozero.LED(self.led_pin), False
        except gpiozero.GPIOPinInUse as e:
            self.close()
            raise DeviceMissing(f"a pin is in use by another program ({str(e).split(' by ')[0]})") from e
        except gpiozero.BadPinFactory as e:
            self.close()
            raise DeviceMissing("no GPIO here (gpiozero found no pin library that works)") from e
        except (gpiozero.GPIOZeroError, OSError) as e:
            self.close()
            raise DeviceMissing(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
        self._presses.clear()
        self._button.when_pressed = self._pressed

    def _pressed(self, *_: Any) -> None:
        self._presses.append(None)  # gpiozero's thread: only a thread-safe append here

    def read(self) -> list[DeviceLine]:
        lines = []
        while self._presses:
            self._presses.popleft()
            lines.append(DeviceLine("press", "pin went down"))
        return lines

    def show(self, light: str) -> None:
        if light == ON:
            self._led.on()
        elif light == OFF:
            self._led.off()
        elif light == PULSE and self._pwm:
            self._led.pulse(fade_in_time=PULSE_FADE_S, fade_out_time=PULSE_FADE_S)
        elif light == PULSE:
            self._led.blink(on_time=BLINK_S, off_time=BLINK_S)

    def close(self) -> None:
        for part in (self._button, self._led):
            if part is not None:
                part.close()
        self._button = self._led = None
