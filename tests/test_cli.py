"""CLI surface: every command has --help with an example; user errors print one exact `Error:` line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bt.cli
import datasets.cli
import live.cli
from whalebt.cli import build_parser
from datasets.lake import Lake

CLIS = [
    ("bt", bt.cli, "bt.commands"),
    ("datasets", datasets.cli, "datasets.commands"),
    ("live", live.cli, "live.commands"),
]


def _command_paths(prog, pkg):
    """Every leaf command as an argv prefix, e.g. ['ingest', 'binance-archive']."""
    parser = build_parser(prog, "", pkg)
    paths = []

    def walk(p, prefix):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            paths.append(prefix)
            return
        for name, child in subs[0].choices.items():
            walk(child, prefix + [name])

    walk(parser, [])
    return paths


@pytest.mark.parametrize("prog,mod,pkg", CLIS, ids=[c[0] for c in CLIS])
def test_every_command_has_help_with_an_example(prog, mod, pkg, capsys):
    paths = _command_paths(prog, pkg)
    assert paths, f"{prog} has no commands"
    for path in [[]] + paths:
        with pytest.raises(SystemExit) as exc:
            mod.main(path + ["--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage:"), path
        assert "Example:" in out, f"`{prog} {' '.join(path)} --help` has no Example: block"


def test_bt_help_is_fast():
    """Heavy libraries are imported inside commands, so --help answers quickly."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bt.cli", "--help"], check=True, capture_output=True)
    assert time.perf_counter() - t0 < 5.0  # the benchmark reports the real figure; this catches a 10 s regression
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bt.cli", "run", "--help"], capture_output=True, text=True
    ).stderr
    for heavy in ("vectorbt", "quantstats", "mlflow", "lightgbm", "optuna", "numba"):
        assert f" {heavy}\n" not in out and f"| {heavy}\n" not in out, f"{heavy} imported by `bt run --help`"


GOOD = {
    "name": "x",
    "data": "{lake: LAKE, exchange: binance_usdm, symbol: PLANTUSDT, start: 2024-03-01, end: 2024-03-10}",
    "signal": "{whale: {min_notional_usd: 1000000}}",
    "backtest": "{horizon: 1h}",
}


def _config(tmp_path: Path, **over) -> Path:
    parts = {**GOOD, **over}
    text = "\n".join(f"{k}: {v}" for k, v in parts.items() if v is not None).replace("LAKE", str(tmp_path / "lake"))
    p = tmp_path / "cfg.yaml"
    p.write_text(text + "\n")
    return p


def _error(capsys, argv) -> str:
    rc = bt.cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("Error: "), err
    return err[0]


def test_error_unknown_key(tmp_path, capsys):
    cfg = _config(tmp_path, backtest="{horizn: 1h}")
    assert _error(capsys, ["run", str(cfg)]) == (
        f"Error: {cfg}: unknown key 'backtest.horizn'; expected one of ['horizon', 'horizons', "
        "'entry_latency_ms', 'fee_bps', 'slippage_bps', 'label_threshold', 'take_profit', 'stop_loss', "
        "'bootstrap', 'seed', 'funding']. Did you mean 'horizon'?"
    )


def test_error_bad_horizon(tmp_path, capsys):
    cfg = _config(tmp_path, backtest="{horizon: 1 hour}")
    assert _error(capsys, ["run", str(cfg)]) == (
        f"Error: {cfg}: backtest.horizon: expected a duration like '1h', '15m', '30s' or '500ms'; got '1 hour'"
    )


def test_error_start_after_end(tmp_path, capsys):
    cfg = _config(tmp_path, data="{exchange: binance_usdm, symbol: PLANTUSDT, start: 2024-03-10, end: 2024-03-01}")
    assert _error(capsys, ["run", str(cfg)]) == (
        f"Error: {cfg}: data: start 2024-03-10 is after end 2024-03-01; swap them"
    )


