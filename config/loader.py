"""The one configuration loader: TOML file + environment overrides, validated at start-up.

Every setting has a default in ``SETTINGS``; a file only names what it changes. A wrong value
(or an unknown key, usually a typo) raises :class:`ConfigError` naming the key and what is
allowed, so an actor fails at start-up instead of misbehaving later.

Environment overrides (applied after the file):
``MEGAPIXELS_CONFIG`` TOML path · ``MEGAPIXELS_SOURCE`` camera.source ·
``MEGAPIXELS_INDEX`` index.path · ``MEGAPIXELS_HEADLESS=1`` display.headless ·
``MEGAPIXELS_MATCHERS`` search.matchers ·
``MEGAPIXELS_IPC_DIR`` network.transport=ipc in that folder (used by tests).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"


class ConfigError(ValueError):
    """A setting that can't be used; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Setting:
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None


# The keys a USB button that types may send (button.backend = "key"), as the Kivy window names them.
BUTTON_KEYS = (
    "enter",
    "numpadenter",
    "spacebar",
    "tab",
    *(f"f{n}" for n in range(1, 16)),
    "pageup",
    "pagedown",
    "home",
    "end",
    "insert",
    "pause",
    "print",
    "up",
    "down",
    "left",
    "right",
    *"abcdefghijklmnopqrstuvwxyz0123456789",
)

