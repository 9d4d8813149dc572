"""`make image-smoke`: the live image built here and run as uid 10001 against replayed real frames.

Slow (a cold build downloads the whole pinned environment) and needs root with buildah, podman or
docker (the scripts install buildah/mmdebstrap with apt-get when missing): run with
``WHALEBT_IMAGE_TESTS=1 pytest -m image``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.image,
    pytest.mark.skipif(
        os.environ.get("WHALEBT_IMAGE_TESTS") != "1", reason="set WHALEBT_IMAGE_TESTS=1 to build the image"
    ),
]


@pytest.mark.timeout(3600)
def test_make_image_smoke_passes():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = subprocess.run(["make", "image-smoke"], cwd=ROOT, capture_output=True, text=True, timeout=3500)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert "image-smoke: PASS" in proc.stderr, tail
    assert "/health: 200 " in proc.stderr, tail
    assert "as uid 10001" in proc.stderr and "byte for byte" in proc.stderr, tail