def test_error_missing_section_and_missing_file(tmp_path, capsys):
    cfg = _config(tmp_path, signal=None)
    assert _error(capsys, ["run", str(cfg)]) == f"Error: {cfg}: missing key 'signal'"
    assert (
        _error(capsys, ["run", str(tmp_path / "nope.yaml")])
        == f"Error: config file not found: {tmp_path / 'nope.yaml'}"
    )


def test_error_no_data_names_what_is_stored(tmp_path, capsys):
    lake = Lake(tmp_path / "lake")
    ts = int(pd.Timestamp("2024-02-01", tz="UTC").value // 1_000_000) + np.arange(5) * 1000
    lake.write_trades(
        pd.DataFrame(
            {
                "exchange": "binance_usdm",
                "symbol": "PLANTUSDT",
                "trade_id": np.arange(5),
                "ts_ms": ts,
                "price": 1.0,
                "qty": 1.0,
                "side": 1,
            }
        )
    )
    cfg = _config(tmp_path)
    assert _error(capsys, ["run", str(cfg), "--no-mlflow"]) == (
        f"Error: no bronze trades for binance_usdm/PLANTUSDT from 2024-03-01 to 2024-03-10 in {tmp_path / 'lake'}; "
        "stored: binance_usdm/PLANTUSDT 2024-02-01..2024-02-01 (1 days) <- requested symbol. "
        "Ingest them first, e.g. `datasets ingest binance-archive ...`"
    )


def test_error_not_yaml(tmp_path, capsys):
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent("name: [unclosed\n"))
    assert _error(capsys, ["run", str(p)]) == (
        f"Error: {p}: not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"
    )


