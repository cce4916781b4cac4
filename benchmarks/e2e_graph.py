"""End to end through the real graph at 600k and 4.2M entries, with a per-stage timeline.

The whole Procfile runs under honcho (ipc sockets in a private folder, a 2-shard index served by
one matcher process with a thread per shard, or ``--matchers 2``: one process per shard) on an
index of the cached real LFW descriptors (benchmarks.lfw_descriptors) grown with synthetic
distractors to N entries, float16. The camera replays 640x480 frames (the bundled Obama clip,
letterboxed to 640x480) and a sniffer subscribes to ``frames``, ``faces``, ``queries`` and
``matches``: for every frame that became a result it prints when each stage's message was made
(header t_ns, monotonic clock, same machine).

    .venv/bin/python -m benchmarks.e2e_graph [--sizes 600000,4200000] [--seconds 40] [--matchers 1]
                                             [--kernel auto|bounded|faiss]

The index is written with its codes, so ``auto`` searches it with the bounded kernel;
``--kernel faiss`` runs the same graph on the float16 scan (``search.kernel`` in a copy of
config/test.toml).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import zmq

import config
from benchmarks import lfw_descriptors
from index import store
from messages import decode, endpoint

PROJECT = Path(__file__).resolve().parent.parent
CLIP = PROJECT / "demo" / "clips" / "obama_2s.mp4"


def index_of(n: int) -> Path:
    return lfw_descriptors.grown_index("e2e-index", n, "float16")


def frames_640x480(folder: Path) -> Path:
    cap = cv2.VideoCapture(str(CLIP))
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        scaled = cv2.resize(bgr, (640, round(h * 640 / w)), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((480, 640, 3), np.uint8)
        top = (480 - scaled.shape[0]) // 2
        canvas[top : top + scaled.shape[0]] = scaled
        cv2.imwrite(str(folder / f"{i:04d}.png"), canvas)
        i += 1
    return folder


def time_open(index: Path, kernel: str = "auto") -> float:
    """Seconds to open every shard (size, shape and sha256 checked) and make it resident, as matchers do."""
    from index import search

    t = time.perf_counter()
    manifest = store.read_manifest(index)
    for k in range(len(manifest.shards)):
        search.open_index(index, k, manifest, kernel)[0].close()
    store.Metadata(index).close()
    return time.perf_counter() - t


def config_with_kernel(folder: Path, kernel: str) -> Path:
    """config/test.toml with ``search.kernel`` set."""
    text = (PROJECT / "config" / "test.toml").read_text()
    assert "[search]\n" in text and "kernel" not in text
    out = folder / "e2e.toml"
    out.write_text(text.replace("[search]\n", f'[search]\nkernel = "{kernel}"\n', 1))
    return out


def run(n: int, seconds: float, frames: Path, matchers: int = 1, kernel: str = "auto") -> dict:
    index = index_of(n)
    print(f"  opening the {n:,}-entry index (checksums verified, made resident): {time_open(index, kernel):.1f} s")
    ipc = Path(tempfile.mkdtemp(prefix="mp-e2e-", dir="/tmp"))
    cfg_file = config_with_kernel(ipc, kernel)
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONUNBUFFERED="1",
        MEGAPIXELS_CONFIG=str(cfg_file),
        MEGAPIXELS_IPC_DIR=str(ipc),
        MEGAPIXELS_INDEX=str(index),
        MEGAPIXELS_SOURCE=str(frames),
        MEGAPIXELS_HEADLESS="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MEGAPIXELS_MATCHERS=str(matchers),
    )
    cfg = config.load(PROJECT / "config" / "test.toml", env={"MEGAPIXELS_IPC_DIR": str(ipc)})
    ctx = zmq.Context()
    subs = {}
    for topic in ("frames", "faces", "queries", "matches"):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, topic.encode())
        s.setsockopt(zmq.RCVHWM, 1000)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint(topic, "ipc", cfg["network"]["ipc_dir"]))
        subs[s] = topic
    poller = zmq.Poller()
    for s in subs:
        poller.register(s, zmq.POLLIN)
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-c", f"matcher={matchers}"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: dict[str, dict[int, int]] = {t: {} for t in subs.values()}
    latency: list[float] = []
    first_match = None
    try:
        end = time.monotonic() + 600
        while time.monotonic() < end:
            for s, _ in poller.poll(200):
                msg = decode(s.recv_multipart(), expect=subs[s])
                seen[subs[s]].setdefault(msg.header.frame_id, msg.header.t_ns)
                if subs[s] == "matches":
                    latency.append(msg.latency_ms)
                    if first_match is None:
                        first_match = time.monotonic()
                        end = first_match + seconds
    finally:
        honcho.send_signal(signal.SIGTERM)
        honcho.wait(timeout=15)
        for s in subs:
            s.close(0)
        ctx.term()
        shutil.rmtree(ipc, ignore_errors=True)
    stages = []
    for fid, t_match in seen["matches"].items():
        t0 = seen["frames"].get(fid)
        if t0 is None or fid not in seen["faces"] or fid not in seen["queries"]:
            continue
        stages.append(
            (
                (seen["faces"][fid] - t0) / 1e6,
                (seen["queries"][fid] - seen["faces"][fid]) / 1e6,
                (t_match - seen["queries"][fid]) / 1e6,
                (t_match - t0) / 1e6,
            )
        )
    return {"n": n, "latency_ms": latency, "stages": stages}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="600000,4200000")
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--matchers", type=int, default=1, help="matcher processes (1: one thread per shard)")
    p.add_argument("--kernel", default="auto", choices=("auto", "bounded", "faiss"), help="search.kernel")
    args = p.parse_args()
    import faces

    print(f"{faces.dlib_description()}; load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        frames = frames_640x480(Path(tmp))
        for n in (int(s) for s in args.sizes.split(",")):
            r = run(n, args.seconds, frames, args.matchers, args.kernel)
            lat = np.array(r["latency_ms"])
            st = np.array(r["stages"]) if r["stages"] else np.zeros((1, 4))
            print(
                f"\n{n:,} entries, kernel {args.kernel}, {args.matchers} matcher process(es): "
                f"{len(lat)} results in {args.seconds:.0f} s "
                f"(load {os.getloadavg()[0]:.1f})"
            )
            p50, p90 = np.percentile(lat, 50), np.percentile(lat, 90)
            print(f"  camera frame -> matches latency_ms: p50 {p50:.0f}  p90 {p90:.0f}  (p90/p50 {p90 / p50:.2f})")
            for q in (50, 90):
                det, enc, search_merge, total = np.percentile(st, q, axis=0)
                print(
                    f"  timeline p{q} (ms): frame -> faces {det:.0f} | faces -> query {enc:.0f}"
                    f" | query -> matches {search_merge:.0f} | total {total:.0f}"
                )


if __name__ == "__main__":
    main()
