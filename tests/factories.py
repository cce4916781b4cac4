"""Shared builders for tests: messages, configs, results, free ports, and actors run in a thread.

Tests import these from here instead of from each other. Nothing here is a fixture (those live in
conftest.py); everything is a plain function or class a test calls.
"""

from __future__ import annotations

import contextlib
import csv
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zmq

import config
from actors import runtime
from messages import (
    CHIP_PX,
    TOPICS,
    ButtonPress,
    ButtonStatus,
    CameraStatus,
    Candidates,
    Credit,
    Encoded,
    FaceJob,
    Faces,
    Frame,
    Header,
    Matches,
    PrintJob,
    PrintReply,
    Query,
    ReplayControl,
    Result,
    SessionState,
    decode,
    open_socket,
)


def cfg(**sections: Any) -> config.Config:
    """The default config with these sections' keys overridden (a short shard deadline)."""
    raw: dict[str, Any] = {"search": {"shard_deadline_ms": 50}}
    raw.update(sections)
    return config.validate(raw)


def header(frame_id: int = 1, src: str = "test") -> Header:
    return Header(seq=1, t_ns=time.monotonic_ns(), src=src, frame_id=frame_id)


def query(qid: int, descriptor: np.ndarray | None = None) -> Query:
    descriptor = np.zeros(128) if descriptor is None else descriptor
    return Query(header(), qid, time.monotonic_ns(), 5, descriptor.astype("<f4").tobytes())


def candidates(qid: int, shard: int, rows: list[int], dists: list[float], n_shards: int = 2) -> Candidates:
    return Candidates(header(), qid, time.monotonic_ns(), 5, shard, n_shards, rows, dists)


def result(
    rank: int = 1,
    identity: str = "barack_obama",
    distance: float = 0.35,
    photo: str = "barack_obama/obama.jpg",
    row: int = 3,
    **more: Any,
) -> Result:
    return Result(rank, identity, distance, photo, row, **more)


def matches(
    results: list[Result], query_id: int = 1, captured_ns: int | None = None, hdr: Header | None = None
) -> Matches:
    """A complete result list; captured ``latency_ms`` before its header unless told."""
    hdr = hdr or header()
    captured = hdr.t_ns - 12_500_000 if captured_ns is None else captured_ns
    return Matches(hdr, query_id, captured, results, False, [], (hdr.t_ns - captured) / 1e6)


# One message of every type on the wire, for round trips and fuzzing.
H = Header(seq=7, t_ns=time.monotonic_ns(), src="test", frame_id=42)
RESULT = result()
SAMPLES = [
    Frame(H, 4, 2, "replay:x.mp4", bytes(range(24))),
    Faces(H, 640, 360, 123, [[1, 2, 50, 60]], 0, bytes(CHIP_PX * CHIP_PX * 3)),
    Faces(H, 640, 360, 123, [], -1, b""),
    Query(H, 99, 123, 5, np.arange(128, dtype="<f4").tobytes()),
    Candidates(H, 99, 123, 5, 1, 2, [10, 11], [0.3, 0.4]),
    Matches(H, 99, 123, [RESULT, Result(2, "x", 0.5, "x/y.jpg", 4, [1, 2, 3, 4], 0.2, "look-alike")], True, [1], 12.5),
    PrintJob(H, 99, [RESULT]),
    PrintReply(H, 99, True, "/tmp/receipt.png"),
    FaceJob(H, 3, 123, 7, bytes(CHIP_PX * CHIP_PX * 3)),
    Encoded(H, 3, 123, 7, np.arange(128, dtype="<f4").tobytes()),
    Credit(H, 1, 123456789),
    CameraStatus(H, "lost", "webcam:0", "no such device", 12, 1.0),
    ReplayControl(H, "rate", 0.5),
    # a result with its provenance (the Flickr account, photo id, licence, date, URL)
    Matches(H, 98, 1, [result(nsid="1@N01", photo_id="2", licence="CC0", date_taken="2009", url="u")], False, [], 1.0),
    SessionState(H, "results", True),
    ButtonPress(H, "serial:/dev/ttyACM0"),
    ButtonStatus(H, "missing", "serial", "serial:/dev/ttyACM0", "no such file", "OFF", 3, 1),
]


def free_port_offset() -> int:
    """An offset that puts every registered port on a free loopback port (no fixed ports here)."""
    for _ in range(50):
        offset = random.randrange(10_000, 50_000)
        try:
            for t in TOPICS.values():
                with socket.socket() as s:
                    s.bind(("127.0.0.1", t.port + offset))
            return offset
        except OSError:
            continue
    raise RuntimeError("no free port range found")


