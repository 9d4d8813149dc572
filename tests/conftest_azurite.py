"""Pytest plugin: a real Azurite (Azure Blob emulator) for the tests that need an Azure lake.

Register it in ``tests/conftest.py`` with ``pytest_plugins = ["conftest_azurite"]``. Fixtures:

- ``azurite_conn_str`` (session): a connection string. Uses ``WHALEBT_AZURITE_CONN_STR`` if set
  (an instance you started yourself); otherwise runs ``scripts/azurite.sh start`` once per test
  session, with its own state directory, and ``stop`` at the end.
- ``azure_lake_uri`` (function): a fresh ``az://<container>/<prefix>`` URI with
  ``AZURE_STORAGE_CONNECTION_STRING`` pointing at that Azurite for the test (and for the
  subprocesses it starts).

Tests using them should carry ``@pytest.mark.services``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "azurite.sh"

_state: dict[str, str] = {}


def _start(config: pytest.Config) -> str:
    """Start Azurite once per process, whichever module's fixture asks first."""
    if "conn" in _state:
        return _state["conn"]
    given = os.environ.get("WHALEBT_AZURITE_CONN_STR")
    if given:
        _state["conn"] = given
        return given
    state_dir = tempfile.mkdtemp(prefix="whalebt-azurite-")
    env = dict(os.environ, AZURITE_STATE_DIR=state_dir)
    try:
        out = subprocess.run(
            ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/azurite.sh start took more than 10 minutes (npm install?)")
    if out.returncode != 0:
        pytest.fail(f"scripts/azurite.sh start failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    conn = out.stdout.strip().splitlines()[-1]

    def stop() -> None:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
        _state.clear()

    config.add_cleanup(stop)
    _state["conn"] = conn
    return conn


@pytest.fixture(scope="session")
def azurite_conn_str(request: pytest.FixtureRequest) -> str:
    """Connection string of a running Azurite (started for this session if needed)."""
    return _start(request.config)


@pytest.fixture
def azure_lake_uri(azurite_conn_str: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty ``az://`` lake URI on Azurite, with credentials in the environment."""
    for var in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCOUNT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_conn_str)
    return f"az://t{uuid.uuid4().hex[:20]}/lake"
