"""Detection and descriptors on real faces: the enroll stills bundled in demo/gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import faces
from faces import find_visitor
from messages import CHIP_PX
from tests.conftest import DEMO_GALLERY

ENROLLED = ["alex_lacamoire", "barack_obama", "joe_biden", "kit_harington", "lin_manuel_miranda", "rose_leslie"]
STILLS = sorted(p for person in ENROLLED for p in (DEMO_GALLERY / person).iterdir())


@pytest.fixture(scope="module")
def descriptor():
    def of(path: Path) -> np.ndarray:
        found = faces.describe_largest(faces.read_image(path))
        assert found is not None, f"no face in {path}"
        return found[1]

    return of


def test_bundled_stills_are_the_shared_enroll_stills(shared_data):
    for still in STILLS:
        original = shared_data / "enroll" / still.parent.name / still.name
        assert original.read_bytes() == still.read_bytes()


@pytest.mark.parametrize("still", STILLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_detector_finds_the_face_in_every_enroll_still(still):
    rgb = faces.read_image(still)
    boxes, visitor, chip = find_visitor(rgb, scale=1.0, upsample=1, min_face_px=20)
    assert visitor >= 0, f"no face found in {still}"
    left, top, right, bottom = boxes[visitor]
    assert 0 <= left < right <= rgb.shape[1] and 0 <= top < bottom <= rgb.shape[0]
    assert len(chip) == CHIP_PX * CHIP_PX * 3


@pytest.mark.slow
def test_obama_is_close_to_obama_and_far_from_biden(descriptor):
    obama = descriptor(DEMO_GALLERY / "barack_obama" / "obama.jpg")
    assert obama.shape == (128,) and obama.dtype == np.float32
    assert np.linalg.norm(obama - descriptor(DEMO_GALLERY / "barack_obama" / "obama2.jpg")) < 0.45
    for biden in sorted((DEMO_GALLERY / "joe_biden").iterdir()):
        assert np.linalg.norm(obama - descriptor(biden)) > 0.6


def test_descriptor_equals_face_recognition_on_the_same_box():
    import face_recognition

    rgb = faces.read_image(DEMO_GALLERY / "barack_obama" / "obama.jpg")
    box, ours = faces.describe_largest(rgb)
    left, top, right, bottom = box
    theirs = face_recognition.face_encodings(rgb, [(top, right, bottom, left)])[0]
    assert np.abs(ours - theirs).max() < 1e-5


def test_probe_with_two_faces_gives_the_largest(shared_data):
    rgb = faces.read_image(shared_data / "enroll" / "probes" / "kit_with_rose.jpg")
    boxes, visitor, _ = find_visitor(rgb, scale=1.0, upsample=1, min_face_px=20)
    assert len(boxes) == 2
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert visitor == int(np.argmax(areas))


def test_rgba_and_grayscale_images_are_read_as_rgb(shared_data, tmp_path):
    assert faces.read_image(shared_data / "enroll" / "probes" / "32bit.png").shape[2] == 3
    gray = faces.as_rgb(np.zeros((4, 5), np.uint8))
    assert gray.shape == (4, 5, 3)
    assert faces.as_rgb(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(faces.ImageError, match="unsupported image shape"):
        faces.as_rgb(np.zeros((4, 5, 2), np.uint8))


def test_unreadable_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(faces.ImageError, match="not a readable image"):
        faces.read_image(bad)
