"""The camera actor (actor.py) and what it reads from: webcams, videos, image folders, recordings.

``python -m actors.camera`` runs the actor; ``python -m actors.camera.replay_control`` sends it replay
commands from a shell.
"""

from actors.camera.actor import Camera

__all__ = ["Camera"]
