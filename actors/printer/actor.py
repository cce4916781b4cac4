"""printer — answers ``print`` requests (ROUTER, for the display's REQ) with a ``printed`` message each.

Composes the receipt of a result list (best match, score and meaning, the matched dataset photo
with its source and licence, dataset facts, date; see :mod:`actors.printer.receipt`) and delivers it to
``printer.backend``: ``spool`` (PNG files in ``printer.spool_dir``), ``cups`` (``lp`` to
``printer.cups_queue``) or ``escpos`` (python-escpos to ``printer.escpos_device``). A failure
(queue stopped, unknown queue, out of paper, device gone) becomes a reply with ``ok = False`` and
a reason the display shows; the actor itself never stops for it.

Retries are safe: the display resends the very same job (same header) when a reply is late, and
a job seen before is answered from memory instead of being printed twice. The visitor's face is
printed only when ``printer.print_visitor_face`` is on and the job carries it; it is never saved.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image

from actors import runtime
from actors.printer import receipt
from actors.printer.backends import Backend, CupsBackend, EscposBackend, PrinterError, SpoolBackend, job_title
from index import scores
from index.photos import DatasetPhotos
from messages import PrintJob, PrintReply

REMEMBERED_JOBS = 32


def make_backend(printer_cfg: dict[str, Any], spool_dir: Any) -> Backend:
    backend = printer_cfg["backend"]
    if backend == "cups":
        if not printer_cfg["cups_queue"]:
            raise runtime.StartupError('printer.backend = "cups" needs printer.cups_queue')
        return CupsBackend(printer_cfg["cups_queue"])
    if backend == "escpos":
        if not printer_cfg["escpos_device"]:
            raise runtime.StartupError('printer.backend = "escpos" needs printer.escpos_device')
        return EscposBackend(printer_cfg["escpos_device"])
    return SpoolBackend(spool_dir)


def job_key(job: PrintJob) -> tuple[str, int, int]:
    """Identifies one press of the print button; a resent job has the same key."""
    return job.header.src, job.header.seq, job.header.t_ns


def decode_face(jpeg: bytes) -> np.ndarray | None:
    if not jpeg:
        return None
    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError):
        return None


class Printer(runtime.Actor):
    ROLE = "printer"
    RECEIVES = ("print",)

    def on_start(self) -> None:
        p = self.cfg["printer"]
        self.backend = make_backend(p, self.cfg.path("printer", "spool_dir"))
        self.photos = DatasetPhotos(self.cfg.path("index", "path"))
        self.jobs = 0
        self.replies: OrderedDict[tuple[str, int, int], PrintReply] = OrderedDict()
        self.log.info("printing to %s (%s)", p["backend"], type(self.backend).__name__)

    def handle(self, msg: PrintJob) -> list[Any]:
        key = job_key(msg)
        if key in self.replies:
            self.stats["print.resent"] += 1
            self.log.info("job for query %d seen before; answering it again without printing", msg.query_id)
            return [self.replies[key]]
        reply = self._print(msg)
        self.replies[key] = reply
        if len(self.replies) > REMEMBERED_JOBS:
            self.replies.popitem(last=False)
        return [reply]

    def _print(self, msg: PrintJob) -> PrintReply:
        now = dt.datetime.now()
        threshold = self.cfg["display"]["match_threshold"]
        best = scores.best(msg.results)
        face = decode_face(msg.visitor_face_jpeg) if self.cfg["printer"]["print_visitor_face"] else None
        doc = receipt.compose(
            msg.results,
            threshold,
            now,
            facts=self.photos.facts,
            match_photo=self.photos.crop(best) if best is not None else None,
            visitor_face=face,
            lookalikes=msg.lookalikes,
        )
        try:
            self.jobs += 1
            detail = self.backend.deliver(doc, job_title(msg.query_id, now, self.jobs))
        except PrinterError as e:
            self.stats["print.failed"] += 1
            self.log.warning("printing query %d failed: %s", msg.query_id, e)
            return PrintReply(self.header(msg.header.frame_id), msg.query_id, False, str(e)[:1000])
        self.stats["print.done"] += 1
        self.log.info("printed query %d: %s", msg.query_id, detail)
        return PrintReply(self.header(msg.header.frame_id), msg.query_id, True, detail[:1000])

    def on_stop(self) -> None:
        if hasattr(self, "photos"):
            self.photos.close()

    def reject(self, reason: str) -> Any:
        return PrintReply(self.header(), -1, False, reason)
