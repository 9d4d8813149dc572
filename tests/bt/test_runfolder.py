"""bt.runfolder: old-style scratch folders (``results/.<run_id>.<8 characters>/``, made by
``tempfile.mkdtemp`` before the pid-named ones) left by a killed `bt run` are removed at the next start."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

import bt.runfolder as runfolder
from bt.runfolder import clean_stale_run_folders, write_run_folder

OLD_STYLE_STALE_S = getattr(runfolder, "OLD_STYLE_STALE_S", 600)

ROOT = Path(__file__).resolve().parents[2]


def _old_style(parent: Path, name: str, age_s: float) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))  # exactly what the old writer made
    (d / "metrics.json").write_text("{}")
    t = time.time() - age_s
    os.utime(d, (t, t))
    return d


def test_old_style_scratch_of_a_killed_run_is_removed_and_everything_else_kept(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    stale = _old_style(results, "run-1", OLD_STYLE_STALE_S + 60)
    fresh = _old_style(results, "run-2", 5)  # an older version may still be writing it
    mine = results / ".notes.abcdefgh"  # same shape, but the user's (mode 0755)
    mine.mkdir(mode=0o755)
    os.chmod(mine, 0o755)
    os.utime(mine, (time.time() - 10 * OLD_STYLE_STALE_S,) * 2)
    (results / "run-1").mkdir()
    write_run_folder(results / "run-3", lambda d: (d / "ok").write_text("1"))
    assert sorted(p.name for p in results.iterdir()) == sorted([fresh.name, mine.name, "run-1", "run-3"])
    assert not stale.exists()
    assert clean_stale_run_folders(results) == []


def test_bt_run_cleans_old_style_scratch_when_it_starts(tmp_path, monkeypatch):
    import bt.run as bt_run
    from bt.config import load_config

    results = tmp_path / "results"
    results.mkdir()
    stale = _old_style(results, "demo", OLD_STYLE_STALE_S + 60)

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(bt_run, "compute_signals", stop)
    with pytest.raises(Stop):
        bt_run.run_backtest(load_config(ROOT / "configs" / "demo.yaml"), results_dir=results, log_mlflow=False)
    assert not stale.exists()  # gone before the first signal is computed
