"""The physical print button (actors/button/): its logic, and the real actor on real devices and sockets.

- The logic without sockets: the light from the window's session state, debouncing, the serial
  line protocol (garbage, overlong and split lines, HELLO versions), the backoff, the operator's
  alert text, the config's errors.
- serial: the real actor process (the Procfile's line) on a real pseudo-terminal. The test plays the
  Arduino on the master side, behind a symlink as udev's ``/dev/serial/by-id/`` names are, so it can
  unplug the device and plug a new one in; and it plays the window on the button's topics: it says a
  session state twice a second, takes the presses and reads the button's status.
- gpio: the real run loop in a thread of the test process (gpiozero's mock pins exist only in the
  process that made them), on ``MockFactory`` pins: a press is the input pin driven low and high again,
  the light is the LED pin's state.
- Through the real window (Xvfb, the fake upstream of tests/kiosk_fakes.py): a ``PRESS`` from the
  pseudo-terminal becomes the window's print job at a test-side printer endpoint, two quick presses
  print once, the light follows the session (lit, pulsing while printing, off once printed) and an
  unplugged button shows on the alert line; and the ``key`` backend: a key typed through XTEST prints.

Every wait has a deadline and waits for a message or a line, never for a socket.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import config
from actors.button import Button
from actors.button.logic import (
    MAX_LINE_BYTES,
    OFF,
    ON,
    PULSE,
    Backoff,
    Debounce,
    LineSplitter,
    button_alert,
    command,
    hello_problem,
    light_for,
    parse_line,
)
from benchmarks.graph import Graph, logged
from config.loader import CONFIG_DIR
from messages import ButtonPress, ButtonStatus, Header, Headers, Inbox, SessionState, encode, open_socket
from messages.schemas import SESSION_PHASES
from tests import factories

NS = 1_000_000_000
DEBOUNCE_MS = 200


def _state(phase: str, lit: bool = False) -> SessionState:
    return SessionState(Header(1, time.monotonic_ns(), "display", -1), phase, lit)


def _status(state: str, detail: str = "") -> ButtonStatus:
    return ButtonStatus(factories.header(), state, "serial", "serial:/dev/ttyACM0", detail, OFF, 0, 0)


# --- the logic, without sockets ------------------------------------------------------------------


def test_the_light_follows_the_windows_session() -> None:
    now = time.monotonic_ns()
    assert light_for(None, now) == OFF  # the window has said nothing (headless, not started)
    assert light_for(_state("results", lit=True), now) == ON
    assert light_for(_state("results", lit=False), now) == OFF  # no close match, or printed already
    assert light_for(_state("printing"), now) == PULSE
    for phase in ("attract", "present", "searching"):
        assert light_for(_state(phase), now) == OFF
    assert light_for(_state("results", lit=True), now + 4 * NS) == OFF  # the window went silent


def test_the_phases_on_the_wire_are_the_sessions_phases() -> None:
    from ui_kivy.session import Phase

    assert set(SESSION_PHASES) == {p.value for p in Phase}


def test_a_burst_of_presses_is_one_press() -> None:
    d = Debounce(0.3)
    assert d.accept(10 * NS)
    assert not d.accept(10 * NS)  # the same read: a double press
    assert not d.accept(10 * NS + 200_000_000)
    assert not d.accept(10 * NS + 400_000_000)  # still bouncing: 200 ms after the last
    assert d.accept(10 * NS + 800_000_000)  # quiet for 400 ms: a new press
    held = Debounce(0.3)  # a key held down repeats every 33 ms: one press
    assert [held.accept(i * 33_000_000) for i in range(30)].count(True) == 1
    assert all(Debounce(0).accept(i) for i in range(3))


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next_delay_s() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next_delay_s() == 0.5


def test_the_line_protocol() -> None:
    assert parse_line(b"PRESS").kind == "press"
    assert parse_line(b" press\r").kind == "press"  # an Arduino's println ends in \r\n
    hello = parse_line(b"HELLO MPBUTTON 1\r")
    assert (hello.kind, hello.name, hello.version, hello_problem(hello)) == ("hello", "MPBUTTON", 1, "")
    assert parse_line(b"HELLO").kind == "hello" and parse_line(b"HELLO").version is None
    newer = parse_line(b"HELLO MPBUTTON 2")
    assert hello_problem(newer) == "the device speaks protocol version 2, this kiosk speaks 1"
    for raw, why in (
        (b"HELLO MPBUTTON one", "not a number"),
        (b"PRESSED", "not PRESS or HELLO"),
        (b"PRESS PRESS", "not PRESS or HELLO"),
        (b"", "empty"),
        (b"\xff\xfe", "not ASCII"),
    ):
        line = parse_line(raw)
        assert line.kind == "bad" and why in line.why, (raw, line)
    assert command(ON) == b"LED ON\n" and command(PULSE) == b"LED PULSE\n" and command(OFF) == b"LED OFF\n"


def test_lines_split_across_reads_and_overlong_lines_are_dropped_whole() -> None:
    s = LineSplitter()
    assert s.feed(b"PRE") == []
    assert [line.kind for line in s.feed(b"SS\nHEL")] == ["press"]
    assert [line.kind for line in s.feed(b"LO X 1\n")] == ["hello"]
    # A line of noise longer than the limit, arriving in pieces: one bad line, then the next is read.
    noise = b"x" * (MAX_LINE_BYTES + 10)
    bad = s.feed(noise[:40]) + s.feed(noise[40:]) + s.feed(b"y" * 5000)
    assert [(line.kind, "longer than" in line.why) for line in bad] == [("bad", True)]
    assert [line.kind for line in s.feed(b"zzz\nPRESS\n")] == ["press"]  # the noise's end is skipped
    one_read = s.feed(noise + b"\nPRESS\n")
    assert [line.kind for line in one_read] == ["bad", "press"]


def test_the_operator_reads_a_missing_button_on_the_alert_line() -> None:
    if importlib.util.find_spec("kivy") is None:  # not imported here: Kivy would write ~/.kivy for this process
        pytest.skip("the window's alert line needs Kivy")
    from ui_kivy import app  # Kivy without a window; ui_kivy keeps it from writing ~/.kivy

    assert button_alert(None) == "" and button_alert(_status("connected")) == ""
    missing = button_alert(_status("missing", "not plugged in (no such port)"))
    assert missing == (
        "print button missing (not plugged in (no such port)): serial:/dev/ttyACM0; the screen's button still works"
    )
    assert app.alerts_text(True, True, "", "", "", missing) == missing
    assert app.alerts_text(True, True, "", "out of paper", "", missing) == f"printer: out of paper   ·   {missing}"


def test_wrong_button_settings_name_the_key_and_what_is_allowed() -> None:
    with pytest.raises(config.ConfigError, match=r"button\.backend = 'usb': allowed values are 'none', 'serial'"):
        config.validate({"button": {"backend": "usb"}})
    with pytest.raises(config.ConfigError, match=r"button\.serial_port must name the device"):
        config.validate({"button": {"backend": "serial"}})
    with pytest.raises(config.ConfigError, match=r"button\.gpio_button_pin and button\.gpio_led_pin are both 4"):
        config.validate({"button": {"backend": "gpio", "gpio_button_pin": 4, "gpio_led_pin": 4}})
    with pytest.raises(config.ConfigError, match=r"button\.key = 'escape': allowed values are 'enter'"):
        config.validate({"button": {"backend": "key", "key": "escape"}})  # Esc may close a window
    with pytest.raises(config.ConfigError, match=r"button\.reconnect_max_s = 0\.1 is under button\.reconnect_s"):
        config.validate({"button": {"reconnect_s": 1.0, "reconnect_max_s": 0.1}})
    with pytest.raises(config.ConfigError, match=r"button\.debounce_ms = -1: allowed range is 0 to 5000"):
        config.validate({"button": {"debounce_ms": -1}})
    for name in ("demo", "kiosk", "test"):  # the shipped files: no device, the demo keeps working
        assert config.load(CONFIG_DIR / f"{name}.toml", env={})["button"]["backend"] == "none"


# --- the test's side of the device and of the window ------------------------------------------------


class FakeArduino:
    """The device end of a pseudo-terminal, played by the test; ``link`` names the port the actor opens."""

    def __init__(self, link: Path):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # as a USB serial device: no echo, no line editing
        self.link = link
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(self.slave))
        self._buf = b""
        self.plugged = True

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, line: bytes, deadline_s: float = 15.0) -> list[bytes]:
        """The host's lines up to and including the first ``line`` (AssertionError after the deadline)."""
        end = time.monotonic() + deadline_s
        seen: list[bytes] = []
        while True:
            while b"\n" in self._buf:
                got, self._buf = self._buf.split(b"\n", 1)
                seen.append(got)
                if got == line:
                    return seen
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the host did not say {line!r} within {deadline_s} s; it said {seen}")
            if select.select([self.master], [], [], min(left, 0.1))[0]:
                self._buf += os.read(self.master, 4096)

    def unplug(self) -> None:
        if self.plugged:
            self.plugged = False
            os.close(self.master)
            os.close(self.slave)
            self.link.unlink(missing_ok=True)


