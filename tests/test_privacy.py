"""Privacy, proven: the kiosk graph writes nothing and talks to nothing beyond this machine.

The whole Procfile runs in kiosk mode (config/kiosk.toml: TCP on loopback, as installed) with a
replayed visitor, under ``strace -f``, which records every file and network system call of
every process. The test then reads the trace:

- no file is created, written, renamed or deleted anywhere, except Python's own bytecode cache
  (``__pycache__/*.pyc``: code, not visitor data) — transient files count too, since every
  call is in the trace, not just what is left at the end;
- every TCP/UDP address bound, connected to or sent to is loopback.

Then the graph runs in kiosk mode with a visitor who comes and goes, and every actor's memory is
read once they have all scrubbed themselves (actors/runtime/privacy.py): none holds the visitor's frames,
face chips or descriptors.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq

import config
from benchmarks.graph import display_results
from index import store
from messages import Query, decode, encode, endpoint, open_socket
from tests import factories
from tests.conftest import DEMO_CLIP, PROJECT
from tests.factories import Echo, matcher_in_thread

TRACED = (
    "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,link,linkat,symlink,symlinkat,"
    "truncate,chmod,fchmodat,utimensat,bind,connect,sendto,sendmsg"
)
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
FILE_CALL = re.compile(
    r"^(\d+) +(openat|open|creat|mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|link|linkat|"
    r"symlink|symlinkat|truncate|chmod|fchmodat|utimensat)\((.*)\) += (-?\d+)"
)
INET = re.compile(r"sa_family=AF_INET6?, .*?(?:inet_addr\(\"([^\"]+)\"\)|inet_pton\(AF_INET6, \"([^\"]+)\")")
NET_CALL = re.compile(r"^(\d+) +(bind|connect|sendto|sendmsg)\((.*)\) += ")


def _written_paths(trace: str) -> list[str]:
    """Paths the traced processes created, wrote, renamed or removed (successful calls only)."""
    found = []
    for line in trace.splitlines():
        m = FILE_CALL.match(line)
        if not m or m.group(4).startswith("-"):
            continue
        call, args = m.group(2), m.group(3)
        if call.startswith("open") and not any(flag in args for flag in WRITE_FLAGS):
            continue
        if call == "utimensat" and '"' not in args:
            continue
        paths = re.findall(r'"((?:[^"\\]|\\.)*)"', args)
        found.extend(paths[:1] if call.startswith(("open", "creat", "mkdir", "truncate", "chmod", "fchmod")) else paths)
    return found


def _inet_addresses(trace: str) -> list[str]:
    addresses = []
    for line in trace.splitlines():
        if NET_CALL.match(line):
            for v4, v6 in INET.findall(line):
                addresses.append(v4 or v6)
    return addresses


def _allowed(path: str) -> bool:
    """Bytecode caches, and POSIX semaphores (honcho's multiprocessing): RAM or code, no visitor data."""
    return (path.endswith(".pyc") and "__pycache__" in path) or path.startswith("/dev/shm/sem.") or path == "/dev/null"


def test_trace_parsing_on_a_hand_written_trace():
    trace = "\n".join(
        [
            '11 openat(AT_FDCWD, "/models/x.dat", O_RDONLY|O_CLOEXEC) = 3',
            '11 openat(AT_FDCWD, "/home/k/visitor.jpg", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 4',
            '12 openat(AT_FDCWD, "/tmp/never.txt", O_WRONLY|O_CREAT, 0600) = -1 EACCES (Permission denied)',
            '12 rename("/tmp/a", "/tmp/b") = 0',
            '13 bind(5, {sa_family=AF_INET, sin_port=htons(5601), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
            '13 connect(6, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("93.184.216.34")}, 16) = -1',
            '13 connect(7, {sa_family=AF_UNIX, sun_path="/tmp/x.sock"}, 110) = 0',
        ]
    )
    assert _written_paths(trace) == ["/home/k/visitor.jpg", "/tmp/a", "/tmp/b"]
    assert _inet_addresses(trace) == ["127.0.0.1", "93.184.216.34"]


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kiosk_mode_writes_nothing_and_stays_on_loopback(demo_index: Path, tmp_path: Path):
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    # The clip replays in a loop (a webcam never ends): under strace on a loaded machine the detector
    # may come up after one pass of the clip is over.
    kiosk = (PROJECT / "config" / "kiosk.toml").read_text().replace("loop = false", "loop = true")
    assert "loop = true" in kiosk
    config_file = tmp_path / "kiosk-on-free-ports.toml"  # written before tracing starts
    config_file.write_text(kiosk + f"\n[network]\nport_offset = {factories.free_port_offset()}\n")
    home = tmp_path / "home"
    home.mkdir()
    trace_file = tmp_path / "trace.txt"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        HOME=str(home),
        TMPDIR=str(home),
        PYTHONUNBUFFERED="1",
        MEGAPIXELS_CONFIG=str(config_file),
        MEGAPIXELS_INDEX=str(demo_index),
        MEGAPIXELS_SOURCE=str(DEMO_CLIP),
        MEGAPIXELS_HEADLESS="1",
    )
    env.pop("MEGAPIXELS_IPC_DIR", None)
    env.pop("MEGAPIXELS_MATCHERS", None)
    graph = subprocess.Popen(
        [
            strace,
            "-f",
            "-qq",
            "-s",
            "256",
            "-e",
            f"trace={TRACED}",
            "-e",
            "signal=none",
            "-o",
            str(trace_file),
            sys.executable,
            "-m",
            "honcho",
            "start",  # as `make kiosk` starts it: one matcher serves every shard
        ],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in graph.stdout], daemon=True).start()
    results, log = [], []
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 200
        while not results and time.monotonic() < deadline and graph.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            log.append(line)
            if "display" in line.split("|")[0] and line.split("| ", 1)[-1].startswith("{"):
                results.append(json.loads(line.split("| ", 1)[1]))
        assert results, "the kiosk produced no result:\n" + "".join(log[-30:])
        assert results[0]["results"][0]["identity"] == "barack_obama"
        print(f"first result after {time.monotonic() - started:.1f} s under strace")
    finally:
        os.killpg(graph.pid, signal.SIGTERM)  # honcho and strace share the session
        try:
            graph.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(graph.pid, signal.SIGKILL)
            graph.wait()
    trace = trace_file.read_text()
    assert "shape_predictor_5_face_landmarks.dat" in trace, "the trace missed file calls"
    written = [p for p in _written_paths(trace) if not _allowed(p)]
    assert not written, f"kiosk mode wrote to disk: {sorted(set(written))[:20]}"
    assert not list(home.iterdir()), f"kiosk mode left files in HOME: {list(home.iterdir())}"
    addresses = _inet_addresses(trace)
    assert "127.0.0.1" in addresses, "the trace missed the loopback sockets"
    outside = sorted({a for a in addresses if not _is_loopback(a)})
    assert not outside, f"kiosk mode used addresses beyond this machine: {outside}"


