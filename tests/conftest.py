"""Shared pytest setup: the Azurite fixture plugin, a headless plotting backend, shared fixtures.

Tests are laid out like the source (``tests/signals``, ``tests/datasets``, ``tests/bt``,
``tests/live``); cross-cutting ones (CLI frame, import cycles) sit here. ``tests/servers`` holds
the local servers that speak the exchanges' real protocols, ``tests/data/real`` the recordings.
"""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

pytest_plugins = ["conftest_azurite"]

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "data" / "real"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve_dir():
    """``serve_dir(path) -> "http://127.0.0.1:<port>"``: a real HTTP server over a folder, stopped after the test."""
    servers: list[ThreadingHTTPServer] = []

    def serve(directory: Path) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
