"""`bt sweep` over a universe: one study on every member's events, the same purged splits for all.

Two small synthetic symbols (tests/bt/universe_market.py) over 4 days; a few trials.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from bt.config import parse_config
from tests.bt.universe_market import SYMBOLS, raw_config, write_lake

DAYS = 4


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweepu") / "lake"
    write_lake(d, days=DAYS)
    return d


def _raw(lake) -> dict:
    raw = raw_config(lake, days=DAYS, symbols=list(SYMBOLS))
    raw["name"] = "uni-sweep"
    raw["model"] = {
        "threshold": {"policy": "top_fraction", "fraction": 0.5, "min_signals": 3},
        "lgbm": {"num_boost_round": 20, "min_data_in_leaf": 5},
        "gate": {"min_test_signals": 1, "max_pbo": 1.0},
        "sweep": {
            "whale": {"min_notional_usd": [250000, 400000]},
            "lgbm": {"num_leaves": {"low": 4, "high": 15}},
            "min_train_events": 10,
            "seed": 1,
        },
    }
    return raw


def _spans(cfg):
    from datasets.build import load_trades
    from datasets.lake import Lake

    d = cfg.data
    return [load_trades(Lake(d.lake), ex, sym, d.start, d.end) for ex, sym in d.members]


def test_trials_see_every_symbol_cut_at_the_same_instants_on_either_engine(lake):
    from bt.model import purged_splits
    from bt.sweep import FeatureCache, run_sweep

    cfg = parse_config(_raw(lake))
    spans = _spans(cfg)
    kw = {"progress": False, "summarize_after": False}
    seq, _, cache = run_sweep(cfg, spans, n_trials=5, **kw)
    # The pooled table is each member's own table (from its own trades), interleaved in time.
    whale, h = cfg.signal.whale.to_dict(), cfg.backtest.horizon_ms
    pooled, member = cache.full_table(whale, h), cache.member_of(whale, h)
    assert set(member) == {0, 1} and np.all(np.diff(pooled.ts_ms) >= 0)
    lo, hi = min(int(s.ts_ms[0]) for s in spans), max(int(s.ts_ms[-1]) for s in spans) + 1
    assert cache.span_ms == (lo, hi)
    for i, s in enumerate(spans):
        alone = FeatureCache(
            s.ts_ms, s.price, s.qty, s.side, backtest=cfg.backtest, span_ms=(lo, hi), test_start_ms=cache.test_start_ms
        ).full_table(whale, h)
        mine = pooled.take(np.flatnonzero(member == i))
        np.testing.assert_array_equal(mine.ts_ms, alone.ts_ms)
        np.testing.assert_array_equal(mine.X, alone.X)
        np.testing.assert_array_equal(mine.net_return, alone.net_return)
    # One set of boundaries: both symbols have train, validation and test rows, and no trial sees test.
    sp = purged_splits(pooled.ts_ms, pooled.end_ts_ms, cfg.model.split, span_ms=cache.span_ms, horizon_ms=h)
    for part in (sp.train, sp.validation, sp.test):
        assert set(member[part]) == {0, 1}
    assert pooled.ts_ms[sp.validation].max() < sp.boundaries_ms["test"] <= pooled.ts_ms[sp.test].min()
    pre = cache.pre_test_table(whale, h)
    assert len(pre) and pre.end_ts_ms.max() < cache.test_start_ms
    assert {t.user_attrs["n_events"] for t in seq.trials} >= {len(pre)}
    assert cache.misses == 2  # the kernel ran once per whale rule over both symbols
    # Trials as tasks (the --engine spark path, here on forked local workers): the same study.
    par, _, _ = run_sweep(cfg, spans, n_trials=5, n_jobs=2, engine="local", **kw)

    def trials(st):
        return [(t.number, t.state.name, t.params, t.value, t.user_attrs) for t in st.trials]

    assert trials(par) == trials(seq) and {t.state.name for t in seq.trials} >= {"COMPLETE"}


def test_bt_sweep_of_a_universe_registers_one_model_and_best_yaml_replays_its_test(lake, tmp_path, capsys):
    import mlflow

    import bt.cli
    from bt.registry import model_lineage

    raw = _raw(lake)
    path = tmp_path / "u.yaml"
    path.write_text(yaml.safe_dump(raw))
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    argv = [
        "sweep",
        str(path),
        "--trials",
        "4",
        "--storage",
        "",
        "--results",
        str(tmp_path / "res"),
        "--tracking-uri",
        tracking,
        "--register",
        "always",
        "--json",
    ]
    assert bt.cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_uri"] == "models:/whale-uni-sweep/1"  # a universe's model: whale-<config name>
    (d,) = list((tmp_path / "res").iterdir())
    doc = json.loads((d / "sweep.json").read_text())
    m = json.loads((d / "metrics.json").read_text())
    assert doc["symbols"] == m["symbols"] == list(SYMBOLS)
    assert json.loads((d / "lineage.json").read_text())["symbols"] == list(SYMBOLS)
    assert model_lineage(out["model_uri"])["symbols"] == list(SYMBOLS)
    assert mlflow.MlflowClient(tracking_uri=tracking).get_registered_model("whale-uni-sweep").name
    # Pooled headline; by_symbol with the same keys; the members' test rows add up to the pool's.
    assert set(m["by_symbol"]) == set(doc["by_symbol"]) == set(SYMBOLS)
    per = [m["by_symbol"][s] for s in SYMBOLS]
    for b in per:
        assert set(b) == set(m) - {"by_symbol"}
        assert b["threshold"] == m["threshold"] and b["config_id"] == m["config_id"]
    t = doc["test"]
    assert t["test_n_events"] == sum(doc["by_symbol"][s]["test_n_events"] for s in SYMBOLS)
    assert m["n_signals"] == sum(b["n_signals"] for b in per) > 0
    assert t["val_n_events"] == sum(doc["by_symbol"][s]["val_n_events"] for s in SYMBOLS)
    trades = pd.read_parquet(d / "trades.parquet")
    assert set(trades["symbol"]) == set(SYMBOLS) and len(trades) == t["test_n_events"]
    sig = trades[trades["signal"]]
    assert m["mean_return"] == pytest.approx(float(sig["net_return"].mean()), rel=1e-12)
    for s, b in zip(SYMBOLS, per):
        mine = sig[sig["symbol"] == s]
        assert b["n_signals"] == len(mine) and b["mean_return"] == pytest.approx(float(mine["net_return"].mean()))
    # best.yaml keeps the universe: `bt run best.yaml` trains the winner over both symbols again
    # and gets the sweep's test figures, pooled and per symbol.
    best = yaml.safe_load((d / "best.yaml").read_text())
    assert best["data"]["symbols"] == list(SYMBOLS) and "sweep" not in best["model"]
    assert (
        bt.cli.main(
            [
                "run",
                str(d / "best.yaml"),
                "--results",
                str(tmp_path / "r"),
                "--no-mlflow",
                "--no-tearsheet",
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    run = json.loads((tmp_path / "r" / parse_config(best).run_id / "metrics.json").read_text())
    for k in (
        "test_n_events",
        "test_n_signals",
        "test_n_independent",
        "test_mean_return",
        "baseline_mean_return",
        "val_mean_return",
        "threshold",
        "boundaries_ms",
    ):
        assert run["model_metrics"][k] == t[k], k
    assert run["n_signals"] == m["n_signals"] and run["mean_return"] == pytest.approx(m["mean_return"], rel=1e-12)
    for s in SYMBOLS:
        assert run["by_symbol"][s]["n_signals"] == m["by_symbol"][s]["n_signals"]
        assert run["by_symbol"][s]["mean_return"] == pytest.approx(m["by_symbol"][s]["mean_return"], rel=1e-12)
