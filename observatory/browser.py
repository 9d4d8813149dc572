"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) for the browser tests and scripts/screenshots.py.

Needs selenium (the ``test`` extra), imported only when a driver is made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
LOCAL_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"  # other names do not resolve


def install_chromium() -> str | None:
    """Install Debian's chromium and chromium-driver; returns why not, or None when they are there."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    if shutil.which("apt-get") is None:
        return "chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "chromium is not installed and installing it needs root (apt-get install chromium chromium-driver)"
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=apt_env, capture_output=True, timeout=600)
    r = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"],
        env=apt_env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if r.returncode or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return f"apt-get could not install chromium: {r.stderr.strip()[-300:]}"
    return None


def chromium(profile: Path, *, width: int = 1400, height: int = 1700, performance_log: bool = False) -> Any:
    """A headless Chrome driver with a fresh profile in ``profile``; only 127.0.0.1 resolves."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", LOCAL_ONLY):
        opts.add_argument(arg)
    if performance_log:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    return driver
