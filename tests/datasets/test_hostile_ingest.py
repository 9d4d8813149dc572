"""Hostile input at ingest (issue 14, "Ingest and the lake"): refused with one Error line and nothing
written, or quarantined with --skip-bad-rows; concurrent ingests keep every row; temp folders of
killed processes are cleaned; duplicate YAML keys and a missing lake are errors."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.cli import main as datasets_main
from datasets.lake import Lake
from datasets.quality import read_quality

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "data" / "real"
MULTI = REAL / "binance_usdm_multi_2021-07-22_frames.txt"
LINES = MULTI.read_text().split("\n")
AGG = [i for i, line in enumerate(LINES) if '"aggTrade"' in line]
K = AGG[len(AGG) // 2]  # a SUSHIUSDT aggTrade frame in the middle of the file
assert '"s":"SUSHIUSDT"' in LINES[K]


def one_error(err: str) -> str:
    """The one ``Error:`` line of a command's stderr (progress bars aside)."""
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if "Error" in line or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err[-2000:]
    return lines[0]


def lake_files(lake_dir: Path) -> list[str]:
    if not lake_dir.exists():
        return []
    return sorted(str(p.relative_to(lake_dir)) for p in lake_dir.rglob("*") if p.is_file())


def corrupt(tmp_path: Path, edit, name: str = "rec.txt", line: int = K) -> Path:
    lines = list(LINES)
    lines[line] = edit(lines[line])
    assert lines[line] != LINES[line]
    out = tmp_path / name
    out.write_text("\n".join(lines))
    return out


def sub(pattern: str, repl: str):
    return lambda s: re.sub(pattern, repl, s, count=1)


