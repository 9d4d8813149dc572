"""``--engine spark`` equals ``--engine local``: bt run (universe and one symbol), datasets build, bt sweep.

Spark runs ``local[2]`` in this process (one SparkContext for the module); Java comes from the OS
(Debian ``openjdk-17-jre-headless``, installed with apt-get when missing and we are root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

import bt.cli
import datasets.cli
from tests.bt import spark_tasks
from tests.bt.universe_market import SYMBOLS, raw_config, write_lake
from whalebt.engine import EngineError, SparkTaskError, run_tasks

pytestmark = pytest.mark.slow

RUN_FILES = ("metrics.json", "signals.jsonl", "trades.parquet", "positions.parquet", "equity.parquet", "config.yaml")


def _install_java() -> str | None:
    """Debian's headless JRE 17 when no java is found; returns why not, or None when it is there."""
    if shutil.which("java") or os.environ.get("JAVA_HOME"):
        return None
    if shutil.which("apt-get") is None:
        return "java is not installed and there is no apt-get to install it (Java 17+ runs Spark)"
    if os.geteuid() != 0:
        return "java is not installed and installing it needs root (apt-get install openjdk-17-jre-headless)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
    r = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openjdk-17-jre-headless"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if r.returncode or not shutil.which("java"):
        return f"apt-get could not install openjdk-17-jre-headless: {r.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def spark():
    why = _install_java()
    if why:
        pytest.skip(why)
    from whalebt.engine import spark_context

    sc = spark_context("local[2]")
    yield sc
    sc.stop()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    d = tmp_path_factory.mktemp("spark") / "lake"
    write_lake(d)
    return d


def _files(run_dir: Path) -> dict[str, bytes]:
    return {f: (run_dir / f).read_bytes() for f in RUN_FILES}


def _bt_run(cfg: Path, results: Path, *extra: str) -> Path:
    argv = ["run", str(cfg), "--results", str(results), "--no-mlflow", "--no-tearsheet", *extra]
    assert bt.cli.main(argv) == 0
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    return run_dir


def test_tasks_run_on_spark_in_order_with_the_shared_context(spark):
    got = run_tasks(spark_tasks.scaled, list(range(7)), 2, context={"k": 3}, engine="spark")
    assert [v for v, _ in got] == [3 * i for i in range(7)]
    assert all(pid != os.getpid() for _, pid in got)  # Spark's Python workers, not this process
    with pytest.raises(spark_tasks.NotTwelveError, match="task 12 refused"):
        run_tasks(spark_tasks.refuse_twelve, [1, 12, 3], engine="spark")
    with pytest.raises(SparkTaskError, match="Local: local 5"):
        run_tasks(spark_tasks.unpicklable_error, [5], engine="spark")
    assert run_tasks(spark_tasks.refuse_twelve, [], engine="spark") == []


MODEL = {
    "threshold": {"policy": "top_fraction", "fraction": 0.5, "min_signals": 1},
    "lgbm": {"num_boost_round": 20, "min_data_in_leaf": 5},
}


@pytest.mark.parametrize("what", ["universe", "single", "universe+model"])
def test_bt_run_on_spark_writes_the_local_engine_files(spark, lake, tmp_path, capsys, what):
    raw = raw_config(lake, symbols=list(SYMBOLS)) if what != "single" else raw_config(lake, symbol=SYMBOLS[1])
    if what == "universe+model":  # one model trained over both symbols' events, sent to the tasks
        raw["model"] = MODEL
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    local = _bt_run(cfg, tmp_path / "local", "--jobs", "2")
    on_spark = _bt_run(cfg, tmp_path / "spark", "--engine", "spark")
    assert local.name == on_spark.name
    assert _files(on_spark) == _files(local)  # metrics.json, journal, events, positions, equity: byte for byte
    m = json.loads((local / "metrics.json").read_text())
    assert m["n_signals"] > 5 and (what == "single" or set(m["by_symbol"]) == set(SYMBOLS))
    assert (what == "universe+model") == ("model_metrics" in m)
    err = capsys.readouterr().err
    assert what == "single" or "on Spark" in err


def test_datasets_build_on_spark_writes_the_local_partitions(spark, tmp_path, capsys):
    copies = {}
    for engine in ("local", "spark"):
        d = tmp_path / engine
        write_lake(d)  # bronze only
        cfg = tmp_path / f"{engine}.yaml"
        cfg.write_text(yaml.safe_dump(raw_config(d, symbols=list(SYMBOLS))))
        capsys.readouterr()
        assert datasets.cli.main(["build", str(cfg), "--engine", engine]) == 0
        copies[engine] = (d, capsys.readouterr().err.replace(str(d), "LAKE"))
    (ld, lerr), (sd, serr) = copies["local"], copies["spark"]
    assert serr == lerr and lerr.count("(built)") == 2
    for sym in SYMBOLS:
        assert f"binance_usdm/{sym} 2024-03-01..2024-03-02:" in lerr
    built = sorted(p.relative_to(ld) for p in ld.rglob("*.parquet") if p.parts[len(ld.parts)] in ("silver", "gold"))
    assert len(built) == 2 * 2 * 2  # (silver, gold) x symbols x days
    for rel in built:
        assert (sd / rel).read_bytes() == (ld / rel).read_bytes(), rel
    assert sorted(p.relative_to(sd) for p in sd.rglob("*.parquet")) == sorted(
        p.relative_to(ld) for p in ld.rglob("*.parquet")
    )


