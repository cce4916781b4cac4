"""The kiosk's fast dlib: build it once against OpenBLAS, check it, install it (``make kiosk``).

The prebuilt ``dlib-bin`` wheel has no BLAS, so its descriptor network takes ~58 ms a face;
dlib 20.0.1 compiled against OpenBLAS gives the same descriptors about 5x faster. Building takes
~4.5 minutes on 2 cores (~8 minutes of CPU; 16.8 minutes before link-time optimisation was
switched off and the unused bindings left out: :func:`build`), so the wheel is built once into a
cache outside the project (``~/.cache/megapixels/wheels``, shared by every clone on the machine)
and reused after that.

Steps, each saying what it does:

1. if the venv's dlib already reports ``DLIB_USE_BLAS``, nothing to do;
2. find a cached wheel, or build one (needs a C++ compiler, cmake and OpenBLAS/LAPACK headers:
   ``apt-get install libopenblas-dev liblapack-dev``); without them, say which is missing and
   keep the prebuilt dlib. The build is ``pip wheel dlib==20.0.1`` steered from the environment
   (:func:`build_env`): dlib's own sources and compiler flags, without link-time optimisation,
   with only the Python bindings the face stack uses (``faces/dlib_build/``);
3. unpack the new wheel and the prebuilt one side by side in temporary folders and, in two
   subprocesses, describe the bundled demo faces with each: the descriptors must agree within
   1e-5, and the time per descriptor (one thread) gives the speed-up;
4. only then replace dlib-bin in the venv with the new wheel.

    python -m faces.fast_dlib            # what `make kiosk` runs
    python -m faces.fast_dlib --check    # only step 3, report the figures
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DLIB_VERSION = "20.0.1"
PREBUILT = "dlib-bin==20.0.1.post1"  # as pinned in requirements.lock
CACHE = Path(os.environ.get("MEGAPIXELS_WHEEL_CACHE", Path.home() / ".cache" / "megapixels" / "wheels"))
PROJECT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5

# Run in a subprocess whose sys.path starts with one dlib or the other: prints JSON with the
# descriptors of the bundled faces and the median time of one descriptor on one thread.
PROBE = r"""
import json, sys, time
import numpy as np
import dlib
import faces
paths = sys.argv[1:]
chips = []
for p in paths:
    rgb = faces.read_image(p)
    boxes = faces.detect(rgb, upsample=1)
    i = faces.largest(boxes)
    if i >= 0:
        chips.append(faces.face_chip(rgb, boxes[i]))
descriptors = [faces.describe(c).tolist() for c in chips]
times = []
for c in chips[:8] * 3:
    t = time.perf_counter(); faces.describe(c); times.append(time.perf_counter() - t)
print(json.dumps({"blas": bool(dlib.DLIB_USE_BLAS), "file": dlib.__file__, "descriptors": descriptors,
                  "ms": 1000 * float(np.median(times))}))
"""


def bundled_faces(n: int = 12) -> list[str]:
    """A few photos of the bundled demo gallery (real faces shipped with the project)."""
    people = ("barack_obama", "joe_biden", "kit_harington", "rose_leslie", "alex_lacamoire", "lin_manuel_miranda")
    paths = [p for who in people for p in sorted((PROJECT / "demo" / "gallery" / who).glob("*.jpg"))]
    return [str(p) for p in paths[:n]]


def cached_wheel(cache: Path | None = None) -> Path | None:
    cache = cache or CACHE
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(glob.glob(str(cache / f"dlib-{DLIB_VERSION}-{tag}-{tag}-*.whl")))
    return Path(found[-1]) if found else None


def missing_tools() -> list[str]:
    """What a BLAS build of dlib needs and this machine lacks (empty: ready to build)."""
    missing = []
    if not (shutil.which("c++") or shutil.which("g++")):
        missing.append("a C++ compiler (apt-get install g++)")
    if not shutil.which("cmake"):
        missing.append("cmake (apt-get install cmake)")
    blas_libs = ("/usr/lib/*/libopenblas.so", "/usr/lib/libopenblas.so", "/usr/lib/*/libblas.so")
    have_blas = any(glob.glob(p) for p in blas_libs)
    have_lapack = any(glob.glob(p) for p in ("/usr/lib/*/liblapack.so", "/usr/lib/liblapack.so"))
    if not (have_blas and have_lapack and glob.glob("/usr/include/**/cblas*.h", recursive=True)):
        missing.append("OpenBLAS and LAPACK development files (apt-get install libopenblas-dev liblapack-dev)")
    return missing


BUILD_FILES = Path(__file__).resolve().parent / "dlib_build"


def build_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``pip wheel dlib`` runs in: how dlib's own setup.py is steered.

    dlib's setup.py passes every ``DLIB_*`` variable to CMake and takes its ``-j`` from
    ``CMAKE_BUILD_PARALLEL_LEVEL``; CMake reads ``CMAKE_TOOLCHAIN_FILE`` from the environment.
    The toolchain file (``dlib_build/toolchain.cmake``) switches off link-time optimisation and
    keeps only the face bindings; no GUI (``DLIB_NO_GUI_SUPPORT``) since the kiosk has its own.
    """
    env = dict(os.environ if base is None else base)
    env.update(
        CMAKE_TOOLCHAIN_FILE=str(BUILD_FILES / "toolchain.cmake"),
        CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 1),
        DLIB_NO_GUI_SUPPORT="ON",
    )
    return env