HOSTILE = {
    "T=2**62": (sub(r'"T":\d+', f'"T":{2**62}'), "ts_ms 4611686018427387904 is more than a day after"),
    "T=10**30": (sub(r'"T":\d+', f'"T":{10**30}'), "ts_ms 1000000000000000000000000000000 is not an integer"),
    "T=5000 digits": (sub(r'"T":\d+', '"T":' + "9" * 5000), "unreadable frame (Exceeds the limit"),
    "T before 2009": (sub(r'"T":\d+', '"T":1000'), "ts_ms 1000 is before 2009-01-01"),
    "price NaN": (sub(r'"p":"[^"]*"', '"p":"NaN"'), "price nan is not a finite number"),
    "price inf": (sub(r'"p":"[^"]*"', '"p":"inf"'), "price inf is not a finite number"),
    "price 0": (sub(r'"p":"[^"]*"', '"p":"0"'), "price 0.0 is not above zero"),
    "price -1": (sub(r'"p":"[^"]*"', '"p":"-1"'), "price -1.0 is not above zero"),
    "qty -5": (sub(r'"q":"[^"]*"', '"q":"-5"'), "qty -5.0 is not above zero"),
    "qty 0": (sub(r'"q":"[^"]*"', '"q":"0"'), "qty 0.0 is not above zero"),
    "id 10**30": (sub(r'"a":\d+', f'"a":{10**30}'), "trade_id 1000000000000000000000000000000 is not an integer"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_recording_with_one_hostile_line_is_refused_and_nothing_written(tmp_path, capsys, case):
    edit, says = HOSTILE[case]
    rec = corrupt(tmp_path, edit)
    lake_dir = tmp_path / "lake"
    assert datasets_main(["ingest", "recording", str(rec), "--lake", str(lake_dir)]) == 1
    err = one_error(capsys.readouterr().err)
    assert err.startswith("Error: rec.txt"), err
    assert f"line {K + 1}" in err and says in err, err
    assert lake_files(lake_dir) == []  # no raw copy, no bronze, no quality report


def test_skip_bad_rows_quarantines_the_row_and_the_report_counts_it(tmp_path, capsys):
    rec = corrupt(tmp_path, sub(r'"p":"[^"]*"', '"p":"NaN"'))
    lake_dir = tmp_path / "lake"
    assert datasets_main(["ingest", "recording", str(MULTI), "--lake", str(tmp_path / "clean")]) == 0
    assert datasets_main(["ingest", "recording", str(rec), "--lake", str(lake_dir), "--skip-bad-rows"]) == 0
    assert "1 bad rows quarantined under quarantine/recordings/" in capsys.readouterr().out
    lake, clean = Lake(lake_dir), Lake(tmp_path / "clean")
    q = lake.quarantined("binance_usdm", "SUSHIUSDT", "2021-07-22")
    assert q[["source", "file", "row", "reason", "column", "value"]].values.tolist() == [
        ["recordings", "rec.txt", K + 1, "price_not_finite", "price", "nan"]
    ]
    key = "quarantine/recordings/exchange=binance_usdm/symbol=SUSHIUSDT/date=2021-07-22/part-0.parquet"
    assert lake.store.exists(key)
    got = lake.read("bronze", "binance_usdm", "SUSHIUSDT", "2021-07-22", "2021-07-22")
    want = clean.read("bronze", "binance_usdm", "SUSHIUSDT", "2021-07-22", "2021-07-22")
    assert len(got) == len(want) - 1 and np.isfinite(got["price"]).all()
    p = lake.partitions("bronze", "binance_usdm", "SUSHIUSDT")[0]
    assert read_quality(lake, p)["quarantined_rows"] == {"price_not_finite": 1}
    assert "quarantined_rows" not in read_quality(lake, lake.partitions("bronze", "binance_usdm", "CTKUSDT")[0])
    # Re-running changes nothing, quarantine included.
    before = {f: (lake_dir / f).read_bytes() for f in lake_files(lake_dir)}
    assert datasets_main(["ingest", "recording", str(rec), "--lake", str(lake_dir), "--skip-bad-rows"]) == 0
    assert {f: (lake_dir / f).read_bytes() for f in lake_files(lake_dir)} == before


def test_duplicate_trade_id_with_other_content_is_refused_naming_both_lines(tmp_path, capsys):
    a, b = AGG[10], AGG[11]
    first_id = re.search(r'"a":(\d+)', LINES[a]).group(1)
    sym = re.search(r'"s":"(\w+)"', LINES[a]).group(1)
    lines = list(LINES)
    # line b becomes another trade of the same symbol under line a's id, with another qty
    lines[b] = re.sub(r'"s":"\w+"', f'"s":"{sym}"', re.sub(r'"a":\d+', f'"a":{first_id}', LINES[b]))
    lines[b] = re.sub(r'"stream":"\w+@', f'"stream":"{sym.lower()}@', re.sub(r'"q":"[^"]*"', '"q":"123456"', lines[b]))
    rec = tmp_path / "dup.txt"
    rec.write_text("\n".join(lines))
    lake_dir = tmp_path / "lake"
    assert datasets_main(["ingest", "recording", str(rec), "--lake", str(lake_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"Error: dup.txt lines {a + 1} and {b + 1}: trade_id {first_id} appears twice"), err
    assert "qty" in err and lake_files(lake_dir) == []
    assert datasets_main(["ingest", "recording", str(rec), "--lake", str(lake_dir), "--skip-bad-rows"]) == 0
    q = Lake(lake_dir).quarantined("binance_usdm", sym, "2021-07-22")
    assert sorted(q["row"]) == [a + 1, b + 1] and set(q["reason"]) == {"duplicate_id_conflict"}
    # an exact repeat of a trade (a re-delivered frame) is no conflict
    lines = list(LINES)
    lines.insert(a + 1, LINES[a])
    (tmp_path / "repeat.txt").write_text("\n".join(lines))
    assert datasets_main(["ingest", "recording", str(tmp_path / "repeat.txt"), "--lake", str(tmp_path / "l2")]) == 0


# ---------------------------------------------------------------------------- Binance archive
def _binance_zip(rows: list[str]) -> bytes:
    text = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
    text += "\n".join(rows) + "\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BTCUSDT-aggTrades-2024-03-02.csv", text)
    return buf.getvalue()


def _binance_root(tmp_path: Path, bad: str | None, at: int = 5) -> Path:
    import hashlib

    t0 = 1709337600000  # 2024-03-02
    rows = [
        f"{100 + i},{60000 + i}.5,0.{i + 1},{200 + i},{200 + i},{t0 + 1000 * i},{'true' if i % 2 else 'false'}"
        for i in range(10)
    ]
    if bad is not None:
        rows[at] = bad
    root = tmp_path / "archive"
    rel = root / "data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-03-02.zip"
    rel.parent.mkdir(parents=True, exist_ok=True)
    data = _binance_zip(rows)
    rel.write_bytes(data)
    rel.with_name(rel.name + ".CHECKSUM").write_text(f"{hashlib.sha256(data).hexdigest()}  {rel.name}\n")
    return root


BINANCE_BAD = {
    "price NaN": ("105,NaN,0.6,205,205,1709337605000,true", "line 7: price nan is not a finite number"),
    "price inf": ("105,inf,0.6,205,205,1709337605000,true", "line 7: price inf is not a finite number"),
    "price 0": ("105,0,0.6,205,205,1709337605000,true", "line 7: price 0.0 is not above zero"),
    "qty -1": ("105,60005.5,-1,205,205,1709337605000,true", "line 7: qty -1.0 is not above zero"),
    "ts 2008": ("105,60005.5,0.6,205,205,1199145600000,true", "line 7: ts_ms 1199145600000 is before 2009-01-01"),
    "dup id": ("104,60005.5,0.6,205,205,1709337605000,true", "lines 6 and 7: trade_id 104 appears twice"),
}


def test_binance_archive_implausible_time_names_its_line(tmp_path, capsys):
    root = _binance_root(tmp_path, f"105,60005.5,0.6,205,205,{2**62},true")
    lake_dir = tmp_path / "lake"
    argv = [
        "ingest",
        "binance-archive",
        "--root",
        str(root),
        "--symbol",
        "BTCUSDT",
        "--start",
        "2024-03-02",
        "--end",
        "2024-03-02",
        "--lake",
        str(lake_dir),
        "--no-progress",
    ]
    assert datasets_main(argv) == 1
    err = one_error(capsys.readouterr().err)
    assert f"(line 7: {2**62})" in err and lake_files(lake_dir) == []


def test_trade_stream_rows_are_named_by_the_line_of_their_fill(tmp_path, capsys):
    src = REAL / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
    lines = gzip.open(src, "rt").read().split("\n")
    k = [i for i, line in enumerate(lines) if '"e":"trade"' in line][100]
    lines[k] = re.sub(r'"p":"[^"]*"', '"p":"-7"', lines[k], count=1)
    rec = tmp_path / "btc.txt"
    rec.write_text("\n".join(lines))
    assert datasets_main(["ingest", "recording", str(rec), "--lake", str(tmp_path / "lake")]) == 1
    err = one_error(capsys.readouterr().err)
    assert err.startswith(f"Error: btc.txt line {k + 1}: price -7.0 is not above zero"), err


@pytest.mark.parametrize("case", list(BINANCE_BAD))
def test_binance_archive_bad_row_refused_then_quarantined(tmp_path, capsys, case):
    row, says = BINANCE_BAD[case]
    root = _binance_root(tmp_path, row)
    lake_dir = tmp_path / "lake"
    argv = [
        "ingest",
        "binance-archive",
        "--root",
        str(root),
        "--symbol",
        "BTCUSDT",
        "--start",
        "2024-03-02",
        "--end",
        "2024-03-02",
        "--lake",
        str(lake_dir),
        "--no-progress",
    ]
    assert datasets_main(argv) == 1
    err = one_error(capsys.readouterr().err)
    assert "BTCUSDT-aggTrades-2024-03-02.zip " + says in err, err
    assert lake_files(lake_dir) == []
    assert datasets_main(argv + ["--skip-bad-rows"]) == 0
    lake = Lake(lake_dir)
    n_bad = 2 if case == "dup id" else 1
    assert len(lake.read("bronze", "binance_usdm", "BTCUSDT", "2024-03-02", "2024-03-02")) == 10 - n_bad
    q = lake.quarantined("binance_usdm", "BTCUSDT", "2024-03-02")
    assert len(q) == n_bad and set(q["source"]) == {"binance_usdm"} and 7 in set(q["row"])
    rep = read_quality(lake, lake.partitions("bronze")[0])
    assert sum(rep["quarantined_rows"].values()) == n_bad


# ---------------------------------------------------------------------------- Bybit and OKX archives
BYBIT_HEADER = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"


def _bybit_root(tmp_path: Path, bad: str) -> Path:
    t0 = 1709337600.0
    rows = [
        f"{t0 + i:.4f},BTCUSDT,{'Buy' if i % 2 else 'Sell'},0.{i + 1},6000{i}.5,PlusTick,"
        f"{i:08x}-1111-2222-3333-444455556666,1,0.1,6000"
        for i in range(10)
    ]
    rows[3] = bad
    path = tmp_path / "bybit" / "trading/BTCUSDT/BTCUSDT2024-03-02.csv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(("\n".join([BYBIT_HEADER, *rows]) + "\n").encode(), mtime=0))
    return tmp_path / "bybit"


@pytest.mark.parametrize(
    "bad, says",
    [
        (
            "1709337603.0,BTCUSDT,Buy,0.4,nan,PlusTick,00000003-1111-2222-3333-444455556666,1,0.1,6000",
            "line 5: price nan is not a finite number",
        ),
        (
            "1709337603.0,BTCUSDT,Buy,-0.4,60003.5,PlusTick,00000003-1111-2222-3333-444455556666,1,0.1,6000",
            "line 5: qty -0.4 is not above zero",
        ),
    ],
)
def test_bybit_archive_bad_row_refused_then_quarantined(tmp_path, capsys, bad, says):
    root = _bybit_root(tmp_path, bad)
    lake_dir = tmp_path / "lake"
    argv = [
        "ingest",
        "bybit-archive",
        "--root",
        str(root),
        "--symbol",
        "BTCUSDT",
        "--start",
        "2024-03-02",
        "--end",
        "2024-03-02",
        "--lake",
        str(lake_dir),
    ]
    assert datasets_main(argv) == 1
    err = one_error(capsys.readouterr().err)
    assert err.startswith("Error: BTCUSDT2024-03-02.csv.gz " + says), err
    assert lake_files(lake_dir) == []  # no raw copy, bronze, report or manifest
    assert datasets_main(argv + ["--skip-bad-rows"]) == 0
    lake = Lake(lake_dir)
    assert len(lake.read("bronze", "bybit_linear", "BTCUSDT", "2024-03-02", "2024-03-02")) == 9
    q = lake.quarantined("bybit_linear", "BTCUSDT", "2024-03-02")
    assert q["row"].tolist() == [5] and q["source"].tolist() == ["bybit_archive"]
    assert sum(read_quality(lake, lake.partitions("bronze")[0])["quarantined_rows"].values()) == 1


def test_okx_archive_bad_row_refused(tmp_path, capsys):
    t0 = 1709308800000  # 2024-03-02 00:00 UTC+8 (the file's day starts at 16:00 UTC the day before)
    rows = [
        f"BTC-USDT-SWAP,{500 + i},{'buy' if i % 2 else 'sell'},6000{i}.5,{i + 1},{t0 + 60_000 * i}" for i in range(6)
    ]
    rows[2] = f"BTC-USDT-SWAP,502,buy,-3,3,{t0 + 120_000}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "BTC-USDT-SWAP-trades-2024-03-02.csv",
            "\n".join(["instrument_name,trade_id,side,price,size,created_time", *rows]) + "\n",
        )
    from datasets.sources.okx_archive import okx_relpath

    path = tmp_path / "okx" / okx_relpath("BTC-USDT-SWAP", dt.date(2024, 3, 2))
    path.parent.mkdir(parents=True)
    path.write_bytes(buf.getvalue())
    lake_dir = tmp_path / "lake"
    argv = [
        "ingest",
        "okx-archive",
        "--root",
        str(tmp_path / "okx"),
        "--symbol",
        "BTC-USDT-SWAP",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-02",
        "--lake",
        str(lake_dir),
    ]
    assert datasets_main(argv) == 1
    err = one_error(capsys.readouterr().err)
    assert "BTC-USDT-SWAP-trades-2024-03-02.zip line 4: price -3.0 is not above zero" in err
    assert lake_files(lake_dir) == []
    assert datasets_main(argv + ["--skip-bad-rows"]) == 0
    assert len(Lake(lake_dir).quarantined("okx_swap", "BTCUSDT", "2024-03-01")) == 1


# ---------------------------------------------------------------------------- REST
class _FakeBinance:
    """Answers ``fapiPublicGetAggTrades`` with one page (then nothing), like ccxt's implicit API."""

    id = "binanceusdm"

    def __init__(self, rows: list[dict]):
        self.rows, self.calls = rows, 0

    def fapiPublicGetAggTrades(self, params):  # noqa: N802
        self.calls += 1
        return self.rows if "startTime" in params and self.calls == 1 else []


def _rest_rows(bad: dict) -> list[dict]:
    t0 = 1709337600000
    rows = [
        {"a": 100 + i, "p": f"6000{i}.5", "q": f"0.{i + 1}", "T": t0 + 1000 * i, "m": bool(i % 2)} for i in range(8)
    ]
    rows[4].update(bad)
    return rows


@pytest.mark.parametrize(
    "bad, says",
    [({"p": "NaN"}, "trade 5: price nan"), ({"a": 10**30}, "trade 5: trade_id 1"), ({"q": "-2"}, "trade 5: qty -2.0")],
)
def test_rest_bad_trade_is_refused_then_quarantined(bad, says):
    from datasets.sources.rest import ingest_rest

    lake = Lake("memory://")
    span = dict(since_ms=1709337600000, until_ms=1709337600000 + 3_600_000, progress=False, rate_limit_ms=0)
    with pytest.raises(ValueError, match=re.escape("binance_usdm BTCUSDT REST trades " + says)):
        ingest_rest(lake, "binance_usdm", "BTCUSDT", client=_FakeBinance(_rest_rows(bad)), **span)
    assert lake.store.list() == []
    ingest_rest(lake, "binance_usdm", "BTCUSDT", client=_FakeBinance(_rest_rows(bad)), skip_bad_rows=True, **span)
    assert len(lake.read("bronze", "binance_usdm", "BTCUSDT", "2024-03-02", "2024-03-02")) == 7
    assert lake.quarantined("binance_usdm", "BTCUSDT", "2024-03-02")["row"].tolist() == [5]


def test_screen_trades_rules():
    from datasets.validate import screen_trades

    now = 1_800_000_000_000
    df = pd.DataFrame(
        {
            "exchange": "x",
            "symbol": "S",
            "trade_id": [1, 2, 3, 4, 5],
            "ts_ms": [now, now + 86_400_001, 1_230_767_999_999, now - 5, now],
            "price": [1.0, 1.0, 1.0, 1.0, 1.0],
            "qty": [1.0, 1.0, 1.0, 1.0, 1.0],
            "side": [1, 1, -1, 2, -1],
        }
    )
    got = screen_trades(df, what="f", skip_bad_rows=True, now_ms=now)
    assert got.bad["reason"].tolist() == ["ts_in_future", "ts_before_2009", "side_not_pm1"]
    assert got.bad["row"].tolist() == [2, 3, 4] and got.good["trade_id"].tolist() == [1, 5]


# ---------------------------------------------------------------------------- concurrency
# `datasets ingest recording` on a store as slow as a remote one: each partition write takes 0.3 s
# more between reading what is stored and putting the merge, so that two ingests overlap there.
SLOW_STORE_INGEST = r"""
import sys, time
import datasets.lake._lake as L
real = L._to_parquet_bytes
def slow(*a, **k):
    time.sleep(0.3)
    return real(*a, **k)
L._to_parquet_bytes = slow
from datasets.cli import main
sys.exit(main(["ingest", "recording", sys.argv[1], "--lake", sys.argv[2]]))
"""


def test_two_recordings_of_one_day_ingested_at_once_keep_every_row(tmp_path):
    header, body = LINES[0], [line for line in LINES[1:] if line]
    halves = [tmp_path / "even.txt", tmp_path / "odd.txt"]
    for i, path in enumerate(halves):
        path.write_text("\n".join([header, *body[i::2]]) + "\n")
    full = tmp_path / "full"
    assert datasets_main(["ingest", "recording", str(MULTI), "--lake", str(full)]) == 0
    want = {p.symbol: len(Lake(full).read_partition(p)) for p in Lake(full).partitions("bronze")}
    for rnd in range(3):
        lake_dir = tmp_path / f"lake{rnd}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SLOW_STORE_INGEST, str(h), str(lake_dir)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for h in halves
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-800:] for o in outs]
        lake = Lake(lake_dir)
        got = {p.symbol: len(lake.read_partition(p)) for p in lake.partitions("bronze")}
        assert got == want, f"round {rnd}"