# -- "Are my photos in it?": what a visitor types on the lookup screen ----------------------------

WRITE_OR_SEND = re.compile(r"^(\d+) +(write|pwrite64|sendto|sendmsg)\((.*)")


def _sent_or_written(trace: str) -> list[str]:
    """The lines of ``trace`` that hand bytes to a file, pipe or socket (with as much of the bytes as strace showed)."""
    return [line for line in trace.splitlines() if WRITE_OR_SEND.match(line)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_what_a_visitor_types_to_look_up_their_photos_is_never_written_logged_or_sent(
    x_display: str, upstream, ipc_dir: Path, tmp_path: Path, megaface_index: Path
):
    """The Kivy window in kiosk mode, logging at DEBUG, under ``strace -f``, over a visitor's results:
    an account is typed on the on-screen keys and searched, a photo id typed on the (physical)
    keyboard and searched with Enter (which is also the USB print button's key here), Back, and the
    screen reopened. In the trace, no file is written (bytecode caches aside) and no write or send
    of any kind (log lines, sockets, pipes) carries what was typed, nor the account it found; the
    trace does show the window's log lines and its messages, so it would have seen them."""
    from benchmarks.graph import logged
    from tests import kiosk_screen as ks
    from tests.kiosk_fakes import FakePrinter, display_config

    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    meta = store.Metadata(megaface_index)
    entries = list(meta.lookup(list(range(store.read_manifest(megaface_index).real))).values())
    meta.close()
    accounts = Counter(e.nsid for e in entries)
    nsid = accounts.most_common(1)[0][0]
    photo_id = next(e.photo_id for e in entries if e.nsid != nsid and accounts[e.nsid] > 1)
    owner = next(e.nsid for e in entries if e.photo_id == photo_id)
    toml = display_config().replace('path = "build/no-index-here"', f'path = "{megaface_index}"')
    toml = "[mode]\nkiosk = true\n" + toml + '\n[button]\nbackend = "key"\nkey = "enter"\n'
    env = ks.kiosk_env(tmp_path, x_display, ipc_dir, toml)
    trace_file = tmp_path / "trace.txt"
    upstream.send_garbage = False
    printer = FakePrinter(upstream)
    # The print button's end of ``session`` (bound as the button actor binds it): without a subscriber
    # the window's PUB would send nothing, and the trace would show no message to look into.
    ctx = zmq.Context()
    button = open_socket(ctx, upstream.cfg, "session", "button", receiving=True)
    heard: list[bytes] = []
    # write and pwrite64 on top of the file and network calls: log lines and pipes (the X server's
    # traffic goes by writev and is left out: pixels, megabytes of them)
    traced = [strace, "-f", "-qq", "-s", "65536", "-e", f"trace={TRACED},write,pwrite64", "-e", "signal=none"]
    window = subprocess.Popen(
        [*traced, "-o", str(trace_file), sys.executable, "-m", "ui_kivy"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: list[tuple[str, str]] = []
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in window.stdout], daemon=True).start()

    def wait_for(needle: str, what: str, timeout_s: float = 30) -> str:
        found = logged("display", needle)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            while button.poll(0):
                heard.append(b"".join(button.recv_multipart()))
            try:
                seen.append(("display", lines.get(timeout=0.2).rstrip("\n")))
            except queue.Empty:
                assert window.poll() is None, "the window exited:\n" + "\n".join(x for _, x in seen[-30:])
            if (line := found(seen)) is not None:
                return line
        raise AssertionError(f"no {what} within {timeout_s} s:\n" + "\n".join(x for _, x in seen[-30:]))

    try:
        wait_for("window ready", "window", 120)
        wait_for("print_lit=True", "the visitor's results", 60)
        ks.click(x_display, *ks.LOOKUP_BUTTON_XY)
        wait_for("lookup screen opened", "the lookup screen")
        ks.tap_keys(x_display, [*nsid.lower(), "search"])
        wait_for("lookup answered (hit)", "the account's answer")
        ks.tap_keys(x_display, ["clear"])
        # Kivy hands touches to the window a frame later than typed text: typing waits for the clear
        ks.grab_until(x_display, ks.lookup_field_empty, "lookup_traced_cleared.png")
        for digit in photo_id:
            ks.press_key(x_display, digit)
        seen.clear()
        ks.press_key(x_display, "Return")
        wait_for("lookup answered (hit)", "the photo's answer")
        ks.click(x_display, *ks.LOOKUP_BACK_XY)
        wait_for("lookup screen closed (Back)", "Back")
        ks.click(x_display, *ks.LOOKUP_BUTTON_XY)
        wait_for("lookup screen opened", "the lookup screen again")
        assert printer.receive() is None, "Enter on the lookup screen printed"
    finally:
        os.killpg(window.pid, signal.SIGTERM)  # strace and the window share the session
        try:
            window.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(window.pid, signal.SIGKILL)
            window.wait()
        printer.close()
        button.close(linger=0)
        ctx.term()
    trace = trace_file.read_text(errors="replace")
    written = [p for p in _written_paths(trace) if not _allowed(p)]
    assert not written, f"the window wrote to disk: {sorted(set(written))[:20]}"
    assert not ks.left_in_home(env), f"the window wrote into its HOME: {ks.left_in_home(env)}"
    out = _sent_or_written(trace)
    assert any("lookup screen opened" in line for line in out), "the trace missed the window's log lines"
    assert heard, "no session message reached the test's button socket"
    assert any("session" in line and "sendto(" in line for line in out), "the trace missed the window's messages"
    for secret in (nsid, nsid.lower(), photo_id, owner):
        leaks = [line[:200] for line in out if secret in line]
        assert not leaks, f"{secret!r}, typed or found on the lookup screen, was written or sent: {leaks[:3]}"
        assert not [m for m in heard if secret.encode() in m], f"{secret!r} was in a session message"


# -- memory: what the actors still hold once the visitor has gone ---------------------------------

CHUNK_BYTES = 64 << 20
# Descriptors are looked for as 32-byte windows (8 float32 or 4 float64 components) taken at every
# 4-byte step of each descriptor. 32 bytes of a descriptor's distinct, non-zero floats never occur by
# chance (nor as zero runs, fill patterns or pointers), yet a copy whose first 16 bytes a freed block's
# list pointers overwrote, or any slice of 35 bytes or more, still contains a whole window.
WINDOW_BYTES = 32
WINDOWS_PER_DESCRIPTOR = (128 * 4 - WINDOW_BYTES) // 4 + 1  # a whole float32 copy: 121 windows


def _writable_mappings(pid: int) -> list[tuple[int, int, str]]:
    """(start, end, name) of each writable mapping of ``pid`` with pages in RAM or swap.

    A mapping none of whose pages was ever touched (glibc reserves 64 MiB per thread arena) reads
    as zeros: skipping those makes the scan several times faster and misses nothing.
    """
    mappings, current = [], None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                span, perms = fields[:2]
                lo, hi = (int(x, 16) for x in span.split("-"))
                name = Path(fields[5].strip()).name if len(fields) > 5 else "anonymous"
                current = (lo, hi, name) if perms.startswith("rw") else None
            elif fields[0] in ("Rss:", "Swap:") and current is not None and int(fields[1]) > 0:
                mappings.append(current)
                current = None
    return mappings


def _scan_memory(pid: int, count: Callable[[bytes], int], overlap: int) -> dict[str, int]:
    """Hits of ``count`` in every writable mapping of process ``pid``, by mapping (needs root).

    Chunks overlap by ``overlap`` bytes (the needle length - 1): a needle across a chunk border is
    found once, never twice.
    """
    found: Counter[str] = Counter()
    with open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for lo, hi, name in _writable_mappings(pid):
            for start in range(lo, hi, CHUNK_BYTES):
                try:
                    mem.seek(start)
                    data = mem.read(min(hi, start + CHUNK_BYTES + overlap) - start)
                except (OSError, ValueError):
                    break
                hits = count(data)
                if hits:
                    found[name] += hits
    return dict(found)


class DescriptorWindows:
    """Counts, at any byte offset of a buffer, the 32-byte windows of the given descriptors.

    A first pass looks up the low 24 bits of every 4-byte word (at all four byte offsets) in a
    table of the windows' first words, so the cost doesn't grow with the number of windows; the few
    candidates are then compared in full. Windows whose first word has zero low bits (the low half
    of a float32 value widened to float64) are left out: they would make every zero word a candidate,
    and the window 4 bytes on covers the same copy.
    """

    def __init__(self, descriptors: list[bytes]):
        self.windows = {
            w
            for d in descriptors
            for i in range(0, len(d) - WINDOW_BYTES + 1, 4)
            if (w := d[i : i + WINDOW_BYTES])[:3] != b"\0\0\0"
        }
        self.table = np.zeros(1 << 24, bool)
        for w in self.windows:
            self.table[int.from_bytes(w[:3], "little")] = True

    def __call__(self, data: bytes) -> int:
        hits = 0
        for offset in range(4):
            words = np.frombuffer(data, "<u4", count=(len(data) - offset) // 4, offset=offset)
            for i in np.flatnonzero(self.table[words & 0xFFFFFF]):
                at = offset + 4 * int(i)
                hits += data[at : at + WINDOW_BYTES] in self.windows
        return hits


def test_descriptor_windows_find_whole_shifted_and_partial_copies_only():
    rng = np.random.default_rng(7)
    d32 = rng.standard_normal(128).astype("<f4")
    other = rng.standard_normal(128).astype("<f4")
    find = DescriptorWindows([d32.tobytes(), d32.astype("<f8").tobytes()])
    noise = rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    assert find(noise + bytes(50_000) + other.tobytes() + b"\xa5" * 4096) == 0
    assert find(noise[:3] + d32.tobytes() + noise) == WINDOWS_PER_DESCRIPTOR  # any byte alignment
    assert find(bytes(16) + d32.tobytes()[16:]) == WINDOWS_PER_DESCRIPTOR - 4  # head overwritten
    assert find(noise[:1] + d32.tobytes()[101:141] + noise[:5]) >= 1  # a 40-byte slice
    assert find(b"\x01" + d32.astype("<f8").tobytes()) >= 120  # the float64 form, widened by dlib


def _visit_folder(folder: Path) -> list[np.ndarray]:
    """20 frames of the demo clip's visitor, then 20 of an empty, textured scene; the visitor's RGB frames."""
    import cv2

    folder.mkdir()
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    visitor = []
    for i in range(40):
        ok, bgr = cap.read()
        assert ok
        if i >= 20:
            small = cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / f"{i:03d}.png"), small)
            visitor.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    cap.release()
    for i in range(40, 60):  # the visitor has left: an empty, textured scene
        empty = np.random.default_rng(i).integers(0, 255, (360, 640, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), empty)
    return visitor


