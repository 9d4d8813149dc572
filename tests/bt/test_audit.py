"""`bt audit`: each check passes on a sound config and fails on one built to trip it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import bt.cli
from bt.audit import FAIL, PASS, WARN, check_annualisation, check_causality, check_clusters, kernel_detector
from datasets.lake import Lake

DAY_MS = 86_400_000
T0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)


def _market(n=60_000, span_ms=2 * DAY_MS, seed=0):
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, span_ms, n)) + T0
    return pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": "TESTUSDT",
            "trade_id": np.arange(n) + 1000,
            "ts_ms": ts,
            "price": 100 * np.exp(np.cumsum(rng.normal(0, 3e-4, n))),
            "qty": rng.lognormal(0, 1.4, n),
            "side": np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8),
        }
    )


def _audit(tmp_path, capsys, *, market=None, **sections):
    lake = tmp_path / "lake"
    if not lake.exists():
        Lake(lake).write_trades(market if market is not None else _market())
    cfg = {
        "name": "audit",
        "data": {
            "lake": str(lake),
            "exchange": "binance_usdm",
            "symbol": "TESTUSDT",
            "start": "2024-03-01",
            "end": "2024-03-02",
        },
        "signal": {"whale": {"min_notional_usd": 2500}},
        "backtest": {"horizon": "1m", "bootstrap": 200},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = bt.cli.main(["audit", str(path), "--json", "--samples", "4"])
    out = json.loads(capsys.readouterr().out)
    return rc, {c["name"]: c for c in out["checks"]}


def test_the_kernel_is_causal_and_a_look_ahead_rule_is_caught():
    m = _market(n=40_000)
    args = (m["ts_ms"].to_numpy(), m["price"].to_numpy(), m["qty"].to_numpy(), m["side"].to_numpy(np.int8))
    flow = {"window_s": 10, "q": 0.99, "lookback_s": 120, "min_samples": 60}
    ok = check_causality(*args, kernel_detector(flow), samples=6)
    assert ok.verdict == PASS, ok

    def peeks(ts, px, q, sd):  # "a whale is a trade followed by a big one": looks one trade ahead
        idx = np.flatnonzero(q[1:] > 20.0).astype(np.int64)
        return idx, np.zeros(idx.size, np.int8), px[idx, None].copy()

    bad = check_causality(*args, peeks, samples=6)
    assert bad.verdict == FAIL and "looks ahead" in bad.figure


def test_cluster_and_span_verdicts():
    assert check_clusters({"n_signals": 158, "n_independent": 1, "horizon": "30s"}).verdict == FAIL
    assert check_clusters({"n_signals": 100, "n_independent": 30, "horizon": "30s"}).verdict == WARN
    assert check_clusters({"n_signals": 40, "n_independent": 38, "horizon": "30s"}).verdict == PASS
    assert check_annualisation({"portfolio": {"n_days": 0.0035}}).verdict == FAIL
    assert check_annualisation({"portfolio": {"n_days": 10}}).verdict == WARN
    assert check_annualisation({"portfolio": {"n_days": 120}}).verdict == PASS


def test_audit_passes_a_sound_config(tmp_path, capsys):
    rc, checks = _audit(tmp_path, capsys)
    assert checks["causality"]["verdict"] == PASS and checks["clusters"]["verdict"] == PASS
    assert all(c["verdict"] != FAIL for c in checks.values()), checks
    assert rc == 0


def test_audit_fails_chained_signals(tmp_path, capsys):
    # A 12 h horizon on two days: every window overlaps the next, a handful of clusters
    rc, checks = _audit(tmp_path, capsys, backtest={"horizon": "12h"})
    assert rc == 1 and checks["clusters"]["verdict"] == FAIL, checks["clusters"]


def test_audit_fails_required_funding_that_is_missing(tmp_path, capsys):
    rc, checks = _audit(tmp_path, capsys, backtest={"funding": "required"})
    assert rc == 1 and checks["funding"]["verdict"] == FAIL and "'required'" in checks["funding"]["figure"]
    assert checks["clusters"]["verdict"] == PASS  # the other checks still ran


def test_audit_fails_a_span_of_minutes(tmp_path, capsys):
    rc, checks = _audit(tmp_path, capsys, market=_market(n=20_000, span_ms=10 * 60_000))
    assert rc == 1 and checks["annualisation"]["verdict"] == FAIL, checks["annualisation"]


def test_audit_fails_a_span_inside_the_models_training_data(tmp_path, capsys, monkeypatch):
    from test_run import _ms, _register_with_lineage

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    lineage = {
        "lineage_version": 1,
        "exchange": "binance_usdm",
        "symbols": ["TESTUSDT"],
        "ranges_ms": {
            "train": [_ms("2024-03-01 00:00"), _ms("2024-03-01 12:00")],
            "validation": [_ms("2024-03-01 12:30"), _ms("2024-03-01 18:00")],
            "test": [_ms("2024-03-01 18:30"), _ms("2024-03-01 23:59")],
        },
        "partitions": [],
    }
    uri = _register_with_lineage(tracking, "whale-testusdt", lineage)
    rc, checks = _audit(tmp_path, capsys, model={"uri": uri})
    assert rc == 1 and checks["in-sample"]["verdict"] == FAIL
    assert "overlaps the training range" in checks["in-sample"]["figure"]
    assert checks["causality"]["verdict"] == PASS  # the rest was still measured


def test_audit_fails_a_span_with_a_missing_day(tmp_path, capsys):
    # The lake holds 2024-03-01 only; the config asks for 2024-03-01..2024-03-02.
    rc, checks = _audit(tmp_path, capsys, market=_market(n=30_000, span_ms=DAY_MS))
    assert rc == 1 and checks["coverage"]["verdict"] == FAIL, checks["coverage"]
    assert "2024-03-02" in checks["coverage"]["figure"]
    assert checks["id spaces"]["verdict"] != FAIL


def test_audit_warns_on_a_recording_that_covers_part_of_a_day(tmp_path, capsys):
    m = _market()
    lake = Lake(tmp_path / "lake")
    day0, day1 = m[m.ts_ms < T0 + DAY_MS], m[m.ts_ms >= T0 + DAY_MS]
    lake.write_trades(day0, coverage=[[T0, T0 + DAY_MS]], coverage_source="archive", id_space="binance_agg_trade")
    rec = day1[day1.ts_ms < T0 + DAY_MS + 6 * 3_600_000]  # a 6 h recording of the second day
    lake.write_trades(
        rec,
        coverage=[[int(rec.ts_ms.min()), int(rec.ts_ms.max()) + 1]],
        coverage_source="recording",
        id_space="binance_agg_trade",
    )
    rc, checks = _audit(tmp_path, capsys)
    assert checks["coverage"]["verdict"] == WARN and "inside stored days" in checks["coverage"]["figure"]
    assert checks["id spaces"]["verdict"] == PASS, checks["id spaces"]


def test_audit_fails_a_day_stored_from_two_sources(tmp_path, capsys):
    """A lake written before id spaces were recorded: the same trades under aggregate and fill ids."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from datasets.lake import Partition

    m = _market()
    lake = Lake(tmp_path / "lake")
    lake.write_trades(m[m.ts_ms >= T0 + DAY_MS])
    day0 = m[m.ts_ms < T0 + DAY_MS]
    fills = day0.assign(trade_id=day0["trade_id"] * 3 + 7_000_000_000)  # the recording's fill ids
    both = pd.concat([day0, fills]).sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(both, preserve_index=False), buf)
    lake.store.put(
        Partition("bronze", "binance_usdm", "TESTUSDT", pd.Timestamp("2024-03-01").date()).key, buf.getvalue()
    )
    rc, checks = _audit(tmp_path, capsys)
    assert rc == 1 and checks["id spaces"]["verdict"] == FAIL, checks["id spaces"]
    assert "2024-03-01" in checks["id spaces"]["figure"] and "stored twice" in checks["id spaces"]["figure"]


def test_audit_warns_on_partitions_of_unknown_id_space(tmp_path, capsys):
    # write_trades without an id space: the lake cannot say what the ids are
    rc, checks = _audit(tmp_path, capsys)
    assert checks["coverage"]["verdict"] == PASS, checks["coverage"]
    assert checks["id spaces"]["verdict"] == WARN and "unknown" in checks["id spaces"]["figure"]
