"""Visual themes for MuJoCo scenes: procedural floor and sky textures written into the model XML.

VLM-RM found that realistic textures and a fixed, slightly downward camera matter to CLIP
(humanoid kneeling success rose from 36% to 100%). Every texture here is generated: MuJoCo's
builtin patterns, or a seeded multi-octave value noise saved as a small PNG (grass, sand, ...).
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from vlmbench.specs.task import THEMES, TextureSpec, ThemeSpec



THEMED_XML_VERSION = 2  # part of the cache key: bump when themed_xml changes what it writes


def resolve_theme(theme: str | ThemeSpec) -> ThemeSpec:
    if isinstance(theme, ThemeSpec):
        return theme
    if theme not in THEMES:
        raise KeyError(f"unknown theme '{theme}'; built-in themes: {', '.join(THEMES)}")
    return THEMES[theme]


def cache_dir() -> Path:
    root = Path(os.environ.get("VLMBENCH_CACHE", Path.home() / ".cache" / "vlmbench"))
    path = root / "themes"
    path.mkdir(parents=True, exist_ok=True)
    return path


def noise_texture(spec: TextureSpec, seed: int = 0) -> np.ndarray:
    """Seeded, tileable value noise (four octaves) blended between rgb1 and rgb2, as uint8 RGB."""
    rng = np.random.default_rng(seed)
    size = spec.size
    field = np.zeros((size, size))
    for octave in range(4):
        cells = 4 * 2**octave
        grid = rng.random((cells, cells))
        coords = np.arange(size) * cells / size
        i0 = np.floor(coords).astype(int)
        t = coords - i0
        t = t * t * (3 - 2 * t)  # smoothstep
        i1 = (i0 + 1) % cells  # wraps, so the texture tiles without seams
        rows = grid[i0][:, i0] * (1 - t)[None, :] + grid[i0][:, i1] * t[None, :]
        rows_next = grid[i1][:, i0] * (1 - t)[None, :] + grid[i1][:, i1] * t[None, :]
        field += (rows * (1 - t)[:, None] + rows_next * t[:, None]) / 2**octave
    field = (field - field.min()) / (np.ptp(field) + 1e-12)
    rgb = np.asarray(spec.rgb1)[None, None] * (1 - field[..., None]) + np.asarray(spec.rgb2)[None, None] * field[..., None]
    return (rgb * 255).round().astype(np.uint8)


def _texture_element(name: str, kind: str, spec: TextureSpec, folder: Path) -> ET.Element:
    attrs = {"name": name, "type": kind, "width": str(spec.size), "height": str(spec.size)}
    if spec.pattern == "noise":
        from PIL import Image

        digest = hashlib.sha1(spec.model_dump_json().encode()).hexdigest()[:12]
        png = folder / f"noise-{digest}.png"
        if not png.exists():
            Image.fromarray(noise_texture(spec)).save(png)
        attrs = {"name": name, "type": kind, "file": str(png)}
        if kind == "skybox":  # a skybox from one image needs the cube layout; use a gradient instead
            attrs = {"name": name, "type": kind, "builtin": "gradient", "width": "256", "height": "256",
                     "rgb1": _rgb(spec.rgb1), "rgb2": _rgb(spec.rgb2)}
        return ET.Element("texture", attrs)
    attrs.update(builtin=spec.pattern, rgb1=_rgb(spec.rgb1), rgb2=_rgb(spec.rgb2))
    return ET.Element("texture", attrs)


def _rgb(c: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.4f}" for x in c)


def themed_xml(original: Path, theme: ThemeSpec) -> Path:
    """Write (once, cached by content) a copy of ``original`` with the theme's floor and sky."""
    folder = cache_dir()
    key = hashlib.sha1(f"{THEMED_XML_VERSION}{original.read_text()}{theme.model_dump_json()}".encode()).hexdigest()[:16]
    target = folder / f"{original.stem}-{key}.xml"
    if target.exists():
        return target
    tree = ET.parse(original)
    root = tree.getroot()
    compiler = root.find("compiler")
    for attr in ("meshdir", "texturedir", "assetdir"):
        if compiler is not None and compiler.get(attr) and not os.path.isabs(compiler.get(attr)):
            compiler.set(attr, str((original.parent / compiler.get(attr)).resolve()))
    asset = root.find("asset")
    if asset is None:
        asset = ET.SubElement(root, "asset")
    if theme.sky is not None:
        for old in [t for t in asset.findall("texture") if t.get("type") == "skybox"]:
            asset.remove(old)
        asset.append(_texture_element("vlmbench_sky", "skybox", theme.sky, folder))
    if theme.floor is not None:
        asset.append(_texture_element("vlmbench_floor", "2d", theme.floor, folder))
        asset.append(ET.Element("material", {
            "name": "vlmbench_floor", "texture": "vlmbench_floor",
            "texrepeat": f"{theme.floor.repeat} {theme.floor.repeat}", "reflectance": "0.05",
        }))
        for geom in root.iter("geom"):
            if geom.get("type") == "plane":
                geom.set("material", "vlmbench_floor")
                geom.set("rgba", "1 1 1 1")  # else a default geom colour tints the texture
    tree.write(target)
    return target

