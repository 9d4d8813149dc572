"""The synthetic market generator: calibration, determinism, round-trip of the calibrated
figures, the planted effect (measured directly from the written trades) and the CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.cli import main as datasets_main
from datasets.synth import (
    CSV_HEADER,
    ForwardReturns,
    SynthParams,
    calibrate,
    generate_days,
    load_calibration,
    market_stats,
    write_synth_archive,
)

REPO = Path(__file__).resolve().parents[2]
REAL_FILES = ("binance_usdm_btcusdt_2024-08-08_stream.txt.gz", "binance_usdm_ethusdt_2024-08-08_stream.txt.gz")


def real_file(name: str) -> Path:
    """A recording from $WHALEBT_REAL_DATA or tests/data/real (last: a shared/ folder beside the checkout)."""
    dirs = [
        os.environ.get("WHALEBT_REAL_DATA"),
        REPO / "tests" / "data" / "real",
        REPO.parent / "shared" / "data" / "real",
    ]
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return Path(d) / name
    raise FileNotFoundError(f"real recording {name} not found in {[str(d) for d in dirs if d]}")


def read_archive(out: Path, symbol: str) -> pd.DataFrame:
    """All aggTrades written under an archive root, parsed with plain pandas (independent of ingest)."""
    frames = []
    for z in sorted((out / "data/futures/um/daily/aggTrades" / symbol).glob("*.zip")):
        with zipfile.ZipFile(z) as zf:
            frames.append(pd.read_csv(io.BytesIO(zf.read(zf.namelist()[0]))))
    return pd.concat(frames, ignore_index=True)


def forward_returns_bps(df: pd.DataFrame, trigger: np.ndarray, horizon_s: float) -> np.ndarray:
    """Oracle: entry = next trade, exit = last trade at or before entry time + horizon (pandas/NumPy)."""
    ts = df["transact_time"].to_numpy()
    px = df["price"].to_numpy()
    idx = np.flatnonzero(trigger)
    idx = idx[idx + 1 < len(df)]
    entry_ts, entry_px = ts[idx + 1], px[idx + 1]
    exit_i = np.searchsorted(ts, entry_ts + int(horizon_s * 1000), side="right") - 1
    complete = entry_ts + horizon_s * 1000 <= ts[-1]
    return (px[exit_i] / entry_px - 1)[complete] * 1e4


# ------------------------------------------------------------------ calibration
def test_calibration_file_is_what_calibrate_derives_from_the_real_recordings():
    fresh = calibrate([real_file(n) for n in REAL_FILES])
    stored = load_calibration()
    assert stored["sources"] == fresh["sources"]
    assert set(stored["profiles"]) == {"BTCUSDT", "ETHUSDT"}

    def close(a, b, path=""):
        if isinstance(a, dict):
            assert set(a) == set(b), path
            for k in a:
                close(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, list):
            assert len(a) == len(b), path
            for i, (x, y) in enumerate(zip(a, b)):
                close(x, y, f"{path}[{i}]")
        elif isinstance(a, float):
            assert np.isclose(a, b, rtol=1e-6, atol=0), (path, a, b)
        else:
            assert a == b, (path, a, b)

    close(stored, fresh)


def test_calibration_figures_of_the_btc_recording():
    prof = load_calibration()["profiles"]["BTCUSDT"]
    s = prof["stats"]
    # Golden figures of the 343 s recorded on 2024-08-08 (see docs/datasets.md).
    assert s["n_trades"] == 10447
    assert np.isclose(s["rate_per_s"], 30.43, atol=0.01)
    assert np.isclose(s["side_persistence"], 0.7917, atol=1e-4)
    assert np.isclose(s["zero_gap_share"], 0.4966, atol=1e-4)
    assert np.isclose(s["vol_1s_bps"], 1.209, atol=1e-3)
    assert np.isclose(s["notional_q"]["0.5"], 1849.497)
    assert prof["tick"] == 0.1 and prof["qty_step"] == 0.001
    h = prof["hawkes"]
    assert 0 < h["fast_branching"] + h["slow_branching"] < 0.98
    assert h["fast_decay_per_s"] > h["slow_decay_per_s"] > 0
    assert 1 < prof["sizes"]["tail_alpha"] < 3


# ------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    p = SynthParams(days=2, trades_per_s=0.2, seed=7)
    a = write_synth_archive(tmp_path / "a", p)
    b = write_synth_archive(tmp_path / "b", p)
    c = write_synth_archive(tmp_path / "c", SynthParams(days=2, trades_per_s=0.2, seed=8))
    for fa, fb in zip(a.files, b.files):
        assert (tmp_path / "a" / fa["relpath"]).read_bytes() == (tmp_path / "b" / fb["relpath"]).read_bytes()
    assert [f["sha256"] for f in a.files] == [f["sha256"] for f in b.files]
    assert [f["sha256"] for f in a.files] != [f["sha256"] for f in c.files]
    assert a.manifest == b.manifest


def test_a_day_does_not_depend_on_how_many_days_follow():
    short = dict(generate_days(SynthParams(days=1, trades_per_s=0.5, whale_rate_per_day=0)))
    long = dict(generate_days(SynthParams(days=3, trades_per_s=0.5, whale_rate_per_day=0)))
    day = dt.date(2024, 3, 1)
    for k in short[day]:
        np.testing.assert_array_equal(short[day][k], long[day][k])


def test_archive_files_look_like_binance(tmp_path):
    res = write_synth_archive(tmp_path, SynthParams(symbol="PLANTUSDT", days=1, trades_per_s=0.2))
    rel = "data/futures/um/daily/aggTrades/PLANTUSDT/PLANTUSDT-aggTrades-2024-03-01.zip"
    data = (tmp_path / rel).read_bytes()
    assert (tmp_path / (rel + ".CHECKSUM")).read_text() == (
        f"{hashlib.sha256(data).hexdigest()}  PLANTUSDT-aggTrades-2024-03-01.zip\n"
    )
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["PLANTUSDT-aggTrades-2024-03-01.csv"]
        text = zf.read(zf.namelist()[0]).decode()
    lines = text.splitlines()
    assert lines[0] == CSV_HEADER
    assert len(lines) - 1 == res.files[0]["rows"] == res.n_trades
    aid, price, qty, first, last, t, maker = lines[1].split(",")
    assert maker in ("true", "false") and int(last) >= int(first)
    assert dt.datetime.fromtimestamp(int(t) / 1000, dt.timezone.utc).date() == dt.date(2024, 3, 1)
    manifest = json.loads((tmp_path / "synth.json").read_text())
    assert manifest["synthetic"] is True
    assert manifest["markets"]["PLANTUSDT"]["seed"] == 0


def test_price_is_a_positive_walk_on_the_tick_grid():
    ((_, tr),) = list(generate_days(SynthParams(days=1, trades_per_s=3.0, seed=3)))
    px = tr["price"]
    assert (px > 0).all()
    assert np.allclose(px * 10, np.round(px * 10), atol=1e-6)  # BTC tick 0.1
    assert np.allclose(tr["qty"] * 1000, np.round(tr["qty"] * 1000), atol=1e-6)
    assert (np.diff(tr["ts_ms"]) >= 0).all() and (np.diff(tr["agg_trade_id"]) == 1).all()
    # Within a day the price stays within a sane band of its start (daily vol ~ 3.5 %).
    assert 0.7 < px[-1] / px[0] < 1.3


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("profile", ["BTCUSDT", "ETHUSDT"])
def test_generated_market_reproduces_the_calibrated_figures(profile):
    prof = load_calibration()["profiles"][profile]
    target = prof["stats"]
    rate = prof["rate_per_s"]
    ((_, tr),) = list(generate_days(SynthParams(days=1, trades_per_s=rate, profile=profile, seed=11)))
    got = market_stats(tr["ts_ms"], tr["price"], tr["qty"], tr["side"])
    # Tolerances stated in docs/datasets.md.
    assert abs(got["rate_per_s"] / rate - 1) < 0.03
    assert abs(got["side_persistence"] - target["side_persistence"]) < 0.02
    assert abs(got["zero_gap_share"] - target["zero_gap_share"]) < 0.04
    assert abs(got["buy_share"] - 0.5) < 0.02
    for q, want in target["notional_q"].items():
        assert abs(got["notional_q"][q] / want - 1) < 0.15, (q, got["notional_q"][q], want)
    assert abs(got["vol_1s_bps"] / target["vol_1s_bps"] - 1) < 0.15
    assert got["fano_1s"] > 10  # bursty, unlike a Poisson process (Fano 1)


def test_volatility_per_second_does_not_depend_on_the_trade_rate():
    target = load_calibration()["profiles"]["BTCUSDT"]["stats"]["vol_1s_bps"]
    for rate in (0.5, 3.0):
        ((_, tr),) = list(generate_days(SynthParams(days=1, trades_per_s=rate, seed=5)))
        got = market_stats(tr["ts_ms"], tr["price"], tr["qty"], tr["side"])
        assert abs(got["rate_per_s"] / rate - 1) < 0.05
        assert abs(got["vol_1s_bps"] / target - 1) < 0.2, (rate, got["vol_1s_bps"])


# ------------------------------------------------------------------ planted effect
@pytest.mark.parametrize("null", [False, True])
def test_planted_effect_is_visible_in_the_written_trades(tmp_path, null):
    b_bps, h_s, x_usd = 40.0, 600.0, 500_000.0
    p = SynthParams(
        days=10,
        trades_per_s=0.5,
        seed=1,
        plant_effect_bps=b_bps,
        plant_horizon_s=h_s,
        whale_notional_usd=x_usd,
        whale_rate_per_day=20,
        null=null,
    )
    res = write_synth_archive(tmp_path, p)
    df = read_archive(tmp_path, "PLANTUSDT")
    notional = df["price"] * df["quantity"]
    whales = (notional >= x_usd).to_numpy()
    assert whales.sum() == res.n_whales > 150
    assert not df["is_buyer_maker"][whales].any()  # whales are taker buys
    r = forward_returns_bps(df, whales, h_s)
    mean, se = r.mean(), r.std(ddof=1) / np.sqrt(len(r))
    expected = 0.0 if null else b_bps
    assert se < 3.0
    assert abs(mean - expected) < 8.0, (mean, se)
    # The manifest states the planted effect and the same measurement.
    m = json.loads((tmp_path / "synth.json").read_text())["markets"]["PLANTUSDT"]
    assert m["plant"]["expected_mean_forward_return_bps"] == expected
    assert m["plant"]["null"] is null
    assert np.isclose(m["plant"]["measured_forward_return"]["mean_bps"], mean, atol=1e-6)
    assert m["plant"]["measured_forward_return"]["n"] == len(r)
    assert len(m["whales"]) == res.n_whales


def test_null_market_has_the_same_whales_at_the_same_times():
    kw = dict(days=2, trades_per_s=0.3, seed=4, plant_horizon_s=600, whale_rate_per_day=10)
    plant = list(generate_days(SynthParams(**kw)))
    null = list(generate_days(SynthParams(**kw, null=True)))
    for (_, a), (_, b) in zip(plant, null):
        np.testing.assert_array_equal(a["ts_ms"][a["whale"]], b["ts_ms"][b["whale"]])
        np.testing.assert_array_equal(a["side"], b["side"])


def test_forward_returns_across_day_boundaries_match_the_oracle():
    ts = [np.array([0, 10, 20, 30]), np.array([40, 50, 1000]), np.array([2000, 2500])]
    px = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0]), np.array([8.0, 9.0])]
    trig = [np.array([False, True, False, True]), np.array([False, False, True]), np.array([False, False])]
    fr = ForwardReturns(horizon_s=0.5)  # 500 ms
    for a, b, c in zip(ts, px, trig):
        fr.add(a, b, c)
    df = pd.DataFrame({"transact_time": np.concatenate(ts), "price": np.concatenate(px)})
    oracle = forward_returns_bps(df, np.concatenate(trig), 0.5)
    np.testing.assert_allclose(np.asarray(fr.returns) * 1e4, oracle)
    assert fr.summary()["n"] == 3  # triggers at 10, 30 and 1000; the one at 2500+ has no entry


# ------------------------------------------------------------------ speed
def test_ten_days_at_three_trades_per_second_is_fast(tmp_path):
    t0 = time.perf_counter()
    res = write_synth_archive(tmp_path, SynthParams(days=10, trades_per_s=3.0))
    elapsed = time.perf_counter() - t0
    assert 2_400_000 < res.n_trades < 2_800_000
    assert elapsed < 30, f"10 days x 3 trades/s took {elapsed:.1f} s"


# ------------------------------------------------------------------ CLI
def test_synth_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        datasets_main(["synth", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "--plant-effect-bps" in out and "--null" in out


def test_synth_cli_writes_and_says_synthetic(tmp_path, capsys):
    rc = datasets_main(
        [
            "synth",
            "--out",
            str(tmp_path),
            "--symbol",
            "plant-usdt",
            "--start",
            "2024-03-01",
            "--days",
            "1",
            "--trades-per-s",
            "0.2",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    cap = capsys.readouterr()
    assert "SYNTHETIC MARKET" in cap.err and "SYNTHETIC" in cap.out
    assert (tmp_path / "data/futures/um/daily/aggTrades/PLANTUSDT/PLANTUSDT-aggTrades-2024-03-01.zip").is_file()
    assert json.loads((tmp_path / "synth.json").read_text())["markets"]["PLANTUSDT"]["seed"] == 3


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--plant-horizon-s", "0"], "Error: --plant-horizon-s must be between 1 and 86400; got 0.0"),
        (["--days", "0"], "Error: --days must be between 1 and 3660; got 0"),
        (["--trades-per-s", "-1"], "Error: --trades-per-s must be in (0, 500]; got -1.0"),
        (
            ["--whale-rate-per-day", "30"],
            "Error: --whale-rate-per-day 30 is too high for --plant-horizon-s 3600: planted effects must not overlap "
            "(gaps of at least 1.25 x horizon), so use fewer than 19.2 whales per day or a shorter horizon",
        ),
        (["--profile", "DOGEUSDT"], "Error: unknown profile 'DOGEUSDT'; calibrated profiles: ['BTCUSDT', 'ETHUSDT']"),
    ],
)
def test_synth_cli_errors(tmp_path, capsys, argv, line):
    rc = datasets_main(["synth", "--out", str(tmp_path / "o"), *argv])
    assert rc == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == line
    assert not (tmp_path / "o").exists()
