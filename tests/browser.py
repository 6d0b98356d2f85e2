"""A real headless browser for tests: Debian's `chromium` takes a PNG screenshot of an HTML page."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: `apt-get install -y chromium` (Debian) to check the page"
)


def screenshot(html: Path, png: Path, width: int = 1100, height: int = 1500) -> np.ndarray:
    """Render `html` in headless Chromium, save `png`, return its pixels (height x width x 3)."""
    from PIL import Image

    flags = ["--headless", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={png}", html.resolve().as_uri()],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"))


def share_of_colour(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 12) -> float:
    """Share of the pixels within `tolerance` of `rgb` (e.g. matplotlib's first line colour)."""
    return float(np.mean(np.all(np.abs(pixels.astype(int) - rgb) <= tolerance, axis=-1)))
