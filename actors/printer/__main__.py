"""``python -m actors.printer``: the printer process."""

from actors import runtime
from actors.printer import Printer

raise SystemExit(runtime.main(Printer))
