"""The physical print button: the actor (actor.py), its devices (devices.py) and its logic (logic.py).

``python -m actors.button`` runs the actor.
"""

from actors.button.actor import Button

__all__ = ["Button"]
