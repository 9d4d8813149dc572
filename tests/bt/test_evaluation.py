"""report.html (bt.evaluation) and the quantstats tearsheet of a `bt run`, on the small test market."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

import bt.cli
from bt.config import load_config
from datasets.lake import Lake
from test_run import _market  # beside this file

SPAN = "2024-03-01 → 2024-03-02"
BASE = {
    "name": "report",
    "data": {"exchange": "binance_usdm", "symbol": "TESTUSDT", "start": "2024-03-01", "end": "2024-03-02"},
    "signal": {"whale": {"min_notional_usd": 2500}},
    "backtest": {"horizon": "5m", "horizons": ["1m", "15m"], "fee_bps": 5, "bootstrap": 200, "take_profit": 0.004},
    "portfolio": {"max_positions": 2},
}
MODEL_BACKTEST = {**BASE["backtest"], "label_threshold": 0.001}
MODEL = {
    "split": {"train": 0.5, "validation": 0.25, "test": 0.25},
    "lgbm": {"num_boost_round": 20, "min_data_in_leaf": 5},
    "threshold": {"policy": "max_mean_return", "min_signals": 3},
}


def _write_cfg(tmp, name, **over):
    cfg = json.loads(json.dumps(BASE))
    cfg["data"]["lake"] = str(tmp / "lake")
    cfg["name"] = name
    cfg.update(over)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(path, results, *extra):
    assert bt.cli.main(["run", str(path), "--results", str(results), "--no-mlflow", *extra]) == 0
    return results / load_config(path).run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluation")
    Lake(tmp / "lake").write_trades(_market())
    plain = _run(_write_cfg(tmp, "plain"), tmp / "results", "--no-tearsheet")
    model = _run(_write_cfg(tmp, "model", model=MODEL, backtest=MODEL_BACKTEST), tmp / "results", "--no-tearsheet")
    return tmp, plain, model


def figures(page: str) -> dict[str, dict]:
    found = re.findall(r'<script type="application/json" id="(fig-[a-z-]+)-data">(.*?)</script>', page, re.S)
    return {k: json.loads(v) for k, v in found}


def _title(fig):
    return fig["layout"]["title"]["text"]


def test_report_shows_every_figure_with_the_runs_numbers(runs):
    _, run_dir, _ = runs
    page = (run_dir / "report.html").read_text()
    figs = figures(page)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert list(figs) == [
        "fig-path",
        "fig-horizon",
        "fig-distribution",
        "fig-size",
        "fig-hour",
        "fig-exit-reasons",
        "fig-per-day",
        "fig-price",
    ]
    for div_id, fig in figs.items():
        assert f'<div id="{div_id}" class="fig">' in page
        assert SPAN in _title(fig), div_id
    # Mean and median vs horizon, in horizon order, as in metrics.json.
    h = figs["fig-horizon"]["data"]
    assert h[0]["x"] == ["1m", "5m", "15m"]
    assert h[0]["y"] == [m["by_horizon"][k]["mean_return"] for k in ("1m", "5m", "15m")]
    assert h[1]["y"] == [m["by_horizon"][k]["median_return"] for k in ("1m", "5m", "15m")]
    # The distribution holds every signal of the primary horizon; mean, p50 and +1 % marked.
    dist = figs["fig-distribution"]
    assert len(dist["data"][0]["x"]) == m["n_signals"] > 50
    assert np.mean(dist["data"][0]["x"]) == pytest.approx(m["mean_return"])
    assert [s["x0"] for s in dist["layout"]["shapes"]] == [m["mean_return"], m["median_return"], 0.01]
    # Exit reasons: exits by reason plus the drops as counted in metrics.json.
    cells = figs["fig-exit-reasons"]["data"][0]["cells"]["values"]
    table = dict(zip(cells[0], cells[1]))
    assert {k: table[f"dropped: {k}"] for k in m["dropped"]} == m["dropped"]
    trades = pd.read_parquet(run_dir / "trades.parquet")
    primary = trades[trades["horizon"] == "5m"]
    assert table["take_profit"] == int((primary["exit_reason"] == "take_profit").sum()) > 0
    assert table["horizon"] + table["take_profit"] + table["stop_loss"] == m["n_signals"]
    assert sum(table.values()) == len(primary)
    # Tables are as tall as their rows (a fixed 300 px left blank space under a few rows).
    assert figs["fig-exit-reasons"]["layout"]["height"] == 120 + 28 * len(cells[0]) < 300
    # Per day, by size, by hour: every signal counted once.
    day = figs["fig-per-day"]["data"][0]["cells"]["values"]
    assert day[0] == ["2024-03-01", "2024-03-02"] and sum(day[1]) == m["n_signals"]
    for key in ("fig-size", "fig-hour"):
        assert sum(figs[key]["data"][0]["customdata"]) == m["n_signals"]
    assert len(figs["fig-hour"]["data"][0]["x"]) == 24 and len(figs["fig-size"]["data"][0]["x"]) == 5
    # The average path ends at the longest horizon's mean, its band at that horizon's cluster CI.
    path = figs["fig-path"]["data"]
    band, mean = path[0], path[1]
    assert len(mean["x"]) == 61 and mean["x"][-1] == 15.0
    assert mean["y"][-1] == pytest.approx(m["by_horizon"]["15m"]["mean_return"], rel=1e-12)
    lo, hi = m["by_horizon"]["15m"]["mean_return_ci95"]
    assert band["y"][60] == pytest.approx(hi, rel=1e-9) and band["y"][61] == pytest.approx(lo, rel=1e-9)
    # The price is downsampled; every held signal has its entry marker.
    price = figs["fig-price"]["data"]
    assert 100 < len(price[0]["x"]) <= 5000
    assert len(price[1]["x"]) == m["n_signals"]
    assert sum(len(t["x"]) for t in price[2:]) == m["n_signals"]


def test_report_labels_do_not_overlap_and_share_axes_have_round_ticks(runs):
    _, run_dir, _ = runs
    figs = figures((run_dir / "report.html").read_text())
    m = json.loads((run_dir / "metrics.json").read_text())
    # mean and p50 are labelled on opposite sides of their lines (both on top, they overprinted)
    ann = {a["text"].split()[0]: a for a in figs["fig-distribution"]["layout"]["annotations"]}
    high, low = ("mean", "p50") if m["mean_return"] >= m["median_return"] else ("p50", "mean")
    assert (ann[high]["xanchor"], ann[low]["xanchor"]) == ("left", "right")
    # the share axis of the bucket figures: 0 %, 25 %, ... 100 %, not ticks synced to the return axis
    for key in ("fig-size", "fig-hour"):
        y2 = figs[key]["layout"]["yaxis2"]
        assert (y2["tickmode"], y2["tick0"], y2["dtick"]) == ("linear", 0, 0.25), key
        assert y2["range"][0] < 0 and y2["range"][1] > 1, key  # markers at 0 and 100 % drawn whole


def test_report_is_offline_and_rerenders_from_the_folder_alone(runs, tmp_path):
    tmp, run_dir, _ = runs
    page = (run_dir / "report.html").read_text()
    # plotly.js inlined once, no script or style fetched; outside the library no external address.
    lib = re.findall(r'<script type="text/javascript">(.*?)</script>', page, re.S)
    assert len(lib) == 1 and len(lib[0]) > 3_000_000 and page.count("Plotly.newPlot") == 1
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    ours = page.replace(lib[0], "")
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', ours) and "@import" not in ours
    from bt.evaluation import write_report

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    out = write_report(copy)  # no lake involved: the folder has what the page needs
    assert out.read_text() == page


def test_model_run_report_has_calibration_and_threshold_choice(runs):
    _, _, run_dir = runs
    m = json.loads((run_dir / "metrics.json").read_text())
    figs = figures((run_dir / "report.html").read_text())
    assert {"fig-calibration", "fig-threshold"} <= set(figs)
    b = m["model_metrics"]["boundaries_ms"]
    test = f"test {pd.Timestamp(b['test'], unit='ms'):%Y-%m-%d %H:%M}"
    for div_id in ("fig-path", "fig-horizon", "fig-distribution", "fig-calibration", "fig-price"):
        assert test in _title(figs[div_id]), div_id
    assert "validation " in _title(figs["fig-threshold"])
    cal = pd.read_parquet(run_dir / "calibration.parquet")
    assert len(cal) >= m["n_signals"] and (cal["ts_ms"] >= b["test"]).all()
    assert sum(
        figs["fig-calibration"]["data"][1]["customdata"][i][1]
        for i in range(len(figs["fig-calibration"]["data"][1]["x"]))
    ) == len(cal)
    thr = figs["fig-threshold"]
    assert [s["x0"] for s in thr["layout"]["shapes"]] == [m["threshold"]]
    curve = pd.read_parquet(run_dir / "threshold_curve.parquet")
    assert thr["data"][1]["y"] == curve["n_signals"].tolist()
    # The curve is what chose the threshold: max_mean_return among thresholds with enough signals.
    assert m["model_metrics"]["threshold_rule"] == "max_mean_return" and m["threshold"] > 0
    ok = curve[curve["n_independent"] >= MODEL["threshold"]["min_signals"]]
    assert m["threshold"] == pytest.approx(ok["threshold"].iloc[int(np.argmax(ok["mean_return"].to_numpy()))])
    assert m["model_metrics"]["val_n_signals"] == int(
        curve.loc[np.isclose(curve["threshold"], m["threshold"]), "n_signals"].iloc[0]
    )


def test_tearsheet_gets_daily_returns_the_buy_and_hold_benchmark_and_the_span(runs, tmp_path, monkeypatch):
    import quantstats as qs

    tmp, _, _ = runs
    seen = {}
    real = qs.reports.html

    def spy(returns, benchmark=None, **kw):
        seen.update(returns=returns, benchmark=benchmark, **kw)
        return real(returns, benchmark=benchmark, **kw)

    monkeypatch.setattr(qs.reports, "html", spy)
    run_dir = _run(_write_cfg(tmp, "tear"), tmp_path)
    assert (run_dir / "tearsheet.html").is_file()
    assert seen["periods_per_year"] == 365
    days = pd.DatetimeIndex(["2024-03-01", "2024-03-02"])
    assert seen["returns"].index.equals(days) and seen["benchmark"].index.equals(days)
    # Buy and hold of the symbol: first trade price to each UTC day's last trade price.
    t = _market()
    close = t.groupby(t["ts_ms"] // 86_400_000)["price"].last().to_numpy()
    want = close / np.r_[t["price"].iloc[0], close[:-1]] - 1
    np.testing.assert_allclose(seen["benchmark"].to_numpy(), want, rtol=1e-12)
    assert SPAN in seen["title"]
    page = (run_dir / "tearsheet.html").read_text()
    assert SPAN in page
    # Its figures' labels are SVG text (set by the browser), not a drawn path per glyph.
    assert page.count("<text ") > 50


def test_no_tearsheet_keeps_a_tearsheet_of_the_same_result_only(runs, tmp_path, monkeypatch):
    import quantstats as qs

    tmp, _, _ = runs
    monkeypatch.setattr(qs.reports, "html", lambda returns, output, **kw: open(output, "w").write("<p>qs</p>"))
    lake = tmp_path / "lake"
    shutil.copytree(tmp / "lake", lake)
    path = _write_cfg(tmp_path, "keep")
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["lake"] = str(lake)
    path.write_text(yaml.safe_dump(cfg))
    results = tmp_path / "results"
    run_dir = _run(path, results)
    first = (run_dir / "tearsheet.html").read_bytes()
    assert b"<p>qs</p>" in first
    _run(path, results, "--no-tearsheet")  # same config, same data: same metrics.json
    assert (run_dir / "tearsheet.html").read_bytes() == first
    page = tmp_path / "compare.html"
    assert bt.cli.main(["compare", str(run_dir), "--out", str(page)]) == 0
    assert 'href="results/keep-' in page.read_text() and "tearsheet.html" in page.read_text()
    extra = _market(n=2000, days=1, seed=5)
    extra["trade_id"] += 10_000_000
    extra["qty"] *= 50
    Lake(lake).write_trades(extra, mode="merge")  # new data, new numbers: the old tearsheet is stale
    _run(path, results, "--no-tearsheet")
    assert not (run_dir / "tearsheet.html").exists() and (run_dir / "report.html").is_file()
    assert bt.cli.main(["compare", str(run_dir), "--out", str(page)]) == 0
    html = page.read_text()
    assert "tearsheet.html" not in html
    rel = re.search(r'href="([^"]+report\.html)"', html).group(1)
    assert (page.parent / rel).resolve() == (run_dir / "report.html").resolve()


def test_report_is_logged_to_mlflow(runs, tmp_path):
    tmp, _, _ = runs
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = _write_cfg(tmp, "logged")
    assert (
        bt.cli.main(["run", str(path), "--results", str(tmp_path / "r"), "--tracking-uri", uri, "--no-tearsheet"]) == 0
    )
    import mlflow

    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(experiment_names=["whalebt"], output_format="list")
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"report.html", "paths.parquet", "price.parquet"} <= names


def test_a_run_without_signals_still_gets_its_report_and_tearsheet(runs, tmp_path):
    tmp, _, _ = runs
    path = _write_cfg(tmp, "nothing", signal={"whale": {"min_notional_usd": 1e12}})
    run_dir = _run(path, tmp_path, "--no-tearsheet")
    figs = figures((run_dir / "report.html").read_text())
    assert json.loads((run_dir / "metrics.json").read_text())["n_signals"] == 0
    assert figs["fig-distribution"]["data"][0]["x"] == [] and "fig-price" in figs
    # A flat strategy against a moving price: quantstats cannot regress on it, so no benchmark.
    from types import SimpleNamespace

    from bt.report import write_tearsheet

    idx = pd.date_range("2024-03-01", periods=3 * 1440, freq="min", tz="UTC")
    flat = SimpleNamespace(equity=pd.Series(10_000.0, index=idx))
    m = json.loads((run_dir / "metrics.json").read_text())
    write_tearsheet(flat, m, tmp_path / "t.html", benchmark=pd.Series(np.linspace(100, 110, idx.size), index=idx))
    assert "the benchmark is left out" in (tmp_path / "t.html").read_text()


def test_one_horizon_says_how_to_get_a_curve():
    from bt.evaluation import fig_horizon

    one = {"1h": {"mean_return": 0.001, "median_return": 0.0, "n_signals": 9}}
    assert "one horizon" in _title(fig_horizon({"by_horizon": one}, SPAN))
    two = {**one, "5m": {"mean_return": 0.0, "median_return": 0.0, "n_signals": 9}}
    assert "one horizon" not in _title(fig_horizon({"by_horizon": two}, SPAN))


@pytest.mark.parametrize("days", [10, 200])
def test_tearsheet_rolling_panels_need_half_a_year(tmp_path, days):
    """Over fewer than 183 days the rolling 6-month panels are a note, not four empty axes."""
    from types import SimpleNamespace

    from bt.report import write_tearsheet

    idx = pd.date_range("2024-01-01", periods=days * 24 + 1, freq="h", tz="UTC")
    rng = np.random.default_rng(3)
    equity = pd.Series(1e4 * np.cumprod(1 + rng.normal(0, 0.002, len(idx))), index=idx, name="equity")
    price = pd.Series(100 * np.cumprod(1 + rng.normal(0, 0.003, len(idx))), index=idx, name="price")
    metrics = {"name": "t", "horizon": "1h", "data": {"exchange": "binance_usdm", "symbol": "TUSDT"}}
    page_path = tmp_path / "tearsheet.html"
    write_tearsheet(SimpleNamespace(equity=equity), metrics, page_path, benchmark=price)
    page = page_path.read_text()
    panels = {k: re.search(rf'<div id="{k}">(.*?)</div>', page, re.S).group(1) for k in ("rolling_vol", "rolling_beta")}
    if days < 183:
        assert f"needs 183 days of daily returns; this run has {days}." in panels["rolling_vol"]
        assert "Rolling 6-month beta" in panels["rolling_beta"] and "<path" not in panels["rolling_vol"]
    else:
        assert "needs 183 days" not in page and "<path" in panels["rolling_vol"]
    import quantstats as qs

    assert qs.plots.rolling_sharpe.__module__.startswith("quantstats")  # put back afterwards
