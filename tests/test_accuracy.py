"""The accuracy harness and the calibrated confidence: fold logic, calibration shape, reducer hook."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import config
from benchmarks.accuracy import describe_lfw, lfw
from index import calibration
from messages import Result, codec

# Two folds of two same-person and two different-person pairs, written by hand.
HAND_PAIRS = """2\t2
Ann\t1\t2
Bob\t1\t3
Ann\t1\tCid\t1
Bob\t2\tDee\t4
Cid\t1\t2
Dee\t2\t3
Ann\t2\tBob\t1
Cid\t2\tDee\t1
"""


def test_pairs_file_gives_folds_labels_and_paths():
    pairs = lfw.parse_pairs(HAND_PAIRS)
    assert [p.fold for p in pairs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert pairs[0].a == "Ann/Ann_0001.jpg" and pairs[0].b == "Ann/Ann_0002.jpg"
    assert pairs[3].a == "Bob/Bob_0002.jpg" and pairs[3].b == "Dee/Dee_0004.jpg"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("2\t2\nAnn\t1\t2\n", "expected 8 pair lines"),
        (HAND_PAIRS.replace("Ann\t1\tCid\t1", "Ann\t1\t3"), "different-person"),
        ("", "first line"),
    ],
)
def test_a_malformed_pairs_file_is_refused_with_the_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        lfw.parse_pairs(text)


def test_ten_fold_takes_each_threshold_from_the_other_folds():
    # fold 0: separable anywhere in 0.4..0.7; fold 1: best threshold 0.55 (3 of 4 right).
    d = np.array([0.3, 0.4, 0.7, 0.8, 0.5, 0.9, 0.6, 1.0])
    same = np.array([True, True, False, False, True, True, False, False])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    tf = lfw.ten_fold(d, same, folds)
    # Fold 0 is tested with fold 1's threshold (0.55): all right. Fold 1 with fold 0's (0.55): 0.9 is missed.
    assert tf.thresholds == pytest.approx([0.55, 0.55])
    assert tf.accuracies == [1.0, 0.75]
    assert tf.mean == pytest.approx(0.875) and tf.std == pytest.approx(0.125)


def test_best_threshold_maximises_accuracy():
    d = np.array([0.1, 0.2, 0.35, 0.5, 0.65, 0.9])
    same = np.array([True, True, True, False, False, False])
    t = lfw.best_threshold(d, same)
    assert 0.35 < t < 0.5
    assert np.mean((d < t) == same) == 1.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ten_fold_harness_on_real_lfw_pairs(shared_data, tmp_path):
    """Two folds x (3 same + 3 different) real LFW pairs, described the kiosk's way, through the harness."""
    root = shared_data / "lfw"
    every = lfw.read_pairs(root)
    pairs = [p for p in every if p.fold < 2 and (every.index(p) % 300) < 3]
    assert len(pairs) == 12
    photos = sorted({p.a for p in pairs} | {p.b for p in pairs})
    recs = describe_lfw.run(root, photos, upsample=1, jitter=1, mirror=False, workers=1, folder=tmp_path)
    assert set(recs) == set(photos)
    again = describe_lfw.run(root, photos, upsample=1, jitter=1, mirror=False, workers=1, folder=tmp_path)
    assert all(np.array_equal(recs[p]["desc"], again[p]["desc"]) for p in photos)  # cached, not recomputed
    desc = {p: r["desc"] for p, r in recs.items()}
    d = lfw.pair_distances(pairs, desc)
    same = np.array([p.same for p in pairs])
    tf = lfw.ten_fold(d, same, np.array([p.fold for p in pairs]))
    assert len(tf.accuracies) == 2
    assert tf.mean >= 5 / 6
    assert d[same].mean() < 0.6 < d[~same].mean()


def test_centre_most_picks_the_box_nearest_the_middle():
    boxes = [(0, 0, 50, 50), (90, 90, 160, 160), (200, 0, 250, 80)]
    assert describe_lfw.centre_most(boxes, 250, 250) == 1
    assert describe_lfw.centre_most([], 250, 250) == -1


@pytest.fixture
def cal():
    # A calibration of the shape LFW gives (values rounded from a fit); the curve's shape is under test.
    return calibration.Calibration(
        pair_a=14.0, pair_b=-24.0, genuine_mean=0.42, genuine_std=0.08, impostor_mean=0.86, impostor_std=0.07
    )


def test_pair_probability_is_bounded_and_falls_with_distance(cal):
    d = np.linspace(0, 1.5, 301)
    p = calibration.pair_probability(cal, d)
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) < 0)
    assert calibration.pair_probability(cal, 0.3) > 0.9 > 0.1 > calibration.pair_probability(cal, 0.8)


