"""Privacy, proven: the kiosk graph writes nothing and talks to nothing beyond this machine.

The whole Procfile runs in kiosk mode (config/kiosk.toml: TCP on loopback, as installed) with a
replayed visitor, under ``strace -f``, which records every file and network system call of
every process. The test then reads the trace:

- no file is created, written, renamed or deleted anywhere, except Python's own bytecode cache
  (``__pycache__/*.pyc``: code, not visitor data) — transient files count too, since every
  call is in the trace, not just what is left at the end;
- every TCP/UDP address bound, connected to or sent to is loopback.
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
from pathlib import Path

import pytest

from .conftest import DEMO_CLIP, PROJECT
from .test_curve import _free_port_offset

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


@pytest.mark.timeout(300)
def test_kiosk_mode_writes_nothing_and_stays_on_loopback(demo_index: Path, tmp_path: Path):
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    kiosk = (PROJECT / "config" / "kiosk.toml").read_text()
    config_file = tmp_path / "kiosk-on-free-ports.toml"  # written before tracing starts
    config_file.write_text(kiosk + f"\n[network]\nport_offset = {_free_port_offset()}\n")
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
            "start",
            "-c",
            "matcher=2",
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


def _memory_hits(pid: int, needles: list[bytes]) -> int:
    """How many times any needle occurs in the writable memory of process ``pid`` (needs root)."""
    hits = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, ValueError):
                continue
            hits += sum(data.count(n) for n in needles)
    return hits


@pytest.mark.timeout(300)
def test_after_the_visitor_leaves_no_actor_holds_their_frames(demo_index: Path, ipc_dir: Path, tmp_path: Path):
    """A visitor in 20 frames, then an empty scene: no actor's memory still holds the visitor's pixels."""
    import cv2
    import numpy as np

    from .graph import Graph

    if os.geteuid() != 0:
        pytest.skip("reading another process's memory needs root")
    frames_dir = tmp_path / "visit"
    frames_dir.mkdir()
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    visitor = []
    for i in range(40):
        ok, bgr = cap.read()
        assert ok
        if i >= 20:
            small = cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(frames_dir / f"{i:03d}.png"), small)
            visitor.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    cap.release()
    for i in range(40, 60):  # the visitor has left: an empty, textured scene
        empty = np.random.default_rng(i).integers(0, 255, (360, 640, 3), dtype=np.uint8)
        cv2.imwrite(str(frames_dir / f"{i:03d}.png"), empty)
    # 256-byte runs from the face region (rows 100..250) of every visitor frame.
    needles = [rgb[row, 250 : 250 + 85].tobytes()[:256] for rgb in visitor for row in (120, 180, 240)]
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(
        (PROJECT / "config" / "kiosk.toml").read_text() + "\n[camera]\nfolder_fps = 10.0\n"
        if "[camera]" not in (PROJECT / "config" / "kiosk.toml").read_text()
        else (PROJECT / "config" / "kiosk.toml").read_text().replace("[camera]", "[camera]\nfolder_fps = 10.0")
    )
    graph = Graph(
        {
            "MEGAPIXELS_CONFIG": str(cfg),
            "MEGAPIXELS_IPC_DIR": str(ipc_dir),
            "MEGAPIXELS_INDEX": str(demo_index),
            "MEGAPIXELS_SOURCE": str(frames_dir),
            "MEGAPIXELS_HEADLESS": "1",
        }
    )
    graph.start_all()
    try:
        graph.results(lambda r: r[-1]["results"][0]["identity"] == "barack_obama", 150)
        end = time.monotonic() + 60
        while time.monotonic() < end:  # the replay ends after the empty scene; the camera logs it
            name, line = graph.lines.get(timeout=60)
            if name.startswith("camera") and "end of" in line:
                break
        else:
            pytest.fail("the replay did not end")
        held = {name: _memory_hits(p.pid, needles) for name, p in graph.procs.items()}
    finally:
        graph.stop_all()
    assert not any(held.values()), f"visitor pixels still in memory after they left: {held}"
