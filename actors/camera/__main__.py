"""``python -m actors.camera``: the camera process."""

from actors import runtime
from actors.camera import Camera

raise SystemExit(runtime.main(Camera))