@pytest.mark.parametrize("n", [1, 5_749, 600_000, 4_200_000])
def test_match_probability_is_bounded_and_never_rises_with_distance(cal, n):
    p = np.array([calibration.match_probability(cal, d, n) for d in np.linspace(0, 1.5, 301)])
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) <= 0)
    assert p[0] > 0.99 and p[-1] < 0.01


def test_a_bigger_gallery_lowers_the_same_person_probability(cal):
    for d in (0.45, 0.5, 0.55):
        ps = [calibration.match_probability(cal, d, n) for n in (1, 100, 5_749, 600_000, 4_200_000)]
        assert all(a > b for a, b in itertools.pairwise(ps)), (d, ps)
    # At 600k identities a typical same-person distance of 0.5 is no longer convincing.
    assert calibration.match_probability(cal, 0.5, 1) > 0.9 > 0.5 > calibration.match_probability(cal, 0.5, 600_000)
    assert calibration.verdict(calibration.match_probability(cal, 0.3, 600_000)) == calibration.LIKELY_YOU
    assert calibration.verdict(calibration.match_probability(cal, 0.55, 600_000)) == calibration.LOOK_ALIKE


def test_logistic_fit_recovers_a_known_curve():
    # Synthetic labels drawn from a known logistic curve (random numbers: the fitter is under test).
    rng = np.random.default_rng(6)
    d = rng.uniform(0.2, 1.0, 20_000)
    y = rng.random(20_000) < 1 / (1 + np.exp(-(12.0 - 20.0 * d)))
    a, b = calibration.fit_logistic(d, y)
    assert a == pytest.approx(12.0, rel=0.1) and b == pytest.approx(-20.0, rel=0.1)


def test_calibration_file_round_trip_and_bad_files(cal, tmp_path):
    assert calibration.load(tmp_path) is None
    calibration.save(cal, tmp_path)
    assert calibration.load(tmp_path) == cal
    (tmp_path / calibration.FILENAME).write_text("{not json")
    with pytest.raises(calibration.CalibrationError, match=r"calibration\.json"):
        calibration.load(tmp_path)
    raw = json.loads(json.dumps({"format_version": 1, "pair_a": 1.0}))
    (tmp_path / calibration.FILENAME).write_text(json.dumps(raw))
    with pytest.raises(calibration.CalibrationError):
        calibration.load(tmp_path)
    with pytest.raises(calibration.CalibrationError, match="pair_b"):
        calibration.Calibration(1.0, 2.0, 0.4, 0.1, 0.8, 0.1)
    with pytest.raises(calibration.CalibrationError, match="gallery_scale"):
        calibration.Calibration(1.0, -2.0, 0.4, 0.1, 0.8, 0.1, gallery_scale=0.0)


def test_gallery_scale_shrinks_the_correction(cal):
    from dataclasses import replace

    scaled = replace(cal, gallery_scale=0.01)
    assert calibration.match_probability(scaled, 0.45, 600_000) > calibration.match_probability(cal, 0.45, 600_000)
    assert calibration.match_probability(scaled, 0.45, 600_000) == calibration.match_probability(cal, 0.45, 6_000)


def _result_map(**extra):
    return {"rank": 1, "identity": "A", "distance": 0.4, "photo": "A/1.jpg", "row": 0, "box": [], **extra}


def _decode_result(**extra):
    """One result map, through the codec as it travels inside Matches."""
    provenance = {"nsid": "", "photo_id": "", "licence": "", "date_taken": "", "url": ""}
    body = {"p_same": None, "verdict": ""} | provenance | extra
    return codec._check(_result_map(**body), Result, "r", "")


def test_codec_checks_the_optional_confidence_keys():
    assert _decode_result() == Result(1, "A", 0.4, "A/1.jpg", 0)
    assert _decode_result(p_same=0.7, verdict="likely you").p_same == 0.7
    with pytest.raises(codec.DecodeError, match="p_same"):
        _decode_result(p_same=1.5)
    with pytest.raises(codec.DecodeError, match="p_same"):
        _decode_result(p_same="high")
    with pytest.raises(codec.DecodeError, match="verdict"):
        _decode_result(verdict="maybe")
    with pytest.raises(codec.DecodeError, match="box"):
        _decode_result(box=[1, 2])


