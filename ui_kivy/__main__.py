"""``python -m ui_kivy``: the display process (the Procfile's ``display`` line).

With ``display.headless`` (or ``MEGAPIXELS_HEADLESS=1``) it runs the headless display actor
(actors/display.py: JSON lines on stdout); otherwise the Kivy window (ui_kivy/app.py).
"""

import sys

import config
from actors import runtime
from actors.display import HeadlessDisplay
from actors.runtime import privacy


def main() -> int:
    try:
        cfg = config.load()
    except config.ConfigError as e:
        print(f"display: configuration error: {e}", file=sys.stderr)
        return 2
    if cfg["display"]["headless"]:
        return runtime.main(HeadlessDisplay)
    if cfg["mode"]["kiosk"]:
        privacy.restart_without_malloc_cache()
        privacy.scrub_freed_memory()
    from ui_kivy.app import main as kivy_main  # Kivy only when there is a window to open

    return kivy_main(cfg)


raise SystemExit(main())