def _trials(study) -> list:
    return [(t.number, t.state.name, t.params, t.value, t.intermediate_values, t.user_attrs) for t in study.trials]


def test_a_sweep_on_spark_is_the_local_study(spark, tmp_path):
    from bt.config import parse_config
    from bt.sweep import run_sweep
    from datasets.build import load_trades
    from datasets.lake import Lake

    raw = raw_config(Path(os.fspath(tmp_path)), symbol=SYMBOLS[0])
    raw["model"] = {
        "threshold": {"min_signals": 3},
        "sweep": {
            "whale": {"min_notional_usd": [150000, 250000]},
            "lgbm": {"num_leaves": {"low": 4, "high": 15}, "num_boost_round": {"low": 20, "high": 60}},
            "min_train_events": 10,
            "seed": 5,
        },
    }
    lake_dir = tmp_path / "lake"
    write_lake(lake_dir)
    raw["data"]["lake"] = str(lake_dir)
    cfg = parse_config(raw)
    span = load_trades(Lake(str(lake_dir)), "binance_usdm", SYMBOLS[0], cfg.data.start, cfg.data.end)
    kw = {"progress": False, "summarize_after": False}
    # Up to the TPE sampler's 8 random start-up trials, rounds of 2 are Optuna's one-by-one study.
    seq, _, _ = run_sweep(cfg, span, n_trials=6, **kw)
    par, _, _ = run_sweep(cfg, span, n_trials=6, n_jobs=2, engine="spark", **kw)
    assert _trials(par) == _trials(seq)
    assert {t.state.name for t in seq.trials} >= {"COMPLETE"}
    # Past them, the same rounds give the same study on either engine.
    loc, _, _ = run_sweep(cfg, span, n_trials=11, n_jobs=2, engine="local", **kw)
    spk, _, _ = run_sweep(cfg, span, n_trials=11, n_jobs=2, engine="spark", **kw)
    assert _trials(spk) == _trials(loc) and len(spk.trials) == 11


@pytest.mark.parametrize("what", ["single", "universe"])
def test_bt_sweep_cli_on_spark_writes_the_local_summary(spark, tmp_path, capsys, what):
    lake_dir = tmp_path / "lake"
    write_lake(lake_dir)
    raw = raw_config(lake_dir, symbol=SYMBOLS[0]) if what == "single" else raw_config(lake_dir, symbols=list(SYMBOLS))
    raw["model"] = {
        "threshold": {"min_signals": 3},
        "gate": {"min_test_signals": 1},
        "sweep": {"lgbm": {"num_leaves": {"low": 4, "high": 15}}, "min_train_events": 10, "seed": 5},
    }
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    docs = {}
    for engine in ("local", "spark"):
        out = tmp_path / engine
        argv = ["sweep", str(cfg), "--trials", "4", "--storage", "", "--register", "never", "--results", str(out)]
        assert bt.cli.main([*argv, "--engine", engine, "--jobs", "2" if engine == "spark" else "1"]) == 0
        (d,) = list(out.iterdir())
        doc = json.loads((d / "sweep.json").read_text())
        doc.pop("cache")  # kernel runs counted per process: each Spark worker builds its own features
        trials = pd.read_parquet(d / "trials.parquet").drop(columns=["datetime_start", "datetime_complete", "duration"])
        docs[engine] = (doc, trials, (d / "metrics.json").read_text(), (d / "trades.parquet").read_bytes())
    capsys.readouterr()
    assert docs["spark"][0] == docs["local"][0]
    pd.testing.assert_frame_equal(docs["spark"][1], docs["local"][1])
    assert docs["spark"][2:] == docs["local"][2:]
    assert what == "single" or set(docs["local"][0]["by_symbol"]) == set(SYMBOLS)  # one study over both


def test_engine_errors_are_one_line(spark, lake, tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw_config(lake, symbol=SYMBOLS[0])))
    base = ["run", str(cfg), "--results", str(tmp_path / "r"), "--no-mlflow", "--no-tearsheet"]
    assert bt.cli.main([*base, "--spark-master", "local[1]"]) == 1
    assert "Error: --spark-master local[1] needs --engine spark" in capsys.readouterr().err
    import pyspark

    from whalebt import engine

    monkeypatch.setattr(pyspark.SparkContext, "_active_spark_context", None)
    monkeypatch.setattr(engine, "_java", lambda: None)
    assert bt.cli.main([*base, "--engine", "spark"]) == 1
    err = capsys.readouterr().err
    assert "Error: --engine spark needs Java 17 or later" in err and "openjdk-17-jre-headless" in err
    monkeypatch.setitem(__import__("sys").modules, "pyspark", None)
    assert datasets.cli.main(["build", str(cfg), "--engine", "spark"]) == 1
    assert "Error: --engine spark needs pyspark: pip install 'whalebt[spark]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
