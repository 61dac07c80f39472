"""Headless RGB rendering at a task's size and camera.

MuJoCo scenes are drawn with ``mujoco.Renderer`` and an explicit camera (free, or tracking a
body); classic-control and Box2D scenes use the env's own ``rgb_array`` frame, resized.
"""

from __future__ import annotations

import importlib.util
import sys

import mujoco
import numpy as np

from vlmbench.errors import VlmbenchError
from vlmbench.specs.task import RenderSpec

GL_HELP = (
    "no working OpenGL backend for headless rendering (MUJOCO_GL={backend}): install EGL "
    "(Debian/Ubuntu: apt-get install libegl1 libgl1) or OSMesa (apt-get install libosmesa6) "
    "and set MUJOCO_GL=egl or MUJOCO_GL=osmesa. Cause: {cause}"
)


class RenderError(VlmbenchError):
    """Rendering is impossible on this machine, or the camera names something missing."""


def _dominant(pixels: np.ndarray) -> np.ndarray:
    """The most frequent colour among (n, 3) pixels."""
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts.argmax()]


def fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to fit width x height keeping the aspect ratio. Each margin takes the dominant colour
    of the edge it continues (sky above, ground below), so no band appears that a judge could read
    as part of the scene, and no object touching an edge is smeared into the margin."""
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    from PIL import Image

    scale = min(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = np.asarray(Image.fromarray(frame).resize(size, Image.LANCZOS))
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:top], out[top + size[1]:] = _dominant(scaled[0]), _dominant(scaled[-1])
    out[:, :left], out[:, left + size[0]:] = _dominant(scaled[:, 0]), _dominant(scaled[:, -1])
    out[top : top + size[1], left : left + size[0]] = scaled
    return out


def load_llvm_users_before_gl() -> None:
    """Import triton (if installed) before the first GL context exists.

    Mesa's software EGL and triton both load their own LLVM; importing triton after a Mesa context
    exists crashes the process (SIGSEGV). torch pulls triton in through torchvision and
    torch._dynamo, e.g. when a CLIP judge loads, so vlmbench imports it first (0.1 s, no torch).
    """
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


class MujocoCamera:
    """Renders an MjData with the spec's camera; one GL context per instance (per process)."""

    def __init__(self, model, render: RenderSpec):
        import os

        load_llvm_users_before_gl()
        if render.shadow_size:
            model.vis.quality.shadowsize = render.shadow_size
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, render.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, render.height)
        try:
            self.renderer = mujoco.Renderer(model, height=render.height, width=render.width)
        except Exception as exc:  # noqa: BLE001 - any GL failure gets the same advice
            from vlmbench.envs import MUJOCO_IMPORTED_WITHOUT_BACKEND

            if MUJOCO_IMPORTED_WITHOUT_BACKEND:
                raise RenderError(
                    "mujoco was imported before vlmbench, without MUJOCO_GL set, so it chose a windowed GL "
                    "backend: set MUJOCO_GL=egl in the environment, or import vlmbench first"
                ) from None
            raise RenderError(GL_HELP.format(backend=os.environ.get("MUJOCO_GL"), cause=exc)) from None
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = render.shadow_size > 0
        self.camera = mujoco.MjvCamera()
        self.track_body = None
        cam = render.camera
        if cam is None:
            mujoco.mjv_defaultFreeCamera(model, self.camera)
            return
        self.camera.distance, self.camera.azimuth, self.camera.elevation = cam.distance, cam.azimuth, cam.elevation
        self.camera.lookat[:] = cam.lookat
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.offset = np.asarray(cam.lookat, dtype=np.float64)
        if cam.track_body is not None:
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, cam.track_body)
            if body < 0:
                raise RenderError(f"render.camera.track_body: no body '{cam.track_body}' in the model")
            self.track_body = body

    def __call__(self, data) -> np.ndarray:
        if self.track_body is not None:
            # Stateless tracking (MuJoCo's own tracking camera carries state between frames, which
            # would make a restored state render differently): follow the body horizontally,
            # keep the configured height.
            self.camera.lookat[:2] = data.xpos[self.track_body][:2] + self.offset[:2]
            self.camera.lookat[2] = self.offset[2]
        self.renderer.update_scene(data, camera=self.camera)
        self._aim_shadow_lights()
        return self.renderer.render().copy()

    def _aim_shadow_lights(self) -> None:
        """Place each shadow-casting directional light far back along its direction, above the look-at point.

        MuJoCo draws a directional light's shadow map from the light's position, with an orthographic
        box ``vis.map.shadowclip * extent`` wide and the camera's near..far depth range. Gymnasium's
        scenes put the light at 1.3 m, so everything higher (a standing humanoid's torso, head and
        raised arms) cast no shadow, leaving fragments and hollow outlines; and the floor sat at the
        near end of the depth range, where software GL (llvmpipe) compares the floor with its own
        shadow-map depth too coarsely, so the floor shadowed itself in black specks on the distant
        grass. Three quarters of the depth range back, every body casts and the floor compares
        cleanly (specks vanished from a quarter of the range on); the box follows the camera. A
        directional light shines the same from any position, so nothing else in the frame changes.
        """
        scene = self.renderer.scene
        distance = 0.75 * scene.camera[0].frustum_far
        for light in scene.lights[: scene.nlight]:
            if light.castshadow and light.type == mujoco.mjtLightType.mjLIGHT_DIRECTIONAL:
                light.pos[:] = self.camera.lookat - distance * light.dir

    def close(self) -> None:
        self.renderer.close()