# ---------------------------------------------------------------------------- temp folders
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


SLOW_INGEST = r"""
import sys, time
import datasets.sources.binance_archive as ba
real = ba.parse_aggtrades_zip
def slow(*a, **k):
    print("PARSING", flush=True)
    time.sleep(60)
    return real(*a, **k)
ba.parse_aggtrades_zip = slow
ba.ingest_binance_archive(sys.argv[1], "BTCUSDT", "2024-03-02", "2024-03-02", sys.argv[2])
"""


def test_ingest_temp_dirs_are_removed_on_sigterm_and_stale_ones_at_the_next_start(tmp_path):
    root = _binance_root(tmp_path, None)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    stale = tmpdir / f"whalebt-ingest-{_dead_pid()}-0123abcd"
    (stale / "big").mkdir(parents=True)
    alive = tmpdir / f"whalebt-ingest-{os.getpid()}-0123abcd"  # a running process's: kept
    alive.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_INGEST, str(root), str(tmp_path / "lake")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "PARSING", proc.stderr.read()
        assert not stale.exists() and alive.exists()
        mine = [p for p in tmpdir.iterdir() if p.name.startswith(f"whalebt-ingest-{proc.pid}-")]
        assert len(mine) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
    finally:
        proc.kill()
    assert sorted(p.name for p in tmpdir.iterdir()) == [alive.name]