def build(cache: Path | None = None) -> Path:
    """Compile dlib against the system BLAS into the cache (~4.5 min on 2 cores); returns the wheel.

    The wheel is dlib 20.0.1's own source built with dlib's own compiler flags, except: no
    link-time optimisation (it put all code generation in one single-threaded link step: 16.8 min
    before, see docs/PIPELINE.md) and only the Python bindings that faces/ and face_recognition
    use (``dlib.MEGAPIXELS_FACE_BINDINGS_ONLY`` is then True). The descriptors are checked
    against the prebuilt dlib before the wheel is installed (:func:`compare`).
    """
    cache = cache or CACHE
    cache.mkdir(parents=True, exist_ok=True)
    print(f"building dlib {DLIB_VERSION} against OpenBLAS into {cache} (~4.5 min on 2 cores, once per machine)...")
    with tempfile.TemporaryDirectory(prefix="dlib-build-") as tmp:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"]
        subprocess.run([*cmd, f"dlib=={DLIB_VERSION}", "-w", tmp], check=True, env=build_env())
        (wheel,) = Path(tmp).glob("dlib-*.whl")
        target = cache / wheel.name
        shutil.move(str(wheel), target)  # appears in the cache only once complete
    return target


def _unpack(requirement: str, into: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    subprocess.run([*cmd, "--target", str(into), requirement], check=True)


def _probe(dlib_dir: Path, photos: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(dlib_dir), str(PROJECT)]), OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE, *photos], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(wheel: Path) -> dict:
    """Describe the bundled faces with the prebuilt dlib and with ``wheel``; the figures as a dict."""
    photos = bundled_faces()
    with tempfile.TemporaryDirectory(prefix="dlib-check-") as tmp:
        prebuilt_dir, fast_dir = Path(tmp) / "prebuilt", Path(tmp) / "fast"
        _unpack(PREBUILT, prebuilt_dir)
        _unpack(str(wheel), fast_dir)
        ref, fast = _probe(prebuilt_dir, photos), _probe(fast_dir, photos)
    import numpy as np

    a, b = np.array(ref["descriptors"]), np.array(fast["descriptors"])
    same_faces = a.shape == b.shape and len(a) > 0
    max_diff = float(np.abs(a - b).max()) if same_faces else float("inf")
    return {
        "faces": len(a),
        "max_abs_difference": max_diff,
        "equal": same_faces and max_diff <= TOLERANCE,
        "prebuilt_ms": round(ref["ms"], 1),
        "fast_ms": round(fast["ms"], 1),
        "speedup": round(ref["ms"] / fast["ms"], 1),
        "fast_has_blas": fast["blas"],
        "prebuilt_has_blas": ref["blas"],
    }


def venv_has_blas() -> bool:
    probe = "import dlib, sys; sys.exit(0 if dlib.DLIB_USE_BLAS else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def install(wheel: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "uninstall", "--quiet", "-y", "dlib-bin"], check=False)
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare the cached wheel with the prebuilt dlib")
    args = parser.parse_args(argv)
    if not args.check and venv_has_blas():
        print("fast dlib: the installed dlib already uses BLAS; nothing to do")
        return 0
    wheel = cached_wheel()
    if wheel is None:
        if args.check:
            print(f"fast dlib: no wheel cached in {CACHE}; run `make kiosk` to build it")
            return 1
        missing = missing_tools()
        if missing:
            print("fast dlib: cannot build dlib with BLAS here; missing " + "; ".join(missing))
            print("fast dlib: keeping the prebuilt dlib-bin (no BLAS: a descriptor takes ~58 ms instead of ~12 ms)")
            return 0
        try:
            wheel = build()
        except subprocess.CalledProcessError as e:
            print(f"fast dlib: the build failed ({e}); keeping the prebuilt dlib-bin")
            return 0
    else:
        print(f"fast dlib: using the cached wheel {wheel}")
    figures = compare(wheel)
    print("fast dlib: " + json.dumps(figures))
    if not (figures["equal"] and figures["fast_has_blas"]):
        print(
            f"fast dlib: {wheel.name} does not give the prebuilt descriptors within {TOLERANCE} "
            f"(largest difference {figures['max_abs_difference']:.2g}) or lacks BLAS; keeping the prebuilt dlib-bin"
        )
        return 1
    print(
        f"fast dlib: same descriptors on {figures['faces']} bundled faces (largest difference "
        f"{figures['max_abs_difference']:.1e}); {figures['fast_ms']} ms instead of {figures['prebuilt_ms']} ms "
        f"per descriptor on one thread ({figures['speedup']}x)"
    )
    if not args.check:
        install(wheel)
        print(f"fast dlib: installed {wheel.name} in {Path(sys.prefix)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