class Tap:
    """The test's own subscriptions to ``queries`` and ``faces``: the visitor's exact descriptors and chips."""

    def __init__(self, cfg: config.Config):
        self.ctx = zmq.Context()
        self.socks = []
        for topic in ("queries", "faces"):
            sock = self.ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.RCVHWM, 10_000)
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            sock.connect(endpoint(topic, "ipc", cfg["network"]["ipc_dir"]))
            self.socks.append(sock)
        self.queries: list[bytes] = []
        self.chips: dict[bytes, None] = {}  # in order, without repeats
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in self.socks:
            poller.register(sock, zmq.POLLIN)
        while not self.stop.is_set():
            for sock, _ in poller.poll(100):
                msg = decode(sock.recv_multipart())
                if isinstance(msg, Query):
                    self.queries.append(msg.descriptor)
                elif msg.chip:
                    self.chips[msg.chip] = None

    def close(self) -> None:
        if self.stop.is_set():
            return
        self.stop.set()
        self.thread.join(2)
        for sock in self.socks:
            sock.close(0)
        self.ctx.term()


def _first_obama_after(query_id: int) -> Callable[[list], bool]:
    return lambda seen: any(
        r["query_id"] > query_id and r["results"] and r["results"][0]["identity"] == "barack_obama"
        for r in display_results(seen)
    )


