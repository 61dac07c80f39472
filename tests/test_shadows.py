"""Humanoid frames show shadows exactly where the body blocks the light, and nowhere else.

The humanoid scene's shadow-casting light points straight down, so a floor point is in shadow
exactly when the vertical ray above it meets a body geom. The expected shadow is computed from
MuJoCo's ray casting alone (camera rays to find the floor point behind each pixel, then a vertical
ray from it), independently of the renderer, and compared with the rendered frame: pixels well
inside the expected shadow must be dark, and pixels of lit floor or sky well away from any shadow
or body edge must not be (black specks on distant grass or in the sky are shadow-map artefacts).
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from vlmbench.envs.task_env import make_env
from vlmbench.specs.catalogue import resolve_task

DARK = 150  # sum of R, G and B: shadowed grass is ~50, lit grass and sky are above 200


@pytest.fixture(scope="module")
def humanoid():
    env = make_env(resolve_task("humanoid-kneel"), render=True)
    yield env
    env.close()


def pixel_rays(env, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(eye position, unit ray direction per pixel) of the camera that drew the last frame."""
    scene = env.camera.renderer.scene
    left, right_eye = scene.camera[0], scene.camera[1]
    eye = (np.asarray(left.pos, float) + np.asarray(right_eye.pos, float)) / 2  # MuJoCo renders the eyes' average
    forward, up = np.asarray(left.forward, float), np.asarray(left.up, float)
    right = np.cross(forward, up)
    half_height = (left.frustum_top - left.frustum_bottom) / 2
    half_width = half_height * width / height
    xs = left.frustum_center + ((np.arange(width) + 0.5) / width * 2 - 1) * half_width
    ys = left.frustum_top - (np.arange(height) + 0.5) / height * 2 * half_height
    rays = left.frustum_near * forward + xs[None, :, None] * right + ys[:, None, None] * up
    return eye, rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def expected_shadow(env, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(geom id seen at each pixel, -1 for sky; whether that pixel's floor point is below a body geom)."""
    model, data = env.unwrapped.model, env.unwrapped.data
    eye, rays = pixel_rays(env, height, width)
    seen = np.zeros(height * width, np.int32)
    distance = np.zeros(height * width)
    mujoco.mj_multiRay(model, data, eye, rays.reshape(-1).copy(), None, 1, -1, seen, distance, None,
                       height * width, 1e6)
    seen, distance = seen.reshape(height, width), distance.reshape(height, width)
    floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    shadow = np.zeros((height, width), bool)
    up, hit = np.array([0.0, 0.0, 1.0]), np.zeros(1, np.int32)
    for i, j in zip(*np.nonzero(seen == floor)):
        point = eye + distance[i, j] * rays[i, j]
        shadow[i, j] = mujoco.mj_ray(model, data, point, up, None, 0, -1, hit) >= 0  # 0: skip the static floor
    return seen, shadow


def spread(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (a square neighbourhood)."""
    grown = mask.copy()
    for di in range(-pixels, pixels + 1):
        for dj in range(-pixels, pixels + 1):
            grown |= np.roll(np.roll(mask, di, axis=0), dj, axis=1)
    return grown


def test_the_light_points_straight_down(humanoid):
    """The premise of the geometric shadow below: the model's only light is vertical."""
    model = humanoid.unwrapped.model
    assert model.nlight == 1 and model.light_castshadow[0]
    np.testing.assert_allclose(model.light_dir[0], [0, 0, -1], atol=1e-9)


@pytest.mark.parametrize("steps", [0, 12, 30])
def test_shadows_match_the_geometry(humanoid, steps):
    humanoid.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        humanoid.step(rng.uniform(-0.4, 0.4, humanoid.action_space.shape))
    frame = humanoid.render()
    height, width = frame.shape[:2]
    seen, shadow = expected_shadow(humanoid, height, width)
    dark = frame.astype(int).sum(axis=-1) < DARK
    body = (seen >= 0) & ~np.isin(seen, np.flatnonzero(humanoid.unwrapped.model.geom_bodyid == 0))

    inside = shadow & ~spread(~shadow, 1)  # one pixel in from the edge: anti-aliasing blends edges
    assert inside.sum() > 50, "the pose casts too small a shadow to test"
    lit = int((inside & ~dark).sum())
    assert lit < 0.03 * inside.sum(), f"{lit} of {inside.sum()} pixels inside the shadow are lit"

    clear = ~spread(shadow | body, 2)  # lit floor and sky, two pixels away from shadows and the body
    specks = np.argwhere(dark & clear).tolist()
    assert not specks, f"{len(specks)} dark pixels where nothing casts a shadow, e.g. (row, column) {specks[:5]}"
