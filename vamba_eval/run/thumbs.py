"""Per-sample contact sheets (a strip of the frames the model saw) for the report's drill-down."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

MAX_FRAMES = 8
HEIGHT = 64


def thumb_name(sample_id: str) -> str:
    """A file name for a sample id (ids may hold '/', ':' …)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)[:150] + ".jpg"


def thumb_path(thumbs_root: Path, task: str, sample_id: str) -> Path:
    return Path(thumbs_root) / re.sub(r"[^A-Za-z0-9._-]", "_", task) / thumb_name(sample_id)


def write_contact_sheet(thumbs_root: Path, task: str, sample_id: str, frames: np.ndarray) -> Path:
    """Up to 8 evenly spaced frames, 64 px high, side by side, as a small JPEG."""
    from PIL import Image

    pick = np.linspace(0, len(frames) - 1, num=min(MAX_FRAMES, len(frames))).round().astype(int)
    tiles = []
    for i in pick:
        img = Image.fromarray(frames[i])
        w = max(1, round(img.width * HEIGHT / img.height))
        tiles.append(img.resize((w, HEIGHT)))
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), HEIGHT), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 2
    path = thumb_path(thumbs_root, task, sample_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "JPEG", quality=70)
    return path
