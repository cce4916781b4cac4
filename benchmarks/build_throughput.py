"""Index build throughput: faces/s by engine, worker count, dlib, and where the face box comes from.

    .venv/bin/python -m benchmarks.build_throughput [--photos 200] [--workers 1,2] \\
        [--fast-python .venv-fast/bin/python] [--boxes sidecar,detector] [--upsample 1] [--baseline-photos 40]

The photos: a fixed shuffled sample of ``../shared/data/megaface_sample`` (LFW photos laid out as
MegaFace, ``FlickrFinal2/<prefix>/<NSID>/<photo id>_0.jpg``), only those that have a sidecar.

- ``sidecar``: built from the sample's own files; each one's ``.jpg.json`` box skips the detector.
- ``detector``: the same photos, byte for byte, from ``../shared/data/lfw`` (``truth.tsv`` maps
  each back), where no sidecar exists: dlib's HOG detector finds the face (``--upsample``).

Both are given to ``megapixels index build`` as a CSV manifest (absolute paths; the workers must
see them). The engine:

- **Dask**, when ``index.build.build`` accepts ``scheduler``: the dlib of this Python through
  ``scheduler=None`` (a LocalCluster of N worker processes, its start-up inside the timed
  build); the fast dlib through a cluster this script starts from ``--fast-python`` (``dask
  scheduler`` on 127.0.0.1, a free port, and ``dask worker --nworkers N --nthreads 1``), passed
  as ``scheduler="tcp://127.0.0.1:PORT"``. That Python needs the project and the same Dask.
- otherwise **the build's own process pool** (the output says so); the fast dlib's rows then come
  from this same script run by ``--fast-python`` in a child process.

``--fast-python`` is a venv where ``make kiosk-dlib`` installed the BLAS wheel (e.g. ``make install
VENV=.venv-fast && .venv-fast/bin/python -m faces.fast_dlib``). Without it only this Python's dlib
is measured. Each row: faces/s (faces indexed / wall time of the whole build: scan, hashing,
describing, writing, publishing), photos/s, the same for the describe phase alone ("describing":
the build report's ``photos_per_s``, without the engine's start-up and model loading, the
listing and the writing: the steady rate that scales to millions), the 1-minute load average
before and after (the machine is shared), the dlib in use. The naive baseline in the same run, for each dlib:
face_recognition's defaults (load_image_file, face_encodings: HOG upsample 1, one jitter) one photo
after another over the first ``--baseline-photos`` detector photos, times the worker count.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import faces
from index import build

PROJECT = Path(__file__).resolve().parent.parent
DATA = PROJECT.parent / "shared" / "data"
SAMPLE = DATA / "megaface_sample"
LFW = DATA / "lfw"
BOXES = ("sidecar", "detector")


@dataclass(frozen=True)
class Photo:
    sample_path: Path  # in megaface_sample, with its sidecar
    lfw_path: Path  # the same bytes in LFW, without one
    identity: str  # the invented Flickr account (NSID)


def sample(n: int) -> list[Photo]:
    """The first ``n`` photos with a sidecar of megaface_sample, in a fixed shuffled order."""
    with open(SAMPLE / "truth.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    photos = [
        Photo(SAMPLE / r["path"], LFW / r["lfw_person"] / r["lfw_photo"], r["nsid"])
        for r in rows
        if (SAMPLE / (r["path"] + ".json")).is_file()
    ]
    order = np.random.default_rng(0).permutation(len(photos))
    return [photos[i] for i in order[:n]]


def write_manifest(photos: list[Photo], boxes: str, path: Path) -> Path:
    """A CSV manifest of the photos, from the sample (sidecars beside them) or from LFW (none)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity", "url", "licence"])
        for p in photos:
            w.writerow([str(p.sample_path if boxes == "sidecar" else p.lfw_path), p.identity, "", "LFW: research use"])
    return path


def dask_engine() -> bool:
    """Whether this checkout's build runs on Dask (``build.build(..., scheduler=...)``)."""
    return "scheduler" in inspect.signature(build.build).parameters