def test_reducer_adds_p_same_and_verdict_when_the_index_is_calibrated(demo_index, cal, tmp_path):
    import shutil
    import time

    from actors.reducer import Reducer
    from messages import Candidates, Header, Query

    index_dir = tmp_path / "index"
    shutil.copytree(demo_index, index_dir)
    calibration.save(cal, index_dir)
    r = Reducer(config.validate({"index": {"path": str(index_dir)}}))
    r.on_start()
    try:
        h = Header(seq=1, t_ns=time.monotonic_ns(), src="test", frame_id=1)
        r.handle(Query(h, 1, time.monotonic_ns(), 5, bytes(128 * 4)))
        r.handle(Candidates(h, 1, time.monotonic_ns(), 5, 0, 2, [0], [0.3]))
        (out,) = r.handle(Candidates(h, 1, time.monotonic_ns(), 5, 1, 2, [200], [0.75]))
    finally:
        r.on_stop()
    assert [x.distance for x in out.results] == [0.3, 0.75]
    close, far = out.results
    assert close.verdict == "likely you" and far.verdict == "look-alike"
    assert 1 >= close.p_same > 0.5 > far.p_same >= 0
    n = r.gallery.n_rows
    assert n == json.loads((index_dir / "manifest.json").read_text())["count"]  # rows, synthetic ones included
    # A calibration without the neighbourhood model (format 1): each distance through the per-distance
    # gallery model, with the index.enrolled_share setting as the prior (here its kiosk default).
    prior = config.validate({})["index"]["enrolled_share"]
    with_prior = calibration.Calibration(**{**cal.__dict__, "prior_in_gallery": prior})
    assert close.p_same == pytest.approx(calibration.match_probability(with_prior, 0.3, n), abs=1e-4)
    assert far.p_same == pytest.approx(calibration.match_probability(with_prior, 0.75, n), abs=1e-4)
    codec.decode(codec.encode(out))  # the wire contract accepts the new keys


def test_cli_stores_a_calibration_with_an_index_and_refuses_bad_ones(demo_index, cal, tmp_path, capsys):
    import shutil

    from index import cli

    index_dir = tmp_path / "index"
    shutil.copytree(demo_index, index_dir)
    (index_dir / calibration.FILENAME).unlink(missing_ok=True)
    calibration.save(cal, tmp_path)
    assert cli.main(["index", "calibrate", str(index_dir), "--from", str(tmp_path / calibration.FILENAME)]) == 0
    assert calibration.load(index_dir) == cal
    (tmp_path / "bad.json").write_text('{"format_version": 1, "pair_b": 3}')
    assert cli.main(["index", "calibrate", str(index_dir), "--from", str(tmp_path / "bad.json")]) == 1
    assert "bad.json" in capsys.readouterr().err
    assert calibration.load(index_dir) == cal  # the good one is kept
    assert cli.main(["index", "calibrate", str(tmp_path / "nowhere")]) == 1


def test_an_index_build_stores_the_lfw_calibration(demo_index):
    assert calibration.DEFAULT.exists()
    assert calibration.load(demo_index) == calibration.read(calibration.DEFAULT)


def test_a_box_mirrored_twice_is_the_same_box():
    box = (60, 80, 170, 190)
    assert describe_lfw.mirror_box(box, 250) == (80, 80, 190, 190)
    assert describe_lfw.mirror_box(describe_lfw.mirror_box(box, 250), 250) == box


def test_verify_variants_average_the_mirrored_descriptor_plain_or_at_unit_length():
    from benchmarks.accuracy import verify

    a, b = np.full(128, 0.1, np.float32), np.full(128, 0.3, np.float32)
    recs = {"x.jpg": {"desc": a, "desc_largest": a, "desc_mirror": b, "desc_flip": b}}
    assert np.allclose(verify.variant_descriptors(recs, "flip")["x.jpg"], 0.2)
    unit = verify.variant_descriptors(recs, "flip_unit")["x.jpg"]
    assert np.allclose(unit, a / np.linalg.norm(a))  # a and b point the same way: their unit average is a's
    assert verify.has_variant(recs, {"x.jpg"}, "mirror") and not verify.has_variant(recs, {"x.jpg"}, "flipbox")
    with pytest.raises(ValueError, match="centre_unit"):
        verify.variant_descriptors(recs, "centre_unit")  # nothing to average


@pytest.fixture
def measured(cal):
    # A measured gallery table of the shape LFW gives (rounded): the nearest look-alike comes closer as N grows.
    table = ((1, 0.83, 0.08), (100, 0.68, 0.05), (5_749, 0.58, 0.05), (600_000, 0.48, 0.06), (4_200_000, 0.45, 0.06))
    from dataclasses import replace

    return replace(cal, best_impostor=table)


@pytest.mark.parametrize("n", [1, 263, 5_749, 600_000, 4_200_000, 50_000_000])
def test_measured_gallery_model_is_bounded_and_never_rises_with_distance(measured, n):
    p = np.array([calibration.match_probability(measured, d, n) for d in np.linspace(0, 1.5, 301)])
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) <= 0)
    assert p[0] > 0.99 and p[-1] < 0.01