def send_until_answered(pub: zmq.Socket, pull: zmq.Socket, messages: list, want_qid: int, deadline_s: float = 10.0):
    """Publish ``messages`` repeatedly (a SUB joins late) until candidates for want_qid arrive."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for m in messages:
            pub.send_multipart(m)
        if pull.poll(100):
            reply = decode(pull.recv_multipart())
            if reply.query_id == want_qid:
                return reply
    raise AssertionError(f"no answer to query {want_qid} within {deadline_s} s")


class Echo(runtime.Actor):
    """Answers each query with one candidate; query 666 makes the handler raise."""

    ROLE = "matcher"
    RECEIVES = ("queries",)
    SENDS = ("candidates",)

    def handle(self, msg: Query):
        if msg.query_id == 666:
            raise RuntimeError("boom")
        return [Candidates(self.header(), msg.query_id, msg.captured_ns, msg.k, 0, 1, [1], [0.5])]


@contextlib.contextmanager
def actor_in_thread(actor: runtime.Actor, ctx: zmq.Context) -> Iterator[threading.Thread]:
    """``actor`` run by the real run loop in a thread of this process, on ``ctx``; stopped (its
    sockets closed) when the block ends. For devices only this process can reach (gpiozero's mock pins)."""
    stop = runtime.StopFlag()
    thread = threading.Thread(target=runtime.run, args=(actor, ctx, stop), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(5)
        assert not thread.is_alive(), f"{actor.name} did not stop within 5 s"


@contextlib.contextmanager
def matcher_in_thread(actor: runtime.Actor) -> Iterator[tuple]:
    """``actor`` (a matcher) running in a thread, with the test's PUB on queries and PULL on
    candidates; yields (stop, thread, pub, pull) and stops and closes everything after."""
    ctx = zmq.Context()
    stop = runtime.StopFlag()
    thread = threading.Thread(target=runtime.run, args=(actor, ctx, stop), daemon=True)
    thread.start()
    pub = open_socket(ctx, actor.cfg, "queries", "detector", receiving=False)
    pull = open_socket(ctx, actor.cfg, "candidates", "reducer", receiving=True)
    try:
        yield stop, thread, pub, pull
    finally:
        stop.set()
        thread.join(2)
        pub.close(0)
        pull.close(0)
        ctx.term()


SUPERVISOR = """
import os, subprocess, sys, time
forked, argv = sys.argv[1] == "forked", sys.argv[2:]
if forked and os.fork() == 0:  # honcho's way: a forked copy of itself runs the command and waits
    subprocess.run(argv)
    os._exit(0)
elif not forked:
    subprocess.Popen(argv)
time.sleep(600)
"""


def start_supervised(argv: list[str], forked: bool = True, **popen: Any) -> subprocess.Popen:
    """``argv`` started by a stand-in supervisor, as honcho does (through a forked copy of itself) or
    directly; returns the supervisor (text output of all three, its own session: ``os.killpg``)."""
    how = "forked" if forked else "direct"
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, how, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **popen,
    )


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has exited; only its parent's wait is missing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


# --- the MegaFace sample (../shared/data/megaface_sample) ------------------------------------------


def megaface_truth(shared_data: Path) -> dict[str, str]:
    """Every sample photo's path and its account (truth.tsv)."""
    with open(shared_data / "megaface_sample" / "truth.tsv", newline="") as f:
        return {row["path"]: row["nsid"] for row in csv.DictReader(f, delimiter="\t")}


def megaface_flickr_rows(shared_data: Path) -> dict[str, dict[str, str]]:
    """The sample's flickr_metadata.csv rows by photo id (photo_id, nsid, licence, date_taken)."""
    with open(shared_data / "megaface_sample" / "flickr_metadata.csv", newline="") as f:
        return {row["photo_id"]: row for row in csv.DictReader(f)}


def megaface_photo_id(path: str) -> str:
    """The photo id in a MegaFace file name (``<photo id>_<face>.jpg``)."""
    return Path(path).name.split("_")[0]


def megaface_subset(shared_data: Path, dest: Path) -> tuple[dict[str, str], str]:
    """Four accounts with several photos and three with one, copied with their sidecars and the
    sample's flickr_metadata.csv; and an eighth account whose folder the test makes unreadable."""
    truth = megaface_truth(shared_data)
    by_account: dict[str, list[str]] = {}
    for path, nsid in truth.items():
        by_account.setdefault(nsid, []).append(path)
    several = sorted(a for a, paths in by_account.items() if 4 <= len(paths) <= 6)[:4]
    single = sorted(a for a, paths in by_account.items() if len(paths) == 1)[:4]
    chosen = {p: truth[p] for a in several + single for p in by_account[a]}
    sample = shared_data / "megaface_sample"
    for path in chosen:
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        for name in (path, path + ".json"):
            if (sample / name).exists():
                shutil.copy(sample / name, dest / name)
    shutil.copy(sample / "flickr_metadata.csv", dest / "flickr_metadata.csv")
    hidden = single[-1]
    return {p: a for p, a in chosen.items() if a != hidden}, str(Path(by_account[hidden][0]).parent)
