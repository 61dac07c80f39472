"""Environments built from task specs: termination overrides, features, rendering, saved states."""

import os

# MuJoCo picks its GL backend when first imported: default to headless EGL unless the user chose.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