def measure(photos: list[Photo], boxes: str, workers: int, upsample: int, scheduler: str | None = None) -> dict:
    """One whole build of ``photos``; ``scheduler`` is passed only when the build runs on Dask."""
    with tempfile.TemporaryDirectory(prefix="mp-throughput-") as tmp:
        manifest = write_manifest(photos, boxes, Path(tmp) / f"{boxes}.csv")
        kwargs = {"scheduler": scheduler} if dask_engine() else {}
        load_before = os.getloadavg()[0]
        t = time.monotonic()
        report = build.build(
            manifest,
            Path(tmp) / "idx",
            n_shards=2,
            workers=workers,
            progress=False,
            dtype="float16",
            quality=build.Quality(upsample=upsample),
            **kwargs,
        )
        seconds = time.monotonic() - t
    return {
        "photos": report["photos"],
        "indexed": report["indexed"],
        "describing": report.get("photos_per_s") or 0.0,  # the describe phase alone (no start-up, no writing)
        "seconds": seconds,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def row(dlib: str, workers: int, boxes: str, m: dict) -> str:
    return (
        f"  {dlib:<34} {workers:>7}  {boxes:<8} {m['indexed'] / m['seconds']:>8.1f} {m['photos'] / m['seconds']:>9.1f}"
        f" {m['describing']:>11.1f} {m['indexed']:>4}/{m['photos']:<4} {m['seconds']:>7.1f}"
        f"   {m['load_before']:.1f} / {m['load_after']:.1f}"
    )


HEADER = (
    f"  {'dlib':<34} {'workers':>7}  {'boxes':<8} {'faces/s':>8} {'photos/s':>9} {'describing':>11} {'indexed':>9}"
    f" {'seconds':>7}   load before / after"
)


def baseline(paths: list[str]) -> dict:
    """face_recognition's defaults, one photo after another: the naive way to build a gallery."""
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import face_recognition

    load_before = os.getloadavg()[0]
    found = 0
    t = time.monotonic()
    for path in paths:
        found += bool(face_recognition.face_encodings(face_recognition.load_image_file(path)))
    seconds = time.monotonic() - t
    return dict(photos=len(paths), found=found, seconds=seconds, load_before=load_before, load_after=os.getloadavg()[0])


def baseline_row(dlib: str, workers: int, b: dict) -> str:
    rate = b["photos"] / b["seconds"]
    return (
        f"  face_recognition defaults, {dlib}: {rate:.2f} photos/s in 1 process ({b['found']} of {b['photos']} with"
        f" a face); x {workers} workers at best: {rate * workers:.1f} photos/s"
        f" (load {b['load_before']:.1f} / {b['load_after']:.1f})"
    )


def dlib_label(description: str) -> str:
    """The dlib as the rows name it: fast (BLAS) or prebuilt (no BLAS), from faces.dlib_description()."""
    version = description.split(" (")[0]
    return f"fast ({version}, BLAS)" if "(BLAS" in description else f"prebuilt ({version}, no BLAS)"


def pool_rows(args: argparse.Namespace, photos: list[Photo], label: str) -> None:
    """Every row of this Python's dlib on the build's own process pool (also the --child mode)."""
    for n in args.workers:
        for boxes in args.boxes:
            print(row(label, n, boxes, measure(photos, boxes, n, args.upsample)), flush=True)
    print(baseline_row(label, max(args.workers), baseline(lfw_paths(photos, args))), flush=True)


def lfw_paths(photos: list[Photo], args: argparse.Namespace) -> list[str]:
    return [str(p.lfw_path) for p in photos[: args.baseline_photos]]


def child_env() -> dict[str, str]:
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(PROJECT), PYTHONUNBUFFERED="1")


