"""The kiosk's Kivy window (see :mod:`ui_kivy.app`).

Kivy reads these variables when it is first imported, so they are set here, before any module of
this package imports it. Nothing about a visitor may reach the disk: no Kivy log files, no Kivy
config file or ``~/.kivy`` folder, and Kivy does not parse the actor's command line. Kivy's own
log lines go to its logger only ("MIXED" mode), so the actor's ``logging`` setup stays its own.
Mesa (the software GL under Xvfb) would otherwise keep a shader cache in ~/.cache.
SDL by default swallows a click that focuses its window; on a kiosk the visitor's first tap counts.
"""

import os

os.environ["KIVY_NO_FILELOG"] = "1"
os.environ["KIVY_NO_CONFIG"] = "1"
os.environ["KIVY_NO_ARGS"] = "1"
os.environ.setdefault("KIVY_LOG_MODE", "MIXED")
os.environ.setdefault("SDL_MOUSE_FOCUS_CLICKTHROUGH", "1")
os.environ.setdefault("MESA_SHADER_CACHE_DISABLE", "true")  # Mesa would cache shaders in ~/.cache
