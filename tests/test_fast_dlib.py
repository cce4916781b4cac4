"""`make kiosk`'s fast dlib step: what it does without a compiler / BLAS, with a cached wheel, how
it steers dlib's build, and what a cached wheel can do.

The build itself (~4.5 min on 2 cores) and the full descriptor comparison (~20 s) are not run
here; `make kiosk` runs them and docs/PIPELINE.md gives the figures. When this machine has a wheel
in the cache, the last test unpacks it and runs the face stack on it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faces import fast_dlib


def test_without_tools_it_says_what_is_missing_and_keeps_the_prebuilt_dlib(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(fast_dlib, "CACHE", tmp_path)
    monkeypatch.setattr(fast_dlib, "venv_has_blas", lambda: False)
    monkeypatch.setattr(fast_dlib.shutil, "which", lambda name: None)
    monkeypatch.setattr(fast_dlib, "build", lambda: (_ for _ in ()).throw(AssertionError("must not build")))
    monkeypatch.setattr(fast_dlib, "install", lambda wheel: (_ for _ in ()).throw(AssertionError("must not install")))
    assert fast_dlib.main([]) == 0
    out = capsys.readouterr().out
    assert "C++ compiler" in out and "cmake" in out and "keeping the prebuilt dlib-bin" in out


def test_a_wheel_that_differs_is_not_installed(monkeypatch, capsys, tmp_path):
    wheel = tmp_path / "dlib-20.0.1-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"")
    monkeypatch.setattr(fast_dlib, "venv_has_blas", lambda: False)
    monkeypatch.setattr(fast_dlib, "cached_wheel", lambda: wheel)
    figures = {"faces": 8, "max_abs_difference": 0.01, "equal": False, "fast_has_blas": True}
    monkeypatch.setattr(fast_dlib, "compare", lambda w: figures)
    monkeypatch.setattr(fast_dlib, "install", lambda w: (_ for _ in ()).throw(AssertionError("must not install")))
    assert fast_dlib.main([]) == 1
    assert "keeping the prebuilt dlib-bin" in capsys.readouterr().out


def test_the_cache_is_outside_the_project_and_matches_this_python(tmp_path):
    assert not str(fast_dlib.CACHE).startswith(str(fast_dlib.PROJECT))
    (tmp_path / "dlib-20.0.1-cp27-cp27-linux_x86_64.whl").write_bytes(b"")
    assert fast_dlib.cached_wheel(tmp_path) is None
    import sys

    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    good = tmp_path / f"dlib-20.0.1-{tag}-{tag}-linux_x86_64.whl"
    good.write_bytes(b"")
    assert fast_dlib.cached_wheel(tmp_path) == good
    assert all(Path(p).is_file() for p in fast_dlib.bundled_faces())


def test_the_build_switches_off_lto_and_builds_the_face_bindings_only(monkeypatch, tmp_path):
    calls = []

    def fake_pip_wheel(cmd, check, env):
        calls.append((cmd, env))
        (Path(cmd[cmd.index("-w") + 1]) / "dlib-20.0.1-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")

    monkeypatch.setattr(fast_dlib.subprocess, "run", fake_pip_wheel)
    wheel = fast_dlib.build(tmp_path / "cache")
    assert wheel == tmp_path / "cache" / "dlib-20.0.1-cp311-cp311-linux_x86_64.whl" and wheel.read_bytes() == b"wheel"
    ((cmd, env),) = calls
    assert cmd[-3:] == [f"dlib=={fast_dlib.DLIB_VERSION}", "-w", cmd[-1]] and "wheel" in cmd
    toolchain = Path(env["CMAKE_TOOLCHAIN_FILE"])
    text = toolchain.read_text()
    # pybind11 adds -flto unless CMAKE_INTERPROCEDURAL_OPTIMIZATION is defined; the hook is included
    # at the end of dlib's own project() call
    assert re.search(r"^set\(CMAKE_INTERPROCEDURAL_OPTIMIZATION OFF\)", text, re.M)
    include = r'^set\(CMAKE_PROJECT_dlib_python_bindings_INCLUDE "\$\{CMAKE_CURRENT_LIST_DIR\}/(.+)"\)'
    hook = re.search(include, text, re.M)
    assert hook and (toolchain.parent / hook.group(1)).is_file()
    assert env["DLIB_NO_GUI_SUPPORT"] == "ON"  # setup.py passes DLIB_* variables to CMake
    assert int(env["CMAKE_BUILD_PARALLEL_LEVEL"]) >= 1  # setup.py's -j


# dlib 20.0.1's tools/python/src/dlib.cpp: the bind function each binding file defines
BIND_FUNCTION = {
    "matrix": "bind_matrix", "vector": "bind_vector", "svm_c_trainer": "bind_svm_c_trainer",
    "decision_functions": "bind_decision_functions", "basic": "bind_basic_types", "other": "bind_other",
    "svm_rank_trainer": "bind_svm_rank_trainer", "cca": "bind_cca", "sequence_segmenter": "bind_sequence_segmenter",
    "svm_struct": "bind_svm_struct", "image": "bind_image_classes", "image2": "bind_image_classes2",
    "image3": "bind_image_classes3", "image4": "bind_image_classes4", "rectangles": "bind_rectangles",
    "object_detection": "bind_object_detection", "shape_predictor": "bind_shape_predictors",
    "correlation_tracker": "bind_correlation_tracker", "face_recognition": "bind_face_recognition",
    "cnn_face_detector": "bind_cnn_face_detection", "global_optimization": "bind_global_optimization",
    "numpy_returns": "bind_numpy_returns", "image_dataset_metadata": "bind_image_dataset_metadata",
    "line": "bind_line", "dlib": None,
}  # fmt: skip


def test_every_binding_file_of_dlib_is_kept_or_replaced_by_an_empty_bind_function():
    cmake = (fast_dlib.BUILD_FILES / "face_bindings.cmake").read_text()

    def names(var: str) -> list[str]:
        return re.search(rf"set\({var}(.*?)\)", cmake, re.S).group(1).split()

    kept, left_out = names("_megapixels_kept"), names("_megapixels_left_out")
    assert not set(kept) & set(left_out) and set(kept) | set(left_out) == set(BIND_FUNCTION)
    # what faces/ and face_recognition call: detector, landmarks, chips, descriptors, CNN detector,
    # and the types they take and return
    assert {"object_detection", "shape_predictor", "face_recognition", "numpy_returns", "cnn_face_detector"} <= {*kept}
    assert {"rectangles", "vector", "basic", "matrix", "dlib"} <= set(kept)
    stubs = (fast_dlib.BUILD_FILES / "left_out_bindings.cpp").read_text()
    defined = set(re.findall(r"^MEGAPIXELS_LEFT_OUT\((\w+)\)", stubs, re.M))
    defined |= set(re.findall(r"^void (bind_\w+)\(py::module& m\)", stubs, re.M))
    assert defined == {BIND_FUNCTION[n] for n in left_out}


PROBE = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import dlib, face_recognition
import faces
rgb = faces.read_image(sys.argv[1])
boxes = faces.detect(rgb, upsample=1)
box = boxes[faces.largest(boxes)]
shape = faces.landmarks(rgb, box)
described = faces.describe(faces.face_chip(rgb, box)).tolist()
image = face_recognition.load_image_file(sys.argv[1])
out = {
    "blas": bool(dlib.DLIB_USE_BLAS), "file": dlib.__file__,
    "face_bindings_only": bool(getattr(dlib, "MEGAPIXELS_FACE_BINDINGS_ONLY", False)),
    "yaw": faces.yaw(shape), "descriptor": described,
    "face_recognition": face_recognition.face_encodings(image)[0].tolist(),
    "landmarks": sorted(face_recognition.face_landmarks(image)[0]),
    "cnn_boxes": len(faces.models.cnn_detector()(rgb, 0)),
}
print(json.dumps(out))
"""