SETTINGS: dict[str, dict[str, Setting]] = {
    "mode": {
        "kiosk": Setting(False, "true on a public installation: no recording, loopback only"),
    },
    "camera": {
        "source": Setting("0", 'webcam index ("0"), video file or image folder'),
        "loop": Setting(True, "replay sources start again at the end"),
        "fps": Setting(0.0, "replay rate in frames/s; 0 = the source's native rate", low=0, high=240),
        "folder_fps": Setting(10.0, "rate of an image folder replay when fps = 0", low=0.1, high=240),
        "width_px": Setting(640, "frames wider than this are scaled down (0 = keep)", low=0, high=3840),
        "height_px": Setting(480, "webcam capture height asked of the driver (replays keep theirs)", low=0, high=2160),
        "rate": Setting(1.0, "replay speed: 0.5 = half, 4 = four times; 0 = as fast as possible", low=0, high=64),
        "start_s": Setting(0.0, "replays start this many seconds in", low=0, high=86400),
        "paused": Setting(False, "replays start paused (resume / step through replay_control)"),
        "reconnect_s": Setting(1.0, "a lost webcam is reopened this often", low=0.05, high=60),
        "max_image_mp": Setting(
            40.0,
            "an image folder's larger files are skipped, checked from their header before decoding",
            low=0.01,
            high=10000,
        ),
    },
    "recorder": {
        "topics": Setting("frames", "comma-separated topics to record (development only)"),
        "path": Setting("build/recording.mprec", "the recording file (length-prefixed msgpack)"),
    },
    "detector": {
        "scale": Setting(0.5, "HOG runs on a copy scaled by this factor", low=0.1, high=2.0),
        "upsample": Setting(0, "HOG upsampling steps (each 4x slower)", low=0, high=3),
        "min_face_px": Setting(40, "faces narrower than this (frame pixels) are ignored", low=0, high=4000),
        "method": Setting("hog", "face detector", choices=("hog", "cnn", "haar")),
        "policy": Setting(
            "largest", "which face is the visitor; 'all' queries every face", choices=("largest", "central", "all")
        ),
        "stable_frames": Setting(2, "query only once the visitor's face held still this many frames", low=1, high=100),
        "max_queries_per_s": Setting(4.0, "at most this many queries per second (per face track)", low=0.1, high=100),
        "track_iou": Setting(0.3, "box overlap that counts as the same face in the next frame", low=0.01, high=1.0),
    },
    "encoder": {
        "jitter": Setting(1, "descriptor jitters (each costs one more network pass)", low=1, high=100),
        "average_track": Setting(
            4, "average the descriptors of the last n queries of a face track (1 = off)", low=1, high=50
        ),
        "credits": Setting(1, "jobs an encoder takes at once (more: busier encoders, staler faces)", low=1, high=8),
        "liveness_s": Setting(
            5.0, "an encoder silent this long is presumed dead and its jobs are given up", low=0.5, high=600
        ),
    },
    "index": {
        "path": Setting("build/demo-index-2shards", "index folder made by `megapixels index build`"),
        "enrolled_share": Setting(
            0.00013,
            "share of visitors expected to be in the dataset, the prior of p_same and the verdict "
            "(kiosk default: about 2 in 15,000 visitors found themselves at the original installation)",
            low=1e-9,
            high=1.0,
        ),
    },
    "search": {
        "top_k": Setting(5, "results shown to the visitor", low=1, high=100),
        "shard_deadline_ms": Setting(500, "wait this long for every shard, then answer partial", low=1, high=60000),
        "kernel": Setting(
            "auto",
            "shard search kernel (auto: bounded when the index has codes, else faiss for float16/int8, "
            "numpy for float32)",
            choices=("auto", "bounded", "faiss", "numpy"),
        ),
        "matchers": Setting(
            1,
            "matcher processes (honcho start -c matcher=N); matcher.N serves shards k % matchers == N-1, "
            "so 1 serves every shard (one thread each)",
            low=1,
            high=256,
        ),
    },
    "display": {
        "headless": Setting(False, "print each result as a JSON line instead of opening a window"),
        "fullscreen": Setting(False, "borderless fullscreen kiosk window"),
        "width_px": Setting(1280, "window width", low=320, high=7680),
        "height_px": Setting(800, "window height", low=240, high=4320),
        "match_threshold": Setting(0.6, "distance under which the print button lights", low=0, high=2),
        "mirror": Setting(True, "show the live view mirrored, as visitors expect of a screen they face"),
        "stable_s": Setting(0.8, "a face must stay this long before the search starts", low=0, high=30),
        "leave_s": Setting(2.5, "no face for this long: the visitor has left, the kiosk resets", low=0.1, high=120),
        "search_timeout_s": Setting(10.0, "give up a search without results after this long", low=1, high=300),
        "results_hold_s": Setting(30.0, "results stay up this long, then the kiosk resets", low=1, high=3600),
        "lookup_idle_s": Setting(
            60.0,
            'the "Are my photos in it?" screen closes, forgetting what was typed, after this long untouched',
            low=5,
            high=3600,
        ),
    },
    "printer": {
        "backend": Setting("spool", "where receipts go", choices=("spool", "cups", "escpos")),
        "spool_dir": Setting("build/spool", "folder for receipts of the spool backend"),
        "cups_queue": Setting("", "CUPS queue of the cups backend (lp -d QUEUE); CUPS_SERVER picks the server"),
        "escpos_device": Setting("", 'escpos backend: "tcp://HOST:PORT" or a device file such as /dev/usb/lp0'),
        "print_visitor_face": Setting(False, "print the visitor's face on the receipt (off: never leaves the display)"),
    },
    "button": {
        "backend": Setting(
            "none",
            "the physical print button: none, a serial device (pyserial), GPIO pins (gpiozero) or a USB "
            "button that types a key into the window",
            choices=("none", "serial", "gpio", "key"),
        ),
        "serial_port": Setting("", 'serial: the device, best its stable name ("/dev/serial/by-id/usb-...")'),
        "serial_baud": Setting(
            115200, "serial: line speed in bits/s (the device's Serial.begin)", low=300, high=4000000
        ),
        "gpio_button_pin": Setting(17, "gpio: the button's input pin (BCM number)", low=0, high=53),
        "gpio_led_pin": Setting(
            18, "gpio: the button's LED (BCM number; PWM-capable for a soft pulse)", low=0, high=53
        ),
        "gpio_pull_up": Setting(True, "gpio: the button connects its pin to ground (true) or to 3.3 V (false)"),
        "key": Setting("enter", "key: the key the USB button types", choices=BUTTON_KEYS),
        "debounce_ms": Setting(300, "presses closer than this to the one before are one press", low=0, high=5000),
        "reconnect_s": Setting(
            0.5, "a missing device is looked for again after this, then ever less often", low=0.05, high=60
        ),
        "reconnect_max_s": Setting(5.0, "...but at least this often", low=0.05, high=600),
    },
    "network": {
        "transport": Setting("tcp", "tcp on 127.0.0.1, or ipc sockets in ipc_dir", choices=("tcp", "ipc")),
        "ipc_dir": Setting("", "folder for ipc sockets when transport = ipc"),
        "port_offset": Setting(0, "added to every registered port (two kiosks on one machine)", low=0, high=50000),
        "bind_host": Setting("127.0.0.1", "address the query side binds queries/candidates on for remote shards"),
        "query_host": Setting("127.0.0.1", "address matchers connect to for queries/candidates"),
    },
    "curve": {
        "enabled": Setting(False, "CURVE authentication + encryption on queries/candidates (remote shards)"),
        "secret_key_file": Setting("", "this process's certificate with its secret key (zmq.auth format)"),
        "server_key_file": Setting("", "matchers: the query side's public certificate"),
        "authorized_keys_dir": Setting("", "query side: folder of the public certificates of matchers let in"),
    },
    "privacy": {
        "scrub_after_s": Setting(
            3.0,
            "kiosk mode: once the visitor's data has stopped flowing this long, every actor forgets them (0 = never)",
            low=0,
            high=3600,
        ),
    },
    "log": {
        "level": Setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    },
}