def test_a_user_error_is_one_line_and_a_bug_shows_its_traceback(tmp_path, monkeypatch, capsys):
    from whalebt.cli import run_cli

    pkg = tmp_path / "fakecmds"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "boom.py").write_text(
        "from whalebt.errors import UserError\n"
        "def register(sub):\n"
        "    p = sub.add_parser('boom')\n"
        "    p.add_argument('--kind')\n"
        "    p.set_defaults(func=run)\n"
        "def run(args):\n"
        "    if args.kind == 'user':\n"
        "        raise UserError('--kind user: expected something else; pass --kind ok')\n"
        "    if args.kind == 'bug':\n"
        "        raise ValueError('internal invariant broken')\n"
        "    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run_cli("fake", "d", "fakecmds", ["boom", "--kind", "ok"]) == 0
    assert run_cli("fake", "d", "fakecmds", ["boom", "--kind", "user"]) == 1
    err = capsys.readouterr().err
    assert err == "Error: --kind user: expected something else; pass --kind ok\n"
    assert run_cli("fake", "d", "fakecmds", ["boom", "--kind", "bug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: internal invariant broken" in err
    assert "a bug" in err and not err.startswith("Error:")


def test_every_error_class_users_see_derives_from_whalebt_error():
    from bt.config import ConfigError
    from datasets.lake import LakeError, StoreError
    from datasets.schema import SchemaError
    from datasets.sources.binance_archive import ArchiveError
    from live.decider import ModelUnavailable
    from whalebt.errors import UserError, WhalebtError

    for cls in (ConfigError, LakeError, StoreError, SchemaError, ArchiveError, ModelUnavailable, UserError):
        assert issubclass(cls, WhalebtError), cls


def _all_parsers():
    """(``prog sub ...``, parser) for every page of the three CLIs, group pages included."""
    for prog, _, pkg in CLIS:
        stack = [([prog], build_parser(prog, "", pkg))]
        while stack:
            path, p = stack.pop()
            yield " ".join(path), p
            for a in p._actions:
                if isinstance(a, argparse._SubParsersAction):
                    stack.extend((path + [name], child) for name, child in a.choices.items())


def test_help_pages_print_each_default_once():
    import re

    pages = 0
    for where, p in _all_parsers():
        pages += 1
        formatter = p._get_formatter()
        for action in p._actions:
            if not action.help or action.help is argparse.SUPPRESS:
                continue
            text = formatter._expand_help(action)
            flag = "/".join(action.option_strings) or action.dest
            assert len(re.findall(r"default", text, re.I)) <= 1, f"`{where} --help` {flag}: {text!r}"
            assert not re.search(r"\(default: (None|False|True|\[\])\)", text), f"`{where} --help` {flag}: {text!r}"
    assert pages > 20


def test_group_pages_have_examples_of_each_subcommand(capsys):
    for mod, group, subs in (
        (datasets.cli, "ingest", ("binance-archive", "bybit-archive", "okx-archive", "recording", "rest", "funding")),
        (live.cli, "deploy", ("aci",)),
    ):
        with pytest.raises(SystemExit):
            mod.main([group, "--help"])
        out = capsys.readouterr().out
        assert "Examples" in out, out
        examples = out.split("Examples", 1)[1]
        prog = "datasets" if mod is datasets.cli else "live"
        for s in subs:
            assert f"  {prog} {group} {s} " in examples, (s, examples)
            with pytest.raises(SystemExit):
                mod.main([group, s, "--help"])
            assert f"{prog} {group} {s} " in capsys.readouterr().out.split("Example", 1)[1]


def test_one_progress_library():
    """Progress shows through tqdm only (whalebt.progress); rich draws tables, never progress."""
    import re

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for pkg in ("whalebt", "signals", "datasets", "bt", "live"):
        for f in (root / pkg).rglob("*.py"):
            text = f.read_text()
            if re.search(r"rich\.progress|rich\.live|\.status\(|import Progress|Progress\(", text):
                offenders.append(str(f.relative_to(root)))
    assert not offenders, offenders


def test_progress_status_line(tmp_path):
    import io

    from whalebt.progress import bar, status

    buf = io.StringIO()
    with status("reading x", enabled=True, file=buf, every_s=0.01) as line:
        time.sleep(0.05)
        line.update("reading x: 3 files")
    text = buf.getvalue()
    assert "reading x (" in text and "reading x: 3 files" in text
    quiet = io.StringIO()  # not a terminal: nothing at all
    with status("reading y", file=quiet):
        pass
    with bar(3, desc="d", file=quiet) as b:
        b.update(3)
    assert quiet.getvalue() == ""


def _fake_run(root: Path, run_id: str, start: str, end: str) -> Path:
    import json

    d = root / run_id
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "run_id": run_id,
                "name": run_id,
                "n_signals": 3,
                "mean_return": 0.01,
                "data": {"start": start, "end": end},
            }
        )
    )
    return d


def test_compare_shows_spans_and_warns_when_they_differ(tmp_path, capsys):
    a = _fake_run(tmp_path, "a-1", "2024-03-01", "2024-03-10")
    b = _fake_run(tmp_path, "b-2", "2024-03-01", "2024-03-05")
    c = _fake_run(tmp_path, "c-3", "2024-03-01", "2024-03-10")
    out = tmp_path / "cmp.html"
    assert bt.cli.main(["compare", str(a), str(b), "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].split() == ["a-1", "2024-03-01", "–", "2024-03-10", "(10", "days)"]
    assert err[1].split() == ["b-2", "2024-03-01", "–", "2024-03-05", "(5", "days)"]
    assert err[2] == (
        "warning: the runs cover different spans (a-1: 2024-03-01 → 2024-03-10; b-2: 2024-03-01 → "
        "2024-03-05); figures over different days are not like for like, compare runs with the same "
        "data.start and data.end"
    )
    page = out.read_text()
    assert "<th>span</th>" in page and "2024-03-01 – 2024-03-05 (5 days)" in page
    assert "<strong>Warning:</strong> the runs cover different spans" in page
    assert bt.cli.main(["compare", str(a), str(c), "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "<strong>Warning:</strong>" not in out.read_text()
