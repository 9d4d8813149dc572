"""Sweeps on synthetic markets: planted effect found, null market refused, resumable, distributed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bt.config import parse_config
from bt.config import GateConfig
from bt.registry import check_gate
from bt.sweep import parse_space, run_sweep
from planted_sweep import market, raw_config, write_lake

ROOT = Path(__file__).resolve().parents[2]


def trades(null=False):
    m = market(null)
    return SimpleNamespace(ts_ms=m["ts_ms"], price=m["price"], qty=m["qty"], side=m["side"])


_CACHES: dict = {}


def sweep(cfg, null=False, **kw):
    """run_sweep sharing kernel features between tests on the same market (as a study would)."""
    study, summary, cache = run_sweep(cfg, trades(null), cache=_CACHES.get(null), progress=False, **kw)
    _CACHES[null] = cache
    return study, summary, cache


def test_planted_market_sweep_beats_the_plain_whale_rule_and_passes_the_gate():
    cfg = parse_config(raw_config())
    study, s, cache = sweep(cfg, n_trials=10, n_boot=200)
    t = s.test
    assert s.n_trials == 10 and cache.misses <= 2  # kernel run once per whale rule, not per trial
    # Counted as independent signals (overlapping 30 min windows once), thresholds are chosen
    # with at least 10 independent validation signals and leave ~8 on the 1.6 test days.
    assert t["test_n_independent"] >= 7 and t["test_n_signals"] >= t["test_n_independent"]
    assert t["test_mean_return"] > t["baseline_mean_return"] + 0.001
    assert t["test_mean_return"] > 0
    assert s.dsr["n_trials"] == 10 and 0.0 <= s.dsr["dsr"] <= 1.0
    assert s.pbo is not None and 0.0 <= s.pbo["pbo"] <= 1.0
    gate = check_gate(t, GateConfig(min_mean_return=0.0, min_test_signals=7, min_dsr=0.5))
    assert gate.ok, gate.reasons


def test_null_market_is_refused_by_the_gate():
    cfg = parse_config(raw_config())
    _, s, _ = sweep(cfg, null=True, n_trials=10, n_boot=200)
    gate = check_gate(s.test, GateConfig())
    assert not gate.ok
    assert gate.reasons  # printed by `bt promote` as the refusal


def test_trials_never_see_test_events():
    cfg = parse_config(raw_config())
    _, _, cache = sweep(cfg, n_trials=2, summarize_after=False)
    for whale, h in list(cache._tables):
        import json

        pre = cache.pre_test_table(json.loads(whale), h)
        assert len(pre) and pre.end_ts_ms.max() < cache.test_start_ms


def test_resumes_a_stored_study(tmp_path):
    import optuna

    cfg = parse_config(raw_config())
    url = f"sqlite:///{tmp_path}/optuna.db"
    s1, _, _ = sweep(cfg, n_trials=3, storage=url, summarize_after=False)
    first = [(t.number, t.params) for t in s1.trials]
    s2, _, _ = sweep(cfg, n_trials=5, storage=url, summarize_after=False)
    assert len(s2.trials) == 5 and [(t.number, t.params) for t in s2.trials[:3]] == first
    again = optuna.load_study(study_name=s2.study_name, storage=url)
    assert len(again.trials) == 5


def test_same_seed_same_trials():
    cfg = parse_config(raw_config())
    a, _, _ = sweep(cfg, n_trials=3, summarize_after=False)
    b, _, _ = sweep(cfg, n_trials=3, summarize_after=False)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]


def test_search_space_errors():
    with pytest.raises(ValueError, match=r"unknown model.sweep key\(s\) \['wale'\]"):
        parse_space({"wale": {}})
    with pytest.raises(ValueError, match="need numbers with low < high"):
        parse_space({"lgbm": {"num_leaves": {"low": 9, "high": 3}}})
    sp = parse_space(
        {
            "lgbm": {"num_leaves": {"low": 4, "high": 31}, "learning_rate": {"low": 0.01, "high": 0.3}},
            "horizon": ["15m", "1h"],
        }
    )
    assert sp.lgbm["num_leaves"].is_int and not sp.lgbm["learning_rate"].is_int
    assert sp.horizon.choices == ("15m", "1h")


@pytest.mark.services
def test_two_workers_on_postgres_run_distinct_trials(tmp_path):
    import optuna

    script = ROOT / "scripts" / "postgres.sh"
    env = {**os.environ, "PG_STATE_DIR": str(tmp_path / "pg")}
    url = (
        subprocess.run(["bash", str(script), "start"], check=True, capture_output=True, text=True, env=env, timeout=600)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    try:
        write_lake(tmp_path / "lake")
        raw = raw_config()
        raw["data"]["lake"] = str(tmp_path / "lake")
        cfg_path = tmp_path / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        bt = str(Path(sys.executable).with_name("bt"))
        procs = [
            subprocess.Popen(
                [
                    bt,
                    "sweep",
                    str(cfg_path),
                    "--trials",
                    "8",
                    "--storage",
                    url,
                    "--study",
                    "two",
                    "--worker",
                    str(w),
                    "--no-register",
                    "--results",
                    str(tmp_path / f"res{w}"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for w in (0, 1)
        ]
        for p in procs:
            out, err = p.communicate(timeout=900)
            assert p.returncode == 0, err[-2000:]
        study = optuna.load_study(study_name="two", storage=url)
        finished = [t for t in study.trials if t.state.is_finished()]
        assert len({t.number for t in finished}) == len(finished) >= 8
        assert {t.user_attrs.get("worker") for t in finished} == {0, 1}
        params = [tuple(sorted(t.params.items())) for t in finished]
        assert len(set(params)) == len(params)  # the workers explored different points
    finally:
        subprocess.run(["bash", str(script), "stop"], check=False, env=env, timeout=120)


def test_sweep_registers_only_a_winner_that_passes_its_gate(tmp_path, capsys, monkeypatch):
    """Null market: the winner fails the gate, so `bt sweep` (default --register passing) reports
    why, records the verdict and registers nothing; --register always registers it, tagged."""
    import json

    import mlflow

    from bt.cli import main as bt_main
    from bt.registry import in_sample_overlap, model_lineage

    write_lake(tmp_path / "lake", null=True)
    raw = raw_config()
    raw["data"]["lake"] = str(tmp_path / "lake")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    common = [
        str(cfg_path),
        "--trials",
        "4",
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--results",
        str(tmp_path / "res"),
        "--tracking-uri",
        tracking,
    ]
    assert bt_main(["sweep", *common]) == 0
    out = capsys.readouterr().out
    assert "gate                   fail" in out
    assert "not registered: the winner fails its gate (--register always registers it anyway)" in out
    study_dir = next((tmp_path / "res").iterdir())
    doc = json.loads((study_dir / "sweep.json").read_text())
    assert doc["gate"]["verdict"] == "fail" and doc["gate"]["reasons"]
    assert all(f"- {r}" in out for r in doc["gate"]["reasons"])
    assert doc["registration"] == {"mode": "passing", "registered": False, "decision": doc["registration"]["decision"]}
    assert json.loads((study_dir / "metrics.json").read_text())["gate"]["verdict"] == "fail"
    client = mlflow.MlflowClient(tracking_uri=tracking)
    assert client.search_registered_models() == []
    # The parent run is still logged, with the verdict.
    runs = mlflow.search_runs(
        experiment_names=["whalebt"], output_format="list", filter_string="tags.`whalebt.kind` = 'sweep'"
    )
    assert [r.data.tags["whalebt.gate"] for r in runs] == ["fail"]

    # --register always: registered anyway, the failed verdict and the lineage on the version.
    assert bt_main(["sweep", *common, "--summary-only", "--register", "always", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["registered"] and res["gate"] == "fail" and res["model_uri"].endswith("/1")
    tags = client.get_model_version(res["model_uri"].split("/")[1], "1").tags
    assert tags["whalebt.gate"] == "fail" and "whalebt.test_n_independent" in tags
    lin = model_lineage(res["model_uri"])
    assert lin["symbols"] == ["PLANTUSDT"] and lin["partitions"] and len(lin["partitions"][0]["sha256"]) == 64
    tr, va = lin["ranges_ms"]["train"], lin["ranges_ms"]["validation"]
    assert tr[0] < tr[1] < va[0] < va[1] < lin["ranges_ms"]["test"][0]
    assert json.loads(tags["whalebt.lineage.train_ms"]) == tr
    assert [o["part"] for o in in_sample_overlap(lin, *lin["span_ms"])] == ["train", "validation"]
    # Backtesting that model over the sweep's own span is refused before any data is loaded.
    run_cfg = {k: v for k, v in raw.items() if k != "model"}
    run_cfg["model"] = {"uri": res["model_uri"]}
    cfg2 = tmp_path / "run.yaml"
    cfg2.write_text(yaml.safe_dump(run_cfg))
    assert bt_main(["run", str(cfg2), "--results", str(tmp_path / "r"), "--no-mlflow"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"Error: span 2024-03-01..2024-03-08 overlaps the training range 2024-03-01 ")
    assert err.endswith("or pass --allow-in-sample") and "(and validation " in err