ENV_OVERRIDES = {
    "MEGAPIXELS_SOURCE": ("camera", "source"),
    "MEGAPIXELS_INDEX": ("index", "path"),
    "MEGAPIXELS_HEADLESS": ("display", "headless"),
    "MEGAPIXELS_MATCHERS": ("search", "matchers"),
}


class Config(dict):
    """Validated settings: ``cfg["camera"]["source"]``; ``cfg.path("index", "path")`` for a path setting."""

    def path(self, section: str, key: str) -> Path:
        """A path setting, relative paths taken from the project root."""
        p = Path(self[section][key]).expanduser()
        return p if p.is_absolute() else PROJECT_ROOT / p


def load(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read the TOML at ``path`` (else $MEGAPIXELS_CONFIG, else config/demo.toml) and validate it."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get("MEGAPIXELS_CONFIG") or CONFIG_DIR / "demo.toml"
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var, "") != "":
            value = _from_env(var, env[var], SETTINGS[section][key].default)
            if isinstance(value, str) and not value.isdigit():
                value = os.path.abspath(value)  # a path typed in a shell is relative to its folder
            raw.setdefault(section, {})[key] = value
    if env.get("MEGAPIXELS_IPC_DIR"):
        raw.setdefault("network", {}).update(transport="ipc", ipc_dir=env["MEGAPIXELS_IPC_DIR"])
    return validate(raw, str(path))


def validate(raw: dict[str, Any], origin: str = "config") -> Config:
    cfg = Config()
    for section in raw:
        if section not in SETTINGS:
            raise ConfigError(f"{origin}: unknown section [{section}]; allowed: {', '.join(SETTINGS)}")
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
    for section, settings in SETTINGS.items():
        given = raw.get(section, {})
        unknown = sorted(set(given) - set(settings))
        if unknown:
            raise ConfigError(f"{origin}: unknown key {section}.{unknown[0]}; allowed keys: {', '.join(settings)}")
        cfg[section] = {key: _checked(f"{section}.{key}", given.get(key, s.default), s) for key, s in settings.items()}
    if cfg["network"]["transport"] == "ipc" and not cfg["network"]["ipc_dir"]:
        raise ConfigError(f'{origin}: network.ipc_dir must name a folder when network.transport = "ipc"')
    _check_exposure(cfg, origin)
    _check_button(cfg["button"], origin)
    return cfg


def _check_button(button: dict[str, Any], origin: str) -> None:
    if button["backend"] == "serial" and not button["serial_port"]:
        raise ConfigError(
            f'{origin}: button.serial_port must name the device when button.backend = "serial" '
            '(for example "/dev/ttyACM0", or its /dev/serial/by-id/ name)'
        )
    if button["backend"] == "gpio" and button["gpio_button_pin"] == button["gpio_led_pin"]:
        raise ConfigError(
            f"{origin}: button.gpio_button_pin and button.gpio_led_pin are both {button['gpio_led_pin']}; "
            "allowed: two different pins"
        )
    if button["reconnect_max_s"] < button["reconnect_s"]:
        raise ConfigError(
            f"{origin}: button.reconnect_max_s = {button['reconnect_max_s']:g} is under button.reconnect_s = "
            f"{button['reconnect_s']:g}; allowed: at least button.reconnect_s"
        )


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_exposure(cfg: Config, origin: str) -> None:
    """Only the shard topics may leave the machine, and only authenticated and encrypted."""
    curve = cfg["curve"]
    bind_host = cfg["network"]["bind_host"]
    if not _is_loopback(bind_host) and not curve["enabled"]:
        raise ConfigError(
            f"{origin}: network.bind_host = {bind_host!r} would expose the kiosk beyond this machine; "
            "allowed without [curve] enabled = true: 127.0.0.1, ::1, localhost"
        )
    if curve["enabled"] and not curve["secret_key_file"]:
        raise ConfigError(f"{origin}: curve.secret_key_file must be set when curve.enabled = true")


def _checked(key: str, value: Any, s: Setting) -> Any:
    want = type(s.default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not want:
        raise ConfigError(f"{key} = {value!r}: expected {want.__name__} ({s.help})")
    if s.choices and value not in s.choices:
        raise ConfigError(f"{key} = {value!r}: allowed values are {', '.join(map(repr, s.choices))}")
    if (s.low is not None and value < s.low) or (s.high is not None and value > s.high):
        raise ConfigError(f"{key} = {value!r}: allowed range is {s.low:g} to {s.high:g}")
    return value


def _from_env(var: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        return text.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{var} = {text!r}: expected a whole number") from None
    return text
