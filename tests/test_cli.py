"""The operator's `megapixels` command, run as the installed console script."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from index import cli
from messages import Result
from tests.conftest import DEMO_CLIP, DEMO_GALLERY, PROJECT

MEGAPIXELS = str(Path(sys.executable).parent / "megapixels")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MEGAPIXELS, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_search_a_frame_of_the_clip_finds_obama(demo_index, tmp_path):
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)  # the first ~15 frames show no detectable face
    ok, frame = cap.read()
    cap.release()
    assert ok
    still = tmp_path / "frame30.jpg"
    cv2.imwrite(str(still), frame)
    done = _run("search", str(still), "--index", str(demo_index))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["identity"] == "barack_obama" and results[0]["distance"] < 0.45
    assert set(results[0]) == {f.name for f in dataclasses.fields(Result)}
    assert results[0]["verdict"] == "likely you" and 0.5 < results[0]["p_same"] <= 1  # calibrated, as on screen
    assert len(results[0]["box"]) == 4
    assert (DEMO_GALLERY / results[0]["photo"]).exists()


@pytest.mark.slow
def test_search_takes_the_enrolled_share_from_the_config_or_the_option(demo_index, shared_data, tmp_path):
    probe = str(shared_data / "enroll/probes/alex_lacamoire1.jpg")
    demo = json.loads(_run("search", probe, "--index", str(demo_index)).stdout)[0]
    even = json.loads(_run("search", probe, "--index", str(demo_index), "--enrolled-share", "0.5").stdout)[0]
    kiosk = subprocess.run(
        [MEGAPIXELS, "search", probe, "--index", str(demo_index)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MEGAPIXELS_CONFIG": str(PROJECT / "config" / "kiosk.toml")},
    )
    assert kiosk.returncode == 0, kiosk.stderr
    kiosk_best = json.loads(kiosk.stdout)[0]
    assert demo["identity"] == even["identity"] == kiosk_best["identity"] == "alex_lacamoire"
    assert even["p_same"] > demo["p_same"] > kiosk_best["p_same"]  # the prior the kiosk would use
    bad = _run("search", probe, "--index", str(demo_index), "--enrolled-share", "2")
    assert bad.returncode == 2 and "--enrolled-share: must be from 1e-09 to 1, got 2" in bad.stderr


@pytest.mark.slow
def test_search_a_probe_photo(demo_index, shared_data):
    done = _run("search", str(shared_data / "enroll/probes/alex_lacamoire1.jpg"), "--index", str(demo_index))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["identity"] == "alex_lacamoire"


@pytest.mark.slow
def test_index_build_then_errors_are_plain(tmp_path):
    dataset = tmp_path / "dataset"
    for person in ("kit_harington", "rose_leslie"):
        shutil.copytree(DEMO_GALLERY / person, dataset / person)
    out = tmp_path / "idx"
    done = _run("index", "build", str(dataset), "--out", str(out), "--shards", "2", "--workers", "1", "--upsample", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indexed"] == 4
    assert (out / "manifest.json").exists() and (out / "shard_001.npy").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert '"upsample": 0' in json.dumps(manifest)  # the build parameters say how faces were found
    assert "indexing" in done.stderr  # the progress bar

    missing = _run("search", str(dataset / "kit_harington/john1.jpeg"), "--index", str(tmp_path / "none"))
    assert missing.returncode == 1 and "build the index first" in missing.stderr
    no_face = tmp_path / "blank.png"
    cv2.imwrite(str(no_face), np.zeros((100, 100, 3), np.uint8))
    done = _run("search", str(no_face), "--index", str(out))
    assert done.returncode == 1 and "no face found" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "x.jpg", "--index", "i", "--top-k", "0"], "argument --top-k: must be from 1 to 1000, got 0"),
        (["search", "x.jpg", "--index", "i", "--top-k", "five"], "argument --top-k: 'five' is not an integer"),
        (["search", "x.jpg", "--index", "i", "--max-megapixels", "0"], "argument --max-megapixels: must be from 0.01"),
        (["index", "build", "d", "--out", "o", "--shards", "0"], "argument --shards: must be >= 1, got 0"),
        (["index", "build", "d", "--out", "o", "--workers", "0"], "argument --workers: must be >= 1, got 0"),
        (["index", "build", "d", "--out", "o", "--synthetic", "-5"], "argument --synthetic: must be >= 0, got -5"),
        (["index", "build", "d", "--out", "o", "--min-face-px", "-1"], "argument --min-face-px: must be from 0"),
        (["index", "build", "d", "--out", "o", "--max-yaw", "nan"], "argument --max-yaw: must be >= 0, got nan"),
        (["index", "build", "d", "--out", "o", "--min-sharpness", "-2"], "argument --min-sharpness: must be >= 0"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_option(args, message, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_a_corrupt_manifest_is_named_with_its_key(tmp_path, capsys):
    index = tmp_path / "idx"
    index.mkdir()
    (index / "manifest.json").write_text(json.dumps({"format_version": 2, "dim": 128, "dtype": "float16", "count": 85}))
    photo = DEMO_GALLERY / "rose_leslie" / "img1.jpg"
    assert cli.main(["search", str(photo), "--index", str(index)]) == 1
    err = capsys.readouterr().err
    assert f"megapixels: {index / 'manifest.json'}: not a usable index manifest: key 'real' is missing" in err
    assert "key 'shards' is missing" in err and "key 'identities' is missing" in err
    assert cli.main(["index", "calibrate", str(index)]) == 1
    assert "key 'shards' is missing" in capsys.readouterr().err
    (index / "manifest.json").write_text("{not json")
    assert cli.main(["search", str(photo), "--index", str(index)]) == 1
    assert f"{index / 'manifest.json'} is not valid JSON" in capsys.readouterr().err
