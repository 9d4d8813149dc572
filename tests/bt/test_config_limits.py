"""Config limits (issue 14): every value is bounded; beyond the bound one `Error:` line names the key,
the limit and the fix. Journals never hold NaN/Infinity."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

import bt.cli
from bt.config import LIMITS, ConfigError, parse_config

BASE = {
    "name": "lim",
    "data": {"exchange": "binance_usdm", "symbol": "BTCUSDT", "start": "2024-03-01", "end": "2024-03-03"},
    "signal": {"whale": {"min_notional_usd": 1e6}},
}


def _with(path: str, value):
    raw = json.loads(json.dumps(BASE))
    node = raw
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return raw


def _refused(path: str, value, *needles: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(_with(path, value))
    msg = str(exc.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


TOMORROW = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)


@pytest.mark.parametrize(
    "path, value, needles",
    [
        ("portfolio.bar", "1ms", ["portfolio.bar", "at least 1s", "'1ms'", "use 1s or more"]),
        ("portfolio.bar", "40d", ["portfolio.bar", "at most 30d"]),
        ("backtest.bootstrap", 10**9, ["backtest.bootstrap", "less than or equal to 100000", "1000000000"]),
        ("backtest.entry_latency_ms", 10**12, ["backtest.entry_latency_ms", "less than or equal to 3600000"]),
        ("backtest.horizon", "400d", ["backtest.horizon", "at most 30d", "use 30d or less"]),
        ("backtest.horizons", ["5m", "365d"], ["backtest.horizons", "at most 30d"]),
        ("backtest.fee_bps", 1e6, ["backtest.fee_bps", "less than or equal to 10000"]),
        ("backtest.seed", 2**40, ["backtest.seed", "4294967295"]),
        ("portfolio.init_cash", float("inf"), ["portfolio.init_cash", "finite number"]),
        ("portfolio.max_positions", 10**6, ["portfolio.max_positions", "1000"]),
        (
            "data.end",
            "9999-12-31",
            ["data: end 9999-12-31 is in the future", f"use {TOMORROW} (tomorrow, UTC) or earlier"],
        ),
        ("data.start", "2009-01-03", ["start 2009-01-03 is before 2017-01-01", "use 2017-01-01 or later"]),
        ("name", "n" * 3000, ["name must be at most 100 characters", "got 3000"]),
        ("name", "../etc", ["name may hold letters, digits"]),
        ("model.period", "1ms", ["model.period", "at least 1s"]),
        ("model.split.purge", "90d", ["model.split.purge", "at most 30d"]),
        ("model.split.walk_forward", 10**6, ["model.split.walk_forward", "100"]),
        ("signal.whale.window_s", 10**7, ["signal.whale", "window_s must be at most 86,400 s"]),
        ("signal.whale.cooldown_s", 1e12, ["signal.whale", "cooldown_s must be at most"]),
    ],
)
def test_each_limit_is_refused_naming_key_and_limit(path, value, needles):
    _refused(path, value, *needles)


def test_values_at_the_limits_are_accepted():
    ok = _with("portfolio.bar", "1s")
    ok["backtest"] = {
        "bootstrap": LIMITS["max_bootstrap"],
        "entry_latency_ms": LIMITS["max_latency_ms"],
        "horizon": "30d",
        "horizons": ["1s"],
    }
    ok["data"]["end"] = str(TOMORROW)
    ok["data"]["start"] = "2017-01-01"
    ok["name"] = "n" * 100
    ok["portfolio"]["bar"] = "1d"
    cfg = parse_config(ok)
    assert cfg.backtest.bootstrap == 100_000 and cfg.backtest.horizon == "30d"


def test_the_bar_count_over_the_span_is_bounded():
    raw = _with("portfolio.bar", "1s")
    raw["data"].update(start="2024-01-01", end="2024-03-31")  # 91 days of 1 s bars = 7.9 M
    with pytest.raises(
        ConfigError,
        match=r"portfolio\.bar 1s over 91 days is 7,862,400 equity bars, more than "
        r"5,000,000; use bar: 2s or coarser, or a shorter span",
    ):
        parse_config(raw)
    raw["portfolio"]["bar"] = "2s"
    assert parse_config(raw).portfolio.bar == "2s"


def test_limits_keep_existing_ids():
    """Bounds refuse new values only: a config inside them keeps its run_id (gold caches stay valid)."""
    cfg = parse_config(_with("backtest.horizon", "60m"))
    assert cfg.backtest.horizon == "1h"
    assert cfg.run_id == parse_config(_with("backtest.horizon", "1h")).run_id


def _error(capsys, argv) -> str:
    rc = bt.cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("Error: "), (rc, err)
    return err[0]


def test_cli_paths_naming_the_wrong_kind_of_thing(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_with("data.lake", str(tmp_path / "lake"))))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    assert _error(capsys, ["signals", str(cfg), "--out", str(a_dir)]) == (
        f"Error: --out {a_dir} is a directory; expected a file name, e.g. {a_dir / 'out'}"
    )
    assert _error(capsys, ["run", str(cfg), "--lake", str(a_file)]) == (
        f"Error: --lake {a_file} is a file; expected a directory (created if missing); give another path"
    )
    assert _error(capsys, ["run", str(cfg), "--results", str(a_file)]).startswith(
        f"Error: --results {a_file} is a file"
    )
    assert _error(capsys, ["compare", "x", "--out", str(a_dir)]).startswith(f"Error: --out {a_dir} is a directory")
    # data.lake in the file itself
    cfg.write_text(yaml.safe_dump(_with("data.lake", str(a_file))))
    assert f"data.lake: lake {str(a_file)!r} is a file" in _error(capsys, ["run", str(cfg)])
    import datasets.cli

    assert (
        datasets.cli.main(["synth", "--out", str(a_file), "--symbol", "XUSDT", "--start", "2024-03-01", "--days", "1"])
        == 1
    )
    assert capsys.readouterr().err.strip() == (
        f"Error: --out {a_file} is a file; expected a directory (created if missing); give another path"
    )
    assert datasets.cli.main(["status", "--lake", str(a_file)]) == 1
    assert capsys.readouterr().err.startswith(f"Error: --lake {a_file} is a file")


def test_a_journal_line_never_holds_nan_or_infinity():
    from signals.journal import NonFiniteError, journal_line, journal_record

    rec = journal_record(
        exchange="binance_usdm",
        symbol="BTCUSDT",
        trade_id=1,
        ts_ms=1,
        price=1e5,
        notional_usd=1e5 * 1e308,
        prob=None,
        decision="long",
        config_id="c",
        model=None,
    )
    assert math.isinf(rec["notional_usd"])
    with pytest.raises(NonFiniteError, match=r"trade 1 has non-finite \['notional_usd'\]"):
        journal_line(rec)
    ok = {**rec, "notional_usd": 1e5}
    assert "Infinity" not in journal_line(ok) and json.loads(journal_line(ok))["notional_usd"] == 1e5


def test_a_trade_whose_notional_overflows_is_refused_at_ingest():
    from datasets.validate import BadRowsError, screen_trades

    df = pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": "BTCUSDT",
            "trade_id": [1, 2],
            "ts_ms": [1_710_000_000_000, 1_710_000_000_001],
            "price": [60_000.0, 60_000.0],
            "qty": [1.0, 1e308],
            "side": np.array([1, 1], dtype=np.int8),
        }
    )
    with pytest.raises(BadRowsError, match=r"f\.csv line 2: qty 1e\+308 is so large that price × qty is not a finite"):
        screen_trades(df, what="f.csv")
    screened = screen_trades(df, what="f.csv", skip_bad_rows=True)
    assert len(screened.good) == 1 and list(screened.bad["reason"]) == ["notional_not_finite"]


def test_a_stored_overflowing_trade_is_an_error_line_not_a_journal_with_infinity(tmp_path, capsys):
    """A lake written before ingest refused such rows: bt signals / bt run say so in one line."""
    from datasets.lake import Lake

    n = 2000
    t0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
    qty = np.ones(n)
    qty[1000] = 1e308
    df = pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": "BTCUSDT",
            "trade_id": np.arange(n),
            "ts_ms": t0 + np.arange(n) * 1000,
            "price": 100.0,
            "qty": qty,
            "side": np.ones(n, dtype=np.int8),
        }
    )
    Lake(tmp_path / "lake").write_trades(df)  # the lake API itself does not screen rows
    cfg = tmp_path / "cfg.yaml"
    raw = _with("data.lake", str(tmp_path / "lake"))
    raw["data"].update(start="2024-03-01", end="2024-03-01")
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "s.jsonl"
    for argv in (
        ["signals", str(cfg), "--out", str(out)],
        ["run", str(cfg), "--no-mlflow", "--no-tearsheet", "--results", str(tmp_path / "r")],
    ):
        rc = bt.cli.main(argv)
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(("Error", "Traceback"))]
        assert rc == 1 and len(err) == 1, (argv, err)
        assert "has non-finite ['notional_usd']" in err[0] and "re-ingest that day" in err[0]
    assert not out.exists() and not list((tmp_path / "r").iterdir())  # nothing written, no temp left