def test_run_folder_replacement_never_leaves_no_folder_and_cleans_stale_scratch(tmp_path):
    from bt.runfolder import write_run_folder

    dest = tmp_path / "results" / "run-1"
    stale = tmp_path / "results" / f".run-1.tmp-{_dead_pid()}-0123abcd"
    stale.mkdir(parents=True)
    write_run_folder(dest, lambda d: (d / "metrics.json").write_text("0"))
    assert not stale.exists() and (dest / "metrics.json").read_text() == "0"
    missing, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (dest / "metrics.json").exists():
                missing.append(time.monotonic())

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(1, 200):
            write_run_folder(dest, lambda d, i=i: (d / "metrics.json").write_text(str(i)))
    finally:
        stop.set()
        t.join()
    assert missing == [] and (dest / "metrics.json").read_text() == "199"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["run-1"]
    with pytest.raises(RuntimeError):
        write_run_folder(dest, lambda d: (_ for _ in ()).throw(RuntimeError("boom")))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["run-1"] and (dest / "metrics.json").read_text() == "199"


KILLED_RUN = r"""
import sys, time
from pathlib import Path
from bt.runfolder import write_run_folder
def fill(d):
    (d / "half").write_text("x")
    print("FILLING", flush=True)
    time.sleep(60)
write_run_folder(Path(sys.argv[1]), fill)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_folder_writer_leaves_nothing_after_the_next_start(tmp_path, sig):
    from bt.runfolder import write_run_folder

    dest = tmp_path / "results" / "run-2"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(dest)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "FILLING"
    proc.send_signal(sig)
    proc.wait(30)
    left = sorted(p.name for p in dest.parent.iterdir())
    if sig == signal.SIGTERM:
        assert left == []  # cleaned before exiting
    else:
        assert len(left) == 1 and left[0].startswith(".run-2.tmp-")
    write_run_folder(dest, lambda d: (d / "ok").write_text("1"))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["run-2"]


# ---------------------------------------------------------------------------- config and status
def test_duplicate_yaml_keys_are_refused_naming_key_and_line(tmp_path):
    from bt.config import ConfigError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text((ROOT / "configs" / sorted(os.listdir(ROOT / "configs"))[0]).read_text() + "name: again\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'name' \(first at line \d+\)"):
        load_config(cfg)
    cfg.write_text("name: x\ndata:\n  exchange: a\n  exchange: b\n")
    with pytest.raises(ConfigError, match=r"line 4.*duplicate key 'exchange' \(first at line 3\)"):
        load_config(cfg)


def test_status_of_a_missing_lake_is_an_error(tmp_path, capsys):
    assert datasets_main(["status", "--lake", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: --lake ") and "no such path" in err and len(err.splitlines()) == 1
