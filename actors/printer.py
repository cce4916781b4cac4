"""printer — answers ``print`` requests (REP), replying with a ``printed`` message.

Renders the receipt of a result list (never the visitor's face) and delivers it to the
configured backend; the skeleton's only backend is a spool folder (``printer.spool_dir``).
Every request gets a reply, a failure included, so the display can tell the visitor.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from actors import receipt, runtime
from messages import PrintJob, PrintReply


class Printer(runtime.Actor):
    ROLE = "printer"
    RECEIVES = ("print",)

    def on_start(self) -> None:
        self.spool = self.cfg.path("printer", "spool_dir")
        self.log.info("spooling receipts to %s", self.spool)

    def handle(self, msg: PrintJob) -> list[Any]:
        lines = receipt.receipt_lines(msg.results, self.cfg["display"]["match_threshold"], dt.datetime.now())
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            path = self.spool / f"receipt-{dt.datetime.now():%Y%m%d-%H%M%S}-{msg.query_id % 100000:05d}.png"
            receipt.render(lines).save(path)
        except OSError as e:
            self.stats["print.failed"] += 1
            return [PrintReply(self.header(msg.header.frame_id), msg.query_id, False, f"spool folder: {e}")]
        self.stats["print.done"] += 1
        return [PrintReply(self.header(msg.header.frame_id), msg.query_id, True, str(path))]

    def reject(self, reason: str) -> Any:
        return PrintReply(self.header(), -1, False, reason)


if __name__ == "__main__":
    raise SystemExit(runtime.main(Printer))
