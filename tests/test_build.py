"""Index builds on real LFW photos: MegaFace layout with sidecars, CSV manifests, rejections, resume after kill -9."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import faces
from index import build, publish, store
from tests.conftest import PROJECT

PEOPLE = ("Tony_Blair", "Colin_Powell", "Gerhard_Schroeder")


def _lfw(shared_data, person, i):
    return shared_data / "lfw" / person / f"{person}_{i:04d}.jpg"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_megaface_layout_with_sidecars_and_every_rejection_reason(shared_data, tmp_path):
    root = tmp_path / "FlickrFinal2"
    for n, person in enumerate(PEOPLE):
        folder = root / "103" / f"1030058{n}@N07"
        folder.mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(_lfw(shared_data, person, i), folder / f"55040686{n}{i}_0.jpg")
    two = root / "104" / "99@N01"
    two.mkdir(parents=True)
    pair = shared_data / "enroll" / "probes" / "obama_and_biden.jpg"
    boxes = faces.detect(faces.read_image(pair), upsample=1)
    assert len(boxes) >= 2
    smaller = next(b for i, b in enumerate(boxes) if i != faces.largest(boxes))
    shutil.copy(pair, two / "1_0.jpg")  # sidecar names the smaller face
    left, t, r, b = smaller
    sidecar = {"bounding_box": {"x": left, "y": t, "width": r - left, "height": b - t}}
    (two / "1_0.jpg.json").write_text(json.dumps(sidecar))
    shutil.copy(pair, two / "2_0.jpg")  # same bytes: a duplicate photo
    shutil.copy(pair, two / "3_0.png")  # no sidecar: the largest face is kept and recorded
    cv2.imwrite(str(two / "3_0.png"), cv2.imread(str(pair))[:, ::-1])  # mirrored, so not a duplicate
    (two / "4_0.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cv2.imwrite(str(two / "5_0.png"), np.full((200, 200, 3), 128, np.uint8))
    cv2.imwrite(str(two / "6_0.png"), cv2.GaussianBlur(cv2.imread(str(_lfw(shared_data, "Tony_Blair", 3))), (0, 0), 3))

    report = build.build(root, tmp_path / "idx", n_shards=2, workers=2, progress=False, dtype="float16")
    reasons = {r["photo"]: r["reason"] for r in report["rejected_files"]}
    assert reasons == {
        "104/99@N01/2_0.jpg": "duplicate photo",
        "104/99@N01/4_0.jpg": "unreadable file",
        "104/99@N01/5_0.png": "no face",
        "104/99@N01/6_0.png": "too blurred",
    }
    assert report["indexed"] == 8 and report["boxes_from_sidecars"] == 1
    assert report["several_faces_kept_largest"] == ["104/99@N01/3_0.png"]
    saved = json.loads((tmp_path / "idx" / "build_report.json").read_text())
    assert saved["rejected"] == {"duplicate photo": 1, "unreadable file": 1, "no face": 1, "too blurred": 1}
    meta = store.Metadata(tmp_path / "idx")
    entries = meta.lookup(list(range(report["indexed"])))
    meta.close()
    by_photo = {e.photo: e for e in entries.values()}
    assert by_photo["104/99@N01/1_0.jpg"].box == tuple(smaller)  # the sidecar's face, not the largest
    assert by_photo["104/99@N01/1_0.jpg"].identity == "99@N01"
    assert {e.identity for e in entries.values()} == {"10300580@N07", "10300581@N07", "10300582@N07", "99@N01"}
    # the thresholds that reject: too small, extreme pose
    small = build.describe_photo(
        str(shared_data / "lfw"), build.Photo("Tony_Blair/Tony_Blair_0001.jpg", "x"), build.Quality(min_face_px=400)
    )
    assert small.reason == "face too small" and "minimum 400" in small.detail
    turned = build.describe_photo(
        str(shared_data / "lfw"), build.Photo("Tony_Blair/Tony_Blair_0001.jpg", "x"), build.Quality(max_yaw=0.0)
    )
    assert turned.reason == "extreme pose"


@pytest.mark.timeout(600)
def test_csv_manifest_keeps_urls_and_licences(shared_data, tmp_path):
    manifest_csv = tmp_path / "faces.csv"
    with open(manifest_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity", "url", "licence"])
        for person in PEOPLE[:2]:
            for i in (1, 2):
                photo = _lfw(shared_data, person, i)
                w.writerow([os.path.relpath(photo, tmp_path), person, f"https://example.org/{person}/{i}", "CC BY 2.0"])
    report = build.build(manifest_csv, tmp_path / "idx", n_shards=3, workers=2, progress=False, dtype="int8")
    assert report["indexed"] == 4
    manifest = store.read_manifest(tmp_path / "idx")
    assert manifest.dtype == "int8" and manifest.count == 4 and len(manifest.shards) == 3
    assert all(len(s.sha256) == 64 for s in manifest.shards)
    meta = store.Metadata(tmp_path / "idx")
    entries = meta.lookup([0, 1, 2, 3])
    meta.close()
    assert {(e.identity, e.url, e.licence) for e in entries.values()} == {
        (p, f"https://example.org/{p}/{i}", "CC BY 2.0") for p in PEOPLE[:2] for i in (1, 2)
    }


def test_csv_without_the_needed_columns_is_refused(tmp_path):
    (tmp_path / "bad.csv").write_text("file,name\na.jpg,x\n")
    with pytest.raises(ValueError, match="path, identity"):
        build.scan(tmp_path / "bad.csv")


def _children(pid: int) -> list[int]:
    found = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                with open(f"/proc/{stat}/stat") as f:
                    if int(f.read().rsplit(") ", 1)[1].split()[1]) == pid:
                        found.append(int(stat))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_build_resumes_after_kill_9_without_duplicates_or_losses_and_a_second_build_refuses(shared_data, tmp_path):
    dataset = tmp_path / "ds"
    for person in PEOPLE:
        (dataset / person).mkdir(parents=True)
        for i in range(1, 6):
            shutil.copy(_lfw(shared_data, person, i), dataset / person)
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "index.cli", "index", "build", str(dataset), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = publish.staging_dir(out) / build.JOURNAL  # the unfinished build's journal, beside --out
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)  # polling a file another process writes; no socket involved
    assert proc.poll() is None, "the build finished before it could be killed"
    # A second build into the same --out refuses at once, naming the running one.
    started = time.monotonic()
    second = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and f"another build into {out} is running (pid {proc.pid}" in second.stderr
    assert time.monotonic() - started < 30  # the interpreter's start-up; it describes nothing
    assert not out.exists(), "nothing is published before the build is complete"
    workers = _children(proc.pid)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone_by = time.monotonic() + 10
    while any(_exists(w) for w in workers) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not [w for w in workers if _exists(w)], "worker processes outlived the killed build"
    with open(journal, "ab") as f:
        f.write(b'{"photo": "torn line of a write cut by the kill')
    done_before = len(build.read_journal(journal))
    assert 3 <= done_before < 15
    with pytest.raises(store.IndexStoreError, match="staging folder of an unfinished build"):
        store.read_manifest(publish.staging_dir(out))  # never taken for an index
    report = build.build(dataset, out, n_shards=2, workers=2, progress=False)  # the kernel released the lock
    assert not publish.staging_dir(out).exists()
    lines = [json.loads(x)["photo"] for x in (out / build.JOURNAL).read_text().splitlines()]
    assert sorted(lines) == sorted(set(lines)) and len(lines) == 15  # every photo once
    assert report["resumed_from_journal"] == done_before and report["described_this_run"] == 15 - done_before
    assert report["indexed"] + sum(report["rejected"].values()) == 15
    assert store.verify(out).count == report["indexed"]
