"""Environments built from task specs: termination overrides, features, rendering, saved states."""

import os
import sys

# MuJoCo picks its GL backend when first imported: default to headless EGL unless the user chose.
# If mujoco was imported before vlmbench with no choice made, it already settled on a windowed one.
MUJOCO_IMPORTED_WITHOUT_BACKEND = "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
