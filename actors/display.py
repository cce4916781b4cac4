"""display — subscribes to ``frames``, ``faces`` and ``matches``; sends ``print`` requests.

With ``display.headless`` (or ``MEGAPIXELS_HEADLESS=1``) it opens no window and prints every
result as one JSON line on stdout; otherwise it starts the Kivy app in ``ui_kivy``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from actors import runtime
from messages import Matches


def result_line(msg: Matches) -> str:
    """One JSON line per result list, as printed by the headless display."""
    return json.dumps(
        {
            "query_id": msg.query_id,
            "frame_id": msg.header.frame_id,
            "partial": msg.partial,
            "missing_shards": msg.missing_shards,
            "latency_ms": round(msg.latency_ms, 1),
            "results": msg.results,
        }
    )


class HeadlessDisplay(runtime.Actor):
    ROLE = "display"
    RECEIVES = ("matches",)

    def handle(self, msg: Matches) -> list[Any]:
        print(result_line(msg), flush=True)
        return []


def main() -> int:
    import config

    try:
        cfg = config.load()
    except config.ConfigError as e:
        print(f"display: configuration error: {e}", file=sys.stderr)
        return 2
    if cfg["display"]["headless"]:
        return runtime.main(HeadlessDisplay)
    from actors import privacy
    from ui_kivy.app import main as kivy_main

    if cfg["mode"]["kiosk"]:
        privacy.restart_without_malloc_cache()
        privacy.scrub_freed_memory()

    return kivy_main(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