# The actors that handle the visitor's descriptors or results, so scrub once they have gone.
SCRUBBED = ("detector.1", "encoder.1", "matcher.1", "reducer.1", "display.1")


def _scrubbed_after_the_last_result(seen: list[tuple[str, str]]) -> bool:
    """Every actor that handles visitor data has scrubbed since the last result (an actor that stalled
    for ``scrub_after_s`` mid-visit scrubs twice: the second scrub counts)."""
    last = max((i for i, (n, line) in enumerate(seen) if n.startswith("display") and line.startswith("{")), default=-1)
    return all(any(n == name and "privacy scrub" in line for n, line in seen[last + 1 :]) for name in SCRUBBED)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_after_the_visitor_leaves_no_actor_holds_their_frames_or_descriptors(
    demo_index: Path, ipc_dir: Path, tmp_path: Path
):
    """A visitor in 20 frames, then an empty scene: once every actor has scrubbed, no actor's memory
    holds the visitor's pixels (frames, face chips) or descriptors; a second visitor is searched as usual."""
    import faces
    from actors.camera import replay_control
    from benchmarks.graph import Graph, holds, logged

    if os.geteuid() != 0:
        pytest.skip("reading another process's memory needs root")
    visitor = _visit_folder(tmp_path / "visit")
    # 256-byte runs from the face region (rows 100..250) of every visitor frame.
    pixels = [rgb[row, 250 : 250 + 85].tobytes()[:256] for rgb in visitor for row in (120, 180, 240)]
    kiosk = (PROJECT / "config" / "kiosk.toml").read_text()
    # The camera waits paused until the actors have loaded their models, so no visitor frame is missed.
    cfg_file = tmp_path / "kiosk.toml"
    cfg_file.write_text(kiosk.replace("[camera]\n", "[camera]\nfolder_fps = 10.0\npaused = true\n"))
    env = {
        "MEGAPIXELS_CONFIG": str(cfg_file),
        "MEGAPIXELS_IPC_DIR": str(ipc_dir),
        "MEGAPIXELS_INDEX": str(demo_index),
        "MEGAPIXELS_SOURCE": str(tmp_path / "visit"),
        "MEGAPIXELS_HEADLESS": "1",
    }
    cfg = config.load(cfg_file, env=env)
    assert cfg["mode"]["kiosk"] and cfg["camera"]["paused"]
    graph = Graph(env)
    tap = Tap(cfg)
    graph.start_all()
    try:
        # As installed: one matcher serves both shards, one thread each.
        ready = {"detector.1": "using", "encoder.1": "using", "matcher.1": "shards 0,1 of 2"}
        everyone_ready = holds(lambda seen: all(logged(n, t)(seen) for n, t in ready.items()))
        graph.wait_for(everyone_ready, "the actors ready", 120, since=0)
        assert replay_control.send(cfg, "resume").state == "replay"
        graph.wait_for(holds(_first_obama_after(0)), "a result for the visitor", 60, since=0)
        graph.wait_for(logged("camera.1", "end of"), "the end of the replay", 60, since=0)
        scrub_after_s = cfg["privacy"]["scrub_after_s"]
        graph.wait_for(holds(_scrubbed_after_the_last_result), "every actor's scrub", scrub_after_s + 30, since=0)
        # The tap's own connection keeps the detector's last query in its send buffer: end it too
        # (the detector frees it as soon as it sees the disconnection, long before the scan below).
        tap.close()
        queries = tap.queries
        assert queries, "the tap heard no query"
        raw = [faces.describe(np.frombuffer(c, np.uint8).reshape(150, 150, 3), 1) for c in tap.chips]
        # The first query of a track is the encoder's descriptor itself: the tap and our encoding agree.
        assert queries[0] in {d.astype("<f4").tobytes() for d in raw}
        descriptors = [
            *queries,
            *(np.frombuffer(q, "<f4").astype("<f8").tobytes() for q in queries),
            *(d.astype("<f4").tobytes() for d in raw),
            *(d.astype("<f8").tobytes() for d in raw),  # dlib's own output is float64
        ]
        find = DescriptorWindows(descriptors)
        # ...and the aligned face chips the detector cut from their frames: 256-byte runs of two rows of each.
        chip_rows = [c[row * 450 : row * 450 + 256] for c in tap.chips for row in (50, 100)]
        held_chips = {}
        started = time.monotonic()
        held_pixels, held_descriptors = {}, {}
        for name, proc in graph.procs.items():
            held_pixels[name] = _scan_memory(proc.pid, lambda data: sum(data.count(n) for n in pixels), 255)
            held_descriptors[name] = _scan_memory(proc.pid, find, WINDOW_BYTES - 1)
            held_chips[name] = _scan_memory(proc.pid, lambda data: sum(data.count(n) for n in chip_rows), 255)
        print(f"{len(queries)} queries, {len(raw)} chips; memory scanned in {time.monotonic() - started:.1f} s")
        print("\n".join(line for _, line in graph.history if "privacy scrub" in line))
        assert not any(held_pixels.values()), f"visitor pixels still in memory after they left: {held_pixels}"
        assert not any(held_chips.values()), f"the visitor's face chips still in memory: {held_chips}"
        assert not any(held_descriptors.values()), (
            f"windows of the visitor's descriptors ({WINDOWS_PER_DESCRIPTOR} per whole float32 copy) still in "
            f"memory after every actor scrubbed: {held_descriptors}"
        )
        # A second visitor after the scrub: searched as usual.
        last_query = max(r["query_id"] for r in display_results(graph.history))
        assert replay_control.send(cfg, "seek", 0.0).state == "replay"
        graph.wait_for(holds(_first_obama_after(last_query)), "a result for the second visitor", 60)
    finally:
        graph.stop_all()
        tap.close()


