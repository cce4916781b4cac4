"""``python -m actors.button``: the print button process (idle when ``button.backend`` is none or key)."""

from actors import runtime
from actors.button import Button

raise SystemExit(runtime.main(Button))
