"""Pictures people look at: contact sheets and captioned strips of frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def captioned(frame: np.ndarray, lines: Sequence[str], highlight: bool | None = None) -> Image.Image:
    """The frame with a caption band below it; a green/red border when ``highlight`` is set."""
    h, w = frame.shape[:2]
    size = max(10, w // 16)
    band = (size + 3) * len(lines) + 4
    tile = Image.new("RGB", (w, h + band), "white")
    tile.paste(Image.fromarray(frame), (0, 0))
    draw = ImageDraw.Draw(tile)
    for i, line in enumerate(lines):
        draw.text((3, h + 2 + i * (size + 3)), line, fill="black", font=_font(size))
    if highlight is not None:
        draw.rectangle([0, 0, w - 1, h - 1], outline=(30, 160, 40) if highlight else (200, 40, 40), width=3)
    return tile


def contact_sheet(tiles: Sequence[Image.Image], columns: int, title: str | None = None) -> Image.Image:
    """Tiles in a grid (all the size of the first), under an optional title."""
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    tw, th = tiles[0].size
    head = 28 if title else 0
    sheet = Image.new("RGB", (columns * tw, rows * th + head), "white")
    if title:
        ImageDraw.Draw(sheet).text((6, 6), title, fill="black", font=_font(16))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * tw, head + (i // columns) * th))
    return sheet


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