# -- the scrub's parts, without the graph -----------------------------------------------------------


def test_a_wrong_scrub_setting_names_the_key_and_the_allowed_range():
    with pytest.raises(config.ConfigError, match=r"privacy\.scrub_after_s = -1\.0: allowed range is 0 to 3600"):
        config.validate({"privacy": {"scrub_after_s": -1.0}})
    assert config.validate({})["privacy"]["scrub_after_s"] == 3.0


def test_numpy_small_buffer_cache_is_emptied():
    from actors.runtime import privacy

    a = np.full(128, 7.25, np.float32)  # a descriptor-sized data buffer
    address = a.ctypes.data
    del a
    b = np.empty(128, np.float32)
    assert b.ctypes.data == address and b[0] == 7.25, "numpy handed the cached buffer back as it was"
    del b
    privacy.flush_numpy_cache()
    c = np.empty(128, np.float32)
    assert not c.any(), "the cached buffer still holds the old values"


FREED_BLOCK_PROBE = """
import ctypes, sys
from actors.runtime import privacy
privacy.restart_without_malloc_cache()
assert privacy.scrub_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
block = libc.malloc(512)
ctypes.memset(block, 0x42, 512)
libc.free(block)
print(ctypes.string_at(block + 64, 64).hex())
"""


def test_kiosk_actors_restart_with_glibcs_thread_cache_off_so_freed_blocks_are_overwritten():
    """A freed 512-byte block (a descriptor's size) is overwritten only once the thread cache is off."""
    if not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None:
        pytest.skip("glibc only")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    probe = subprocess.run(
        [sys.executable, "-c", FREED_BLOCK_PROBE], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "a5" * 64, "the freed block kept its bytes"
    cached = FREED_BLOCK_PROBE.replace("privacy.restart_without_malloc_cache()", "")
    probe = subprocess.run([sys.executable, "-c", cached], cwd=PROJECT, env=env, capture_output=True, text=True)
    assert probe.stdout.strip() == "42" * 64, "without the restart, glibc's thread cache keeps the block as it was"


class Forgetful(Echo):
    """The Echo matcher, counting its scrubs."""

    scrubbed = 0

    def on_scrub(self) -> None:
        self.scrubbed += 1


@pytest.mark.timeout(60)
def test_the_run_loop_scrubs_once_after_the_visitor_data_stops_and_keeps_working(ipc_dir: Path):

    raw = {
        "mode": {"kiosk": True},
        "privacy": {"scrub_after_s": 0.3},
        "network": {"transport": "ipc", "ipc_dir": str(ipc_dir)},
    }
    actor = Forgetful(config.validate(raw))
    with matcher_in_thread(actor) as (_, _, pub, pull):
        factories.send_until_answered(pub, pull, [encode(factories.query(1))], 1)
        end = time.monotonic() + 10
        while actor.stats["privacy.scrubs"] < 1 and time.monotonic() < end:
            pull.poll(50)
        assert actor.scrubbed == actor.stats["privacy.scrubs"] == 1
        # Both of its sockets were reopened, and it answers the next visitor as before.
        assert factories.send_until_answered(pub, pull, [encode(factories.query(2))], 2).rows == [1]
        assert actor.scrubbed == 1, "no second scrub while the visitor's data flows"
        end = time.monotonic() + 10
        while actor.stats["privacy.scrubs"] < 2 and time.monotonic() < end:
            pull.poll(50)
        assert actor.scrubbed == 2, "the next visitor is scrubbed too"