class FakeWindow:
    """The window's end of the button's topics: it says ``state`` twice a second (None: nothing), as
    the window does, and reads the presses and the button's status."""

    def __init__(self, cfg: config.Config):
        self.cfg, self.ctx = cfg, zmq.Context()
        self.state: tuple[str, bool] | None = None
        self.presses = Inbox(open_socket(self.ctx, cfg, "presses", "display", receiving=True), "presses", limit=100)
        self.status = Inbox(
            open_socket(self.ctx, cfg, "button_status", "display", receiving=True), "button_status", limit=100
        )
        self.last_status: ButtonStatus | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._say, daemon=True)
        self._thread.start()

    def _say(self) -> None:
        pub = open_socket(self.ctx, self.cfg, "session", "display", receiving=False)  # this thread's own socket
        headers = Headers("display")
        try:
            while not self._stop.is_set():
                if self.state is not None:
                    pub.send_multipart(encode(SessionState(headers.next(), *self.state)))
                self._stop.wait(0.5)  # the window's pace (ui_kivy.app.SESSION_EVERY_S)
        finally:
            pub.close(0)

    def say(self, phase: str, lit: bool = False) -> None:
        self.state = (phase, lit)

    def wait_status(self, ok: Callable[[ButtonStatus], bool], what: str, deadline_s: float = 15.0) -> ButtonStatus:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.status.sock.poll(100):
                for msg in self.status.receive(time.monotonic_ns()):
                    self.last_status = msg
                    if ok(msg):
                        return msg
        raise AssertionError(f"no button status with {what} within {deadline_s} s; the last: {self.last_status}")

    def presses_within(self, seconds: float, until: int | None = None) -> list[ButtonPress]:
        """The presses that arrive within ``seconds`` (or until there are ``until`` of them)."""
        got: list[ButtonPress] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end and (until is None or len(got) < until):
            if self.presses.sock.poll(50):
                got += self.presses.receive(time.monotonic_ns())
        return got

    def wait_press(self, deadline_s: float = 10.0) -> ButtonPress:
        got = self.presses_within(deadline_s, until=1)
        assert got, f"no press arrived within {deadline_s} s"
        return got[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.presses.close()
        self.status.close()
        self.ctx.term()


def _button_toml(link: Path) -> str:
    return f"""
[button]
backend = "serial"
serial_port = "{link}"
debounce_ms = {DEBOUNCE_MS}
reconnect_s = 0.1
reconnect_max_s = 0.4
"""


# --- serial: the real actor process on a real pseudo-terminal -----------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_serial_button_through_the_real_actor_on_a_pseudo_terminal(tmp_path: Path, ipc_dir: Path) -> None:
    link = tmp_path / "ttyBUTTON"  # nothing there yet: the button is not plugged in
    cfg_file = tmp_path / "button.toml"
    cfg_file.write_text(_button_toml(link) + '[log]\nlevel = "DEBUG"\n')
    env = {"MEGAPIXELS_CONFIG": str(cfg_file), "MEGAPIXELS_IPC_DIR": str(ipc_dir)}
    cfg = config.load(cfg_file, env=env)
    actors = Graph(env)
    window = FakeWindow(cfg)
    devices: list[FakeArduino] = []
    try:
        actors.start("button")
        missing = window.wait_status(lambda s: s.state == "missing", "the device missing")
        assert missing.device == f"serial:{link}" and missing.detail == "not plugged in (no such port)", missing
        actors.wait_for(logged("button", "[Errno 2] could not open port"), "pyserial's words in the log", 5, since=0)
        assert "print button missing" in button_alert(missing)

        devices.append(dev := FakeArduino(link))  # plugged in: found within reconnect_max_s
        window.wait_status(lambda s: s.state == "connected", "the device connected")
        dev.expect(b"HELLO")  # the host asks who is there...
        dev.send(b"HELLO MPBUTTON 1\r\n")  # ...and the device answers, as it does when it starts
        window.wait_status(lambda s: s.detail == "connected: HELLO MPBUTTON 1", "the device's HELLO")
        assert dev.expect(b"LED OFF")  # the window has said nothing yet: dark

        window.say("results", lit=True)  # a match under the threshold: the screen's button lights
        dev.expect(b"LED ON")
        sent = time.monotonic()
        dev.send(b"PRESS\r\n")
        press = window.wait_press()
        press_ms = (time.monotonic() - sent) * 1000
        assert press.source == f"serial:{link}" and press.header.src == "button"

        time.sleep(DEBOUNCE_MS / 1000 * 1.5)  # past the debounce window (a wait for time, not for a socket)
        dev.send(b"PRESS\nPRESS\n")  # a double press...
        window.wait_press()
        assert window.presses_within(DEBOUNCE_MS / 1000 * 2) == []  # ...is one press
        assert window.wait_status(lambda s: s.presses == 2, "2 presses counted").bad_lines == 0

        window.say("printing")
        dev.expect(b"LED PULSE")
        window.say("results", lit=False)  # printed: one receipt per visitor
        dev.expect(b"LED OFF")
        window.say("results", lit=True)
        dev.expect(b"LED ON")
        window.say("attract")  # the visitor left: the session reset
        dev.expect(b"LED OFF")

        # Garbage from the device: counted, logged, dropped; the actor goes on.
        dev.send(b"\xff\xfe\x00junk\nBUTTON DOWN\n" + b"x" * 300 + b"\nHELLO MPBUTTON one\n")
        garbled = window.wait_status(lambda s: s.bad_lines == 4, "4 bad lines counted")
        assert garbled.state == "connected" and garbled.presses == 2
        actors.wait_for(logged("button", "dropped a line from the device (not ASCII)"), "its log", 5, since=0)
        time.sleep(DEBOUNCE_MS / 1000 * 1.5)
        dev.send(b"PRESS\n")
        window.wait_press()

        # Unplugged mid-session: shown as missing, looked for again; a new device is found.
        window.say("results", lit=True)
        dev.expect(b"LED ON")
        unplugged = time.monotonic()
        dev.unplug()
        gone = window.wait_status(lambda s: s.state == "missing", "the device missing again")
        missing_ms = (time.monotonic() - unplugged) * 1000
        assert gone.device == f"serial:{link}" and gone.light == OFF, gone
        assert gone.detail in ("unplugged (the port stopped answering)", "not plugged in (no such port)"), gone
        actors.wait_for(logged("button", "lost: unplugged (the port stopped answering) ("), "the loss", 5, since=0)
        plugged = time.monotonic()
        devices.append(dev := FakeArduino(link))
        back = window.wait_status(lambda s: s.state == "connected", "the device back")
        back_ms = (time.monotonic() - plugged) * 1000
        assert back.bad_lines == 4 and back.presses == 3  # the same actor: it did not restart
        dev.expect(b"HELLO")
        dev.expect(b"LED ON")  # the new device learns the light at once
        dev.send(b"PRESS\n")
        assert window.wait_press().source == f"serial:{link}"

        assert actors.stop("button") == 0
        dev.expect(b"LED OFF", 5)  # the kiosk closing leaves no lit button behind
        print(f"PRESS -> press at the window {press_ms:.0f} ms; unplugged -> 'missing' {missing_ms:.0f} ms; ")
        print(f"plugged in -> 'connected' {back_ms:.0f} ms (reconnect_s 0.1, reconnect_max_s 0.4)")
        counters = actors.stopped_counters("button")
        assert counters["button.bad_lines"] == 4 and counters["button.lost"] == 1, counters
        assert counters["button.presses"] == 4 and counters["button.bounced"] == 1, counters
    finally:
        actors.kill_all()
        window.close()
        for d in devices:
            d.unplug()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_without_a_device_the_button_actor_idles_and_stops_on_sigterm(tmp_path: Path, ipc_dir: Path) -> None:
    """The default: the Procfile's button line runs, says it has nothing to drive, and never exits alone."""
    env = {"MEGAPIXELS_CONFIG": str(CONFIG_DIR / "test.toml"), "MEGAPIXELS_IPC_DIR": str(ipc_dir)}
    cfg = config.load(env=env)
    actors = Graph(env)
    window = FakeWindow(cfg)
    try:
        actors.start("button")
        window.say("results", lit=True)
        off = window.wait_status(lambda s: s.state == "off", "the idle state")
        assert off.backend == "none" and off.light == OFF and "screen's button only" in off.detail
        assert button_alert(off) == ""  # nothing for the operator to fix
        # Alive and idle: a status every second, numbered one by one (nothing made and not sent between).
        later = window.wait_status(lambda s: s.header.seq > off.header.seq, "the next status")
        assert later.header.seq == off.header.seq + 1 and later.state == "off", (off, later)
        assert 0.5e9 < later.header.t_ns - off.header.t_ns < 3e9, "not once a second"
        assert actors.stop("button") == 0
    finally:
        actors.kill_all()
        window.close()


# --- gpio: the real run loop on gpiozero's mock pins ------------------------------------------------


@pytest.fixture
def mock_pins(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    previous = gpiozero.Device.pin_factory
    factory = MockFactory(pin_class=MockPWMPin)
    gpiozero.Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        gpiozero.Device.pin_factory = previous


def _pin_until(pin: Any, ok: Callable[[float], bool], what: str, deadline_s: float = 10.0) -> list[float]:
    """The pin's states, read every 20 ms, until one satisfies ``ok``."""
    seen: list[float] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        seen.append(pin.state)
        if ok(seen[-1]):
            return seen
        time.sleep(0.02)  # reading a pin's state: no socket involved
    raise AssertionError(f"the LED pin never showed {what} within {deadline_s} s: {sorted(set(seen))[:20]}")


@pytest.mark.timeout(60)
def test_the_gpio_button_on_gpiozeros_mock_pins(mock_pins: Any, ipc_config: config.Config) -> None:
    import gpiozero

    cfg = config.validate(
        {
            "network": dict(ipc_config["network"]),
            "button": {
                "backend": "gpio",
                "gpio_button_pin": 17,
                "gpio_led_pin": 18,
                "debounce_ms": DEBOUNCE_MS,
                "reconnect_s": 0.1,
                "reconnect_max_s": 0.4,
            },
        }
    )
    button_pin, led_pin = mock_pins.pin(17), mock_pins.pin(18)
    squatter = gpiozero.LED(18)  # another program holds the LED's pin: the button can't be set up
    window = FakeWindow(cfg)
    actor_ctx = zmq.Context()
    try:
        with factories.actor_in_thread(Button(cfg, "button.1"), actor_ctx):
            missing = window.wait_status(lambda s: s.state == "missing", "the pins missing")
            assert missing.device == "gpio:17" and missing.detail.startswith("a pin is in use"), missing
            assert "GPIO18" in missing.detail, missing
            squatter.close()  # released: found again within reconnect_max_s
            window.wait_status(lambda s: s.state == "connected", "the pins set up")
            assert led_pin.state == 0

            window.say("results", lit=True)
            _pin_until(led_pin, lambda v: v == 1.0, "on")
            button_pin.drive_low()  # pressed (the button connects the pin to ground)...
            button_pin.drive_high()  # ...and released
            assert window.wait_press().source == "gpio:17"
            time.sleep(DEBOUNCE_MS / 1000 * 1.5)
            for _ in range(2):  # a double press (or a bouncing contact)
                button_pin.drive_low()
                button_pin.drive_high()
            assert window.wait_press().source == "gpio:17"
            assert window.presses_within(DEBOUNCE_MS / 1000 * 2) == []  # one press

            window.say("printing")
            pulse = _pin_until(led_pin, lambda v: 0.05 < v < 0.95, "a level between off and on")
            pulse += _pin_until(led_pin, lambda v: 0.05 < v < 0.95 and v != pulse[-1], "another level")
            assert len({round(v, 3) for v in pulse}) >= 2, pulse  # fading: a pulse, not a steady light
            window.say("attract")
            _pin_until(led_pin, lambda v: v == 0.0, "off")
            window.wait_status(lambda s: s.light == OFF, "the light off in the status")
            assert window.last_status.presses == 2 and window.last_status.state == "connected"
        # Stopped: the pins are released for whoever comes next.
        gpiozero.Button(17).close()
        gpiozero.LED(18).close()
    finally:
        squatter.close()
        window.close()
        actor_ctx.term()


# --- through the real window ---------------------------------------------------------------------

window_deps = pytest.mark.skipif(
    importlib.util.find_spec("kivy") is None or importlib.util.find_spec("mss") is None,
    reason="the window tests need Kivy and mss",
)


@contextlib.contextmanager
def _window_graph(env: dict[str, str]) -> Iterator[Graph]:
    actors = Graph(env)
    try:
        yield actors
    finally:
        actors.kill_all()


@pytest.mark.slow
@window_deps
@pytest.mark.timeout(180)
def test_a_press_of_the_serial_button_prints_through_the_window(
    x_display: str, upstream: Any, ipc_dir: Path, tmp_path: Path
) -> None:
    from tests import kiosk_screen as ks
    from tests.kiosk_fakes import QUERY_ID, RESULTS, FakePrinter, display_config, start_display

    link = tmp_path / "ttyBUTTON"
    dev = FakeArduino(link)
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, display_config() + _button_toml(link))
    upstream.send_garbage = False
    printer = FakePrinter(upstream)
    try:
        with _window_graph(env) as actors:
            actors.start("button")
            dev.expect(b"HELLO")
            dev.send(b"HELLO MPBUTTON 1\n")
            start_display(actors, upstream)
            dev.expect(b"LED ON")  # the window shows a close match: the real button lights with it
            ks.grab_until(x_display, ks.button_lit, "kiosk_button_lit.png")

            sent = time.monotonic()
            dev.send(b"PRESS\nPRESS\n")  # pressed twice, quickly
            job = actors.wait_for(lambda _: printer.receive(), "a print job after the press", 10, period_s=0.01)
            print(f"PRESS on the serial line -> the window's print job at the printer: {time.monotonic() - sent:.3f} s")
            assert (job.query_id, job.results, job.header.src) == (QUERY_ID, RESULTS, "display")
            actors.wait_for(logged("display", f"print button pressed (serial:{link})"), "the press logged", 5, since=0)
            dev.expect(b"LED PULSE")  # printing: the printer has not answered yet
            time.sleep(DEBOUNCE_MS / 1000 * 1.5)
            dev.send(b"PRESS\n")  # pressed again while printing: the window sends nothing more
            actors.wait_for(logged("display", "print button pressed"), "the press while printing", 5)
            assert printer.no_job_within(1.5), "a second print job for one visitor"

            printer.reply(job)
            actors.wait_for(logged("display", f"printed query {QUERY_ID}"), "'printed'", 10, since=0)
            dev.expect(b"LED OFF")  # one receipt per visitor: the button goes dark
            time.sleep(DEBOUNCE_MS / 1000 * 1.5)
            dev.send(b"PRESS\n")
            actors.wait_for(logged("display", "print button pressed"), "the late press reaching the window", 5)
            assert printer.no_job_within(1.5), "printed twice for one visitor"

            mark = actors.mark()
            dev.unplug()  # the operator reads it on the alert line; the screen's button still works
            actors.wait_for(logged("display", "print button missing"), "the missing button in the window", 10)
            actors.wait_for(logged("display", 'alerts="print button missing'), "the alert line", 10, since=mark)
            ks.grab_until(
                x_display, lambda rgb: ks.orange_text(rgb, ks.ALERTS, "alert line"), "kiosk_button_missing.png"
            )
            assert actors.stop("display") == 0 and actors.stop("button") == 0
            assert not ks.left_in_home(env), f"the display wrote into its HOME: {ks.left_in_home(env)}"
    finally:
        printer.close()
        dev.unplug()


@pytest.mark.slow
@window_deps
@pytest.mark.timeout(150)
def test_a_usb_button_that_types_a_key_prints_through_the_window(
    x_display: str, upstream: Any, ipc_dir: Path, tmp_path: Path
) -> None:
    from tests import kiosk_screen as ks
    from tests.kiosk_fakes import QUERY_ID, FakePrinter, display_config, start_display

    toml = display_config() + '\n[button]\nbackend = "key"\nkey = "f12"\n'
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, toml)
    upstream.send_garbage = False
    printer = FakePrinter(upstream)
    try:
        with _window_graph(env) as actors:
            actors.start("button")  # idle: the window takes the key itself
            start_display(actors, upstream)
            actors.wait_for(logged("display", "print button off: key"), "the idle button's word", 10, since=0)
            ks.grab_until(x_display, ks.button_lit, "kiosk_button_key_lit.png")
            ks.press_key(x_display, "F11")  # another key: nothing, though a print would be allowed now
            assert printer.no_job_within(1.0), "a key other than button.key printed"
            assert not logged("display", "print key")(actors.history)
            ks.press_key(x_display, "F12", times=2)  # typed twice, quickly
            job = actors.wait_for(lambda _: printer.receive(), "a print job after the key", 10)
            assert job.query_id == QUERY_ID and job.header.src == "display"
            actors.wait_for(logged("display", "print key 'f12' pressed"), "the key logged", 5, since=0)
            assert printer.no_job_within(1.5), "two print jobs for one key press"
            ks.grab_until(
                x_display,
                lambda rgb: [*ks.button_unlit(rgb), *ks.text_width(rgb, ks.PRINT_NOTE, 150, "print note")],
                "kiosk_button_key_printing.png",
            )
            printer.reply(job)
            actors.wait_for(logged("display", f"printed query {QUERY_ID}"), "'printed'", 10, since=0)
            assert printer.no_job_within(1.0)
            assert actors.stop("display") == 0 and actors.stop("button") == 0
    finally:
        printer.close()
