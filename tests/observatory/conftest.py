"""Fixtures of the observatory tests: a small lake and results folder, `bt ui` as a process, headless Chromium.

The site (built once per session): the planted 8-day PLANTUSDT market of the sweep tests with
one day missing ids (a failed quality check) and one day without its quality report, the real
BTCUSDT recording ingested beside it; two `bt run`s of the whale rule, a `bt run` of
configs/demo_live.yaml (the backtest a `live run` of that config is scored against) and a
4-trial `bt sweep` registered in a sqlite MLflow store with its version promoted to `@live`.

Chromium is Debian's `chromium` + `chromium-driver`; the fixture installs them with apt-get when
they are missing (CI is a clean Debian machine where we are root) and skips only when it cannot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bt"))  # planted_sweep, the sweep tests' market

from observatory.browser import chromium, install_chromium  # noqa: E402
from ui_helpers import BTC, ISSUE_DAY, LIVE_CONFIG, SCREENSHOTS, UNCHECKED_DAY, env  # noqa: E402


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """``{"root", "lake", "results", "tracking_uri", "runs": {...}, "study"}``."""
    from planted_sweep import raw_config, write_lake

    from bt.config import GateConfig, load_config, parse_config
    from bt.registry import promote
    from bt.run import run_backtest
    from bt.sweep import sweep_command
    from datasets.lake import Lake
    from datasets.lake._keys import quality_key

    tmp = tmp_path_factory.mktemp("observatory")
    lake_dir, results = tmp / "lake", tmp / "results"
    write_lake(lake_dir)
    lake = Lake(str(lake_dir))
    # one day with 500 trades missing (ids count up by one: an id gap), one day without its report
    p = next(p for p in lake.partitions("bronze") if p.date.isoformat() == ISSUE_DAY)
    df = lake.read_partition(p)
    lake.write("bronze", df.drop(df.index[1000:1500]), p.exchange, p.symbol, p.date, mode="replace")
    q = next(p for p in lake.partitions("bronze") if p.date.isoformat() == UNCHECKED_DAY)
    lake.store.delete(quality_key(q))
    subprocess.run(
        [sys.executable, "-m", "datasets.cli", "ingest", "recording", str(BTC), "--lake", str(lake_dir)],
        check=True,
        capture_output=True,
        env=env(),
        cwd=ROOT,
    )
    raw = raw_config()
    raw["data"]["lake"] = str(lake_dir)
    plain = {k: v for k, v in raw.items() if k != "model"}
    runs = {}
    plain["name"] = "plain-whale"
    runs["plain"] = run_backtest(parse_config(plain), results_dir=results, log_mlflow=False, quiet=True).run_dir
    plain = {**plain, "name": "big-whale", "signal": {"whale": {"min_notional_usd": 1000000}}}
    runs["big"] = run_backtest(parse_config(plain), results_dir=results, log_mlflow=False, quiet=True).run_dir
    live_cfg = load_config(str(LIVE_CONFIG), lake=str(lake_dir))
    runs["live"] = run_backtest(live_cfg, results_dir=results, log_mlflow=False, quiet=True, tearsheet=False).run_dir
    tracking = f"sqlite:///{tmp}/mlflow.db"
    out = sweep_command(
        parse_config(raw),
        n_trials=4,
        storage=None,
        results_dir=str(results),
        tracking_uri=tracking,
        register_as="whale-plantusdt",
        register="always",
    )
    promote("whale-plantusdt", out["version"], "live", gate=GateConfig(), force=True, reason="observatory test")
    return {
        "root": tmp,
        "lake": lake_dir,
        "results": results,
        "tracking_uri": tracking,
        "runs": {k: Path(v) for k, v in runs.items()},
        "study": Path(out["results"]).name,
        "model_uri": out["model_uri"],
        "live_config_id": live_cfg.config_id,
    }


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium through the system chromedriver, with its performance log on."""
    why = install_chromium()
    if why:
        pytest.skip(why)
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"), performance_log=True)
    driver.get("about:blank")
    driver.get_log("performance")  # the new-tab page's own chrome:// loads, before any test
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
