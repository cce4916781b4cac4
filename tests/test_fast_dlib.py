"""`make kiosk`'s fast dlib step: what it does without a compiler / BLAS, and with a cached wheel.

The build itself (~5 min) and the descriptor comparison (~1 min) are not run here; `make kiosk`
runs them and docs/PIPELINE.md gives the figures.
"""

from __future__ import annotations

from pathlib import Path

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
