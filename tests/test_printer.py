"""The receipt and the printer backends: golden image, PDF text, ESC/POS over a loopback socket and a
device file, a real CUPS server (started here) with a PDF queue, a stopped queue, retries not printed twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import config
from actors.printer import Printer, backends, receipt
from index.photos import DatasetFacts, DatasetPhotos, crop_box, photo_source
from messages import Header, PrintJob, Result
from tests import cups_server
from tests.conftest import PROJECT

GOLDEN = Path(__file__).with_name("golden") / "receipt.png"
ARTIFACTS = PROJECT / "test-artifacts"
WHEN = dt.datetime(2026, 11, 26, 10, 0)
FACTS = DatasetFacts("Labeled Faces in the Wild", 13233, 5749, "/data/lfw")
LOOKALIKES = (  # what the reducer says for a best match at 0.35 in the demo gallery (index/lookalikes.py)
    "Fewer than 1 person in this dataset of 253 people would be expected to look at least this much like you by chance."
)
RESULTS = [
    Result(1, "barack_obama", 0.35, "barack_obama/obama.jpg", 1),
    Result(2, "Ari_Fleischer", 0.70, "Ari_Fleischer/Ari_Fleischer_0001.jpg", 9),
    Result(3, "Abdullah_Gul", 0.73, "Abdullah_Gul/Abdullah_Gul_0001.jpg", 3),
]


def obama_crop() -> np.ndarray:
    with Image.open(PROJECT / "demo" / "gallery" / "barack_obama" / "obama.jpg") as img:
        rgb = img.convert("RGB")
    return np.asarray(rgb.crop(crop_box((480, 130, 720, 370), *rgb.size)).resize((200, 200)))


def golden_receipt() -> receipt.Receipt:
    return receipt.compose(RESULTS, 0.6, WHEN, FACTS, obama_crop())


def header(seq: int = 1) -> Header:
    return Header(seq=seq, t_ns=time.monotonic_ns(), src="display", frame_id=5)


def printer_actor(tmp_path: Path, index: Path | None = None, **printer: object) -> Printer:
    raw = {"printer": {"spool_dir": str(tmp_path / "spool"), **printer}}
    if index is not None:
        raw["index"] = {"path": str(index)}
    p = Printer(config.validate(raw))
    p.on_start()
    return p


# --- receipt -------------------------------------------------------------------------------------


def test_receipt_matches_the_golden_image() -> None:
    image = np.asarray(receipt.render_png(golden_receipt()), dtype=np.int16)
    ARTIFACTS.mkdir(exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(ARTIFACTS / "receipt.png")
    golden = np.asarray(Image.open(GOLDEN).convert("L"), dtype=np.int16)
    assert image.shape == golden.shape, f"receipt is {image.shape}, golden {golden.shape}"
    diff = np.abs(image - golden)
    # Tolerant: font hinting or JPEG resampling may move a few grey levels, not the layout.
    assert diff.mean() < 2.0 and (diff > 64).mean() < 0.01, f"mean diff {diff.mean():.2f}, see {ARTIFACTS}"


def test_receipt_text_and_privacy() -> None:
    r = golden_receipt()
    text = r.text()
    assert "Your closest match: barack obama" in text and "Distance 0.350" in text
    assert "99 % · close match (provisional)" in text and "2026-11-26 10:00" in text
    assert "13,233 face photos of 5,749 people" in text.replace("\n", " ")
    assert "Ari Fleischer" in text and len(r.photos) == 1  # the match only: no visitor face
    with_face = receipt.compose(RESULTS, 0.6, WHEN, FACTS, obama_crop(), visitor_face=obama_crop())
    assert len(with_face.photos) == 2 and "You:" in with_face.text()
    calibrated = [dataclasses.replace(RESULTS[0], p_same=0.91, verdict="likely you")]
    assert "91 % · likely you" in receipt.compose(calibrated, 0.6, WHEN).text()
    assert "Nobody in the dataset" in receipt.compose([], 0.6, WHEN).text()
    assert "by chance" not in text  # no sentence, no line
    with_line = receipt.compose(RESULTS, 0.6, WHEN, FACTS, lookalikes=LOOKALIKES).text()
    assert LOOKALIKES in " ".join(with_line.split("\n"))
    assert with_line.index("Match score") < with_line.index("Fewer than 1") < with_line.index("Face recognition is")


def test_photo_source_from_the_path() -> None:
    assert photo_source("Ari_Fleischer/Ari_Fleischer_0003.jpg")[0].startswith("Labeled Faces in the Wild")
    source, licence = photo_source("FlickrFinal2/103/10300581@N07/5504068610_0.jpg")
    assert "10300581@N07" in source and "MegaFace" in source and "Creative Commons" in licence
    assert photo_source("synthetic/0001.png") == ("not recorded in the index", "unknown")


def test_pdf_has_searchable_text() -> None:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils)")
    pdf = receipt.render_pdf(golden_receipt())
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert "Your closest match: barack obama" in text and "99 % · close match" in text


def test_dataset_photos_crop_and_placeholders(demo_index: Path, demo_rows) -> None:
    """The crop comes from the result alone (its photo and face box): no metadata lookup again."""
    _, entries = demo_rows
    row = next(i for i, e in enumerate(entries) if e.identity == "barack_obama")
    entry = entries[row]
    photos = DatasetPhotos(demo_index)
    try:
        assert photos.facts is not None and photos.facts.photos == 259
        boxed = photos.crop(Result(1, "barack_obama", 0.3, entry.photo, row, list(entry.box)))
        assert boxed is not None and boxed.shape == (200, 200, 3) and boxed.std() > 20
        whole = photos.crop(Result(1, "barack_obama", 0.3, entry.photo, row + 10_000))  # no box: the whole photo
        assert whole is not None and not np.array_equal(whole, boxed)
        assert photos.crop(Result(1, "x", 0.3, "nobody/missing.jpg", 3)) is None
        assert photos.crop(Result(1, "x", 0.3, "../../etc/passwd", 3)) is None
        assert photos.crop(Result(1, "synthetic-7", 0.3, "", 999)) is None  # a row with no photo
    finally:
        photos.close()
    assert DatasetPhotos(demo_index / "nowhere").crop(RESULTS[0]) is None  # no index: placeholders


# --- spool, retries ------------------------------------------------------------------------------


def test_spool_and_a_resent_job_is_not_printed_twice(tmp_path: Path) -> None:
    p = printer_actor(tmp_path)
    job = PrintJob(header(), 41, RESULTS)
    (first,) = p.handle(job)
    (again,) = p.handle(job)  # the display resent it after a lost reply
    assert first.ok and again == first
    assert len(list((tmp_path / "spool").glob("*.png"))) == 1 and p.stats["print.resent"] == 1
    (other,) = p.handle(PrintJob(header(seq=2), 41, RESULTS))  # a new press: printed
    assert other.ok and len(list((tmp_path / "spool").glob("*.png"))) == 2


def test_backend_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"printer\.backend"):
        config.validate({"printer": {"backend": "fax"}})
    from actors.runtime import StartupError

    with pytest.raises(StartupError, match="cups_queue"):
        printer_actor(tmp_path, backend="cups")


# --- ESC/POS -------------------------------------------------------------------------------------


class EscposPrinterOnLoopback:
    """A network thermal printer on 127.0.0.1: answers the paper status request, keeps the bytes."""

    def __init__(self, paper_status: int):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.paper_status = paper_status
        self.received = bytearray()
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(5)
            request = conn.recv(3)
            if request == backends.PAPER_STATUS_REQUEST:
                conn.sendall(bytes([self.paper_status]))
            else:
                self.received += request
            while chunk := conn.recv(65536):
                self.received += chunk
        self.done.set()

    def close(self) -> None:
        self.server.close()


def test_escpos_over_tcp_prints_the_receipt_image(tmp_path: Path) -> None:
    fake = EscposPrinterOnLoopback(paper_status=0x12)  # paper present
    try:
        p = printer_actor(tmp_path, backend="escpos", escpos_device=f"tcp://127.0.0.1:{fake.port}")
        (reply,) = p.handle(PrintJob(header(), 42, RESULTS))
        assert reply.ok, reply.detail
        assert fake.done.wait(5)
    finally:
        fake.close()
    data = bytes(fake.received)
    assert data.startswith(b"\x1b@")  # ESC @: initialise
    assert b"\x1dv0" in data  # GS v 0: a raster image
    assert data.rstrip(b"\x00").endswith(b"\x1dVA\x03") or b"\x1dV" in data[-16:]  # GS V: cut
    width_bytes = int.from_bytes(data[data.index(b"\x1dv0") + 4 : data.index(b"\x1dv0") + 6], "little")
    assert width_bytes == receipt.RECEIPT_WIDTH_PX // 8


def test_escpos_out_of_paper_and_offline_are_reported(tmp_path: Path) -> None:
    fake = EscposPrinterOnLoopback(paper_status=0x12 | 0x60)  # paper end
    try:
        p = printer_actor(tmp_path, backend="escpos", escpos_device=f"tcp://127.0.0.1:{fake.port}")
        (reply,) = p.handle(PrintJob(header(), 43, RESULTS))
        assert not reply.ok and reply.detail == "out of paper"
    finally:
        fake.close()
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    p = printer_actor(tmp_path, backend="escpos", escpos_device=f"tcp://127.0.0.1:{port}")
    (reply,) = p.handle(PrintJob(header(), 44, RESULTS))
    assert not reply.ok and reply.detail.startswith("printer offline") and "refused" in reply.detail.lower()


def test_escpos_to_a_device_file(tmp_path: Path) -> None:
    device = tmp_path / "lp0"
    device.write_bytes(b"")
    p = printer_actor(tmp_path, backend="escpos", escpos_device=str(device))
    (reply,) = p.handle(PrintJob(header(), 45, RESULTS))
    assert reply.ok and b"\x1dv0" in device.read_bytes()
    p = printer_actor(tmp_path, backend="escpos", escpos_device=str(tmp_path / "no" / "lp9"))
    (reply,) = p.handle(PrintJob(header(), 46, RESULTS))
    assert not reply.ok and "printer offline" in reply.detail


# --- CUPS ----------------------------------------------------------------------------------------


def test_queue_problem_from_lpstat() -> None:
    assert backends.queue_problem("q", 0, "printer q is idle.  enabled since Thu") is None
    assert "stopped" in backends.queue_problem("q", 0, "printer q disabled since Thu -\n\tPaused")
    assert "unknown printer queue" in backends.queue_problem("q", 1, 'lpstat: Invalid destination name "q".')


@pytest.fixture
def cupsd(monkeypatch: pytest.MonkeyPatch):
    if reason := cups_server.missing():
        pytest.skip(reason)
    with cups_server.running_cupsd() as env:
        monkeypatch.setenv("CUPS_SERVER", env["CUPS_SERVER"])
        yield env


@pytest.mark.timeout(90)
def test_cups_prints_a_pdf_with_the_match_and_reports_a_stopped_queue(cupsd: dict[str, str], tmp_path: Path) -> None:
    p = printer_actor(tmp_path, backend="cups", cups_queue=cups_server.QUEUE)
    before = cups_server.pdfs()
    (reply,) = p.handle(PrintJob(header(), 47, RESULTS, lookalikes=LOOKALIKES))
    assert reply.ok and f"on {cups_server.QUEUE}" in reply.detail, reply.detail
    pdf = cups_server.wait_for_pdf(before)
    try:
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, check=True).stdout.decode()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(pdf, ARTIFACTS / "receipt_cups.pdf")
    finally:
        pdf.unlink()
    assert "Your closest match: barack obama" in text and "Distance 0.350" in text
    assert "".join(LOOKALIKES.split()) in "".join(text.split()), text  # the sentence, however it wraps

    subprocess.run(["cupsdisable", cups_server.QUEUE], env=cupsd, check=True, timeout=10)
    (reply,) = p.handle(PrintJob(header(seq=2), 48, RESULTS))
    assert not reply.ok and reply.detail == f"printer offline: queue {cups_server.QUEUE!r} is stopped"
    p.backend.queue = "no_such_queue"
    (reply,) = p.handle(PrintJob(header(seq=3), 49, RESULTS))
    assert not reply.ok and reply.detail == "unknown printer queue 'no_such_queue'"
