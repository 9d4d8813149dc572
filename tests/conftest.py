"""Shared pytest setup: the Azurite fixture plugin and a headless plotting backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

pytest_plugins = ["conftest_azurite"]
