"""The printer actor (actor.py), the receipt it renders (receipt.py) and where it goes (backends.py).

``python -m actors.printer`` runs the actor.
"""

from actors.printer.actor import Printer

__all__ = ["Printer"]