def test_a_cached_fast_wheel_runs_the_face_stack_with_the_prebuilt_descriptors(tmp_path):
    wheel = fast_dlib.cached_wheel()
    if wheel is None:
        pytest.skip(f"no fast dlib wheel cached in {fast_dlib.CACHE} (make kiosk-dlib builds one)")
    fast_dlib._unpack(str(wheel), tmp_path / "fast")
    photo = fast_dlib.bundled_faces(1)[0]
    env_path = f"{tmp_path / 'fast'}:{fast_dlib.PROJECT}"
    run = subprocess.run(
        [sys.executable, "-c", PROBE, photo], env={"PYTHONPATH": env_path, "OPENBLAS_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    fast = json.loads(run.stdout.splitlines()[-1])
    assert fast["blas"] and fast["file"].startswith(str(tmp_path / "fast"))
    import dlib

    import faces

    assert not dlib.DLIB_USE_BLAS, "this test compares with the prebuilt dlib of the test venv"
    rgb = faces.read_image(photo)
    boxes = faces.detect(rgb, upsample=1)
    box = boxes[faces.largest(boxes)]
    prebuilt = faces.describe(faces.face_chip(rgb, box))
    assert np.abs(np.array(fast["descriptor"]) - prebuilt).max() <= fast_dlib.TOLERANCE
    assert np.abs(np.array(fast["face_recognition"]) - prebuilt).max() < 0.1  # its own chip, same person
    assert fast["yaw"] == pytest.approx(faces.yaw(faces.landmarks(rgb, box)), abs=1e-6)
    assert "left_eye" in fast["landmarks"] and fast["cnn_boxes"] == 1