def test_measured_gallery_model_lowers_the_same_person_probability_as_n_grows(measured):
    for d in (0.45, 0.5, 0.55):
        ps = [calibration.match_probability(measured, d, n) for n in (1, 100, 5_749, 600_000, 4_200_000, 10**8)]
        assert all(a > b for a, b in itertools.pairwise(ps)), (d, ps)
    # Never rises with N, even where the fitted spreads make the far tails cross (d = 0.3) or between sizes.
    for d in (0.3, 0.4):
        ps = [calibration.match_probability(measured, d, n) for n in np.geomspace(1, 10**9, 60).astype(int)]
        assert all(a >= b for a, b in itertools.pairwise(ps)), (d, ps)
    # Between measured sizes the table is interpolated in log N; beyond them the last segment goes on.
    assert calibration.best_impostor_at(measured.best_impostor, 10) == pytest.approx((0.755, 0.065))
    assert calibration.best_impostor_at(measured.best_impostor, 1) == pytest.approx((0.83, 0.08))
    assert calibration.best_impostor_at(measured.best_impostor, 4_200_000 * 7)[0] < 0.45


def test_measured_gallery_table_round_trips_and_bad_tables_are_refused(measured, tmp_path):
    from dataclasses import replace

    calibration.save(measured, tmp_path)
    assert calibration.load(tmp_path) == measured
    with pytest.raises(calibration.CalibrationError, match="increasing"):
        replace(measured, best_impostor=((100, 0.7, 0.05), (10, 0.8, 0.05)))
    with pytest.raises(calibration.CalibrationError, match="best_impostor"):
        replace(measured, best_impostor=((100, 0.7),))


def test_gallery_table_fit_and_person_halves():
    from benchmarks.accuracy import gallery

    best = np.array([[0.8, 0.9, 1.0], [0.5, 0.6, 0.7]])
    table = gallery.fit_table(np.array([1000, 1]), best[::-1])
    assert np.allclose(table, [(1, 0.9, np.std([0.8, 0.9, 1.0])), (1000, 0.6, np.std([0.5, 0.6, 0.7]))])
    h = gallery.halves(np.array(["Bob", "Ann", "Bob", "Cid"]))
    assert h.tolist() == [1, 0, 1, 0]  # one person never lands in both halves


def test_the_demo_says_likely_you_for_obama_with_the_shipped_calibration(demo_index, demo_rows):
    """A frame of the bundled Obama clip against the demo index, with the LFW calibration stored in it."""
    import cv2

    import faces
    from index import store
    from tests.conftest import DEMO_CLIP

    cap = cv2.VideoCapture(str(DEMO_CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)  # the first ~15 frames show no detectable face
    ok, frame = cap.read()
    cap.release()
    assert ok
    found = faces.describe_largest(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), upsample=0)
    assert found is not None
    rows, entries = demo_rows
    d = np.linalg.norm(rows - found[1], axis=1)
    top = np.argsort(d)[:5]
    assert entries[top[0]].identity == "barack_obama"
    cal = calibration.load(demo_index)
    assert cal.neighbourhood is not None
    n_rows = store.read_manifest(demo_index).count
    dists, ids = [float(d[i]) for i in top], [entries[i].identity for i in top]
    demo_prior = config.load(config.loader.CONFIG_DIR / "demo.toml", env={})["index"]["enrolled_share"]
    for prior in (demo_prior, config.validate({})["index"]["enrolled_share"]):  # the demo's and the kiosk's
        p = calibration.p_same(cal, dists, ids, n_rows, prior)[0]
        assert calibration.verdict(p) == calibration.LIKELY_YOU, (dists, ids, prior, p)
        # The same list from a 600,000-row gallery means less.
        assert calibration.p_same(cal, dists, ids, 600_000, prior)[0] < p


@pytest.mark.timeout(120)
def test_the_mirrored_photo_is_described_as_a_new_photo(shared_data):
    """One real LFW photo: HOG runs on the mirrored photo; its descriptor is near the original's, not equal."""
    root = shared_data / "lfw"
    photo = "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"
    rec = describe_lfw.describe_one(str(root), photo, 1, 1, mirror=True)
    flip = describe_lfw.describe_flipped(str(root), photo, 1, 1, rec["box"], rec["box_largest"])
    assert flip["flip_faces"] >= 1
    width = 250
    # HOG's box on the mirrored photo lies on the mirrored face (within a few pixels), not on the original's spot.
    assert np.abs(np.subtract(flip["flip_box"], describe_lfw.mirror_box(rec["box"], width))).max() <= 16
    for key in ("desc_flip", "desc_flipbox"):
        d = float(np.linalg.norm(flip[key] - rec["desc"]))
        assert 0.01 < d < 0.35, (key, d)  # the same face, seen mirrored
    # Flipping the photo is not flipping the aligned chip: different landmarks, alignment and box.
    assert float(np.linalg.norm(flip["desc_flip"] - rec["desc_mirror"])) > 0.01