def python_dlib(python: str) -> str:
    probe = "import faces; print(faces.dlib_description())"
    out = subprocess.run([python, "-c", probe], cwd=PROJECT, env=child_env(), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"--fast-python {python} cannot import the project's faces package:\n{out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM to the process group this script started for ``proc``, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def dask_cluster(python: str, workers: int, folder: Path) -> Iterator[str]:
    """A Dask scheduler on 127.0.0.1 and ``workers`` one-thread worker processes, all run by
    ``python``; yields the scheduler's address once every worker has joined."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    common = {"cwd": PROJECT, "env": child_env(), "start_new_session": True, "stdin": subprocess.DEVNULL}
    logs = open(folder / f"dask-{workers}.log", "ab")  # noqa: SIM115 (closed below)
    procs = [
        subprocess.Popen(
            [python, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
             "--no-dashboard"],
            stdout=logs, stderr=logs, **common,
        )
    ]  # fmt: skip
    try:
        procs.append(
            subprocess.Popen(
                [python, "-m", "distributed.cli.dask_worker", address, "--nworkers", str(workers), "--nthreads", "1",
                 "--no-dashboard", "--local-directory", str(folder)],
                stdout=logs, stderr=logs, **common,
            )
        )  # fmt: skip
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)
        logs.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=200, help="photos per build (of the 969 with a sidecar)")
    p.add_argument("--workers", default="1,2", help="worker counts, in order")
    p.add_argument("--boxes", default="sidecar,detector", help="where the face box comes from: sidecar, detector")
    p.add_argument("--upsample", type=int, default=1, help="HOG upsampling for the detector photos (build --upsample)")
    p.add_argument("--baseline-photos", type=int, default=40, help="photos for the face_recognition baseline")
    p.add_argument("--fast-python", help="a Python whose dlib is the BLAS build (make kiosk-dlib)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.boxes = [b for b in args.boxes.split(",") if b]
    if not set(args.boxes) <= set(BOXES):
        p.error(f"--boxes: allowed {', '.join(BOXES)}, got {','.join(args.boxes)}")
    photos = sample(args.photos)
    label = dlib_label(faces.dlib_description())
    if args.child:  # run by the parent through --fast-python: this Python's rows, on the pool
        pool_rows(args, photos, label)
        return
    engine = dask_engine()
    print(
        f"{len(photos)} photos of {SAMPLE.name} with a sidecar (and the same files from lfw/ without one), "
        f"HOG upsample {args.upsample} for the detector, float16, 2 shards; {os.cpu_count()} cores"
    )
    if engine:
        print(
            "engine: Dask (index.build.build takes scheduler=): a LocalCluster for this Python's dlib (its start-up"
            " inside the timed build), a cluster started here from --fast-python for the fast dlib"
        )
    else:
        print(
            "engine: the build's process pool -- index.build.build takes no scheduler= yet, so these are NOT Dask"
            " figures; the fast dlib's rows come from --fast-python running this script on its own pool"
        )
    print(HEADER, flush=True)
    if engine:
        for n in args.workers:
            for boxes in args.boxes:
                print(row(label, n, boxes, measure(photos, boxes, n, args.upsample, scheduler=None)), flush=True)
        print(baseline_row(label, max(args.workers), baseline(lfw_paths(photos, args))), flush=True)
    else:
        pool_rows(args, photos, label)
    if not args.fast_python:
        print("  fast dlib: not measured (give --fast-python, a venv with the wheel of `make kiosk-dlib`)")
        return
    fast_label = dlib_label(python_dlib(args.fast_python))
    if not fast_label.startswith("fast"):
        print(f"  note: --fast-python's dlib has no BLAS: {fast_label}")
    if engine:
        with tempfile.TemporaryDirectory(prefix="mp-dask-") as tmp:
            for n in args.workers:
                with dask_cluster(args.fast_python, n, Path(tmp)) as address:
                    for boxes in args.boxes:
                        m = measure(photos, boxes, n, args.upsample, scheduler=address)
                        print(row(fast_label, n, boxes, m) + f"   ({address})", flush=True)
        probe = "import json, sys; from benchmarks import build_throughput as b; "
        probe += "print(json.dumps(b.baseline(sys.argv[1:])))"
        out = subprocess.run(
            [args.fast_python, "-c", probe, *lfw_paths(photos, args)],
            cwd=PROJECT, env=child_env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        print(baseline_row(fast_label, max(args.workers), json.loads(out.stdout.splitlines()[-1])), flush=True)
        return
    child = [args.fast_python, "-m", "benchmarks.build_throughput", "--child", "--photos", str(args.photos)]
    child += ["--workers", ",".join(map(str, args.workers)), "--boxes", ",".join(args.boxes)]
    child += ["--upsample", str(args.upsample), "--baseline-photos", str(args.baseline_photos)]
    subprocess.run(child, cwd=PROJECT, env=child_env(), check=True)


if __name__ == "__main__":
    main()
