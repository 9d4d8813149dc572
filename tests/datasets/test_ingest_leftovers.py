"""Issue 14 leftovers in ingest and the lake: the Bybit/OKX archives verify every file of a range
before the first write; quality reports are refreshed under the partition's writer lock;
`bt run` removes old-style run-folder scratch directories; `datasets ingest funding --skip-bad-rows`."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import os
import re
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.cli import main as datasets_main
from datasets.lake import Lake, Partition
from datasets.quality import read_quality

BYBIT_HEADER = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"
DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]


def one_error(err: str) -> str:
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if "Error" in line or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err[-2000:]
    return lines[0]


def lake_files(lake_dir: Path) -> list[str]:
    if not lake_dir.exists():
        return []
    return sorted(str(p.relative_to(lake_dir)) for p in lake_dir.rglob("*") if p.is_file() and ".locks" not in p.parts)


def _bybit_rows(day: dt.date, n: int = 8) -> list[str]:
    t0 = (day - dt.date(1970, 1, 1)).days * 86_400.0
    return [
        f"{t0 + 60 * i:.4f},BTCUSDT,{'Buy' if i % 2 else 'Sell'},0.{i + 1},6000{i}.5,PlusTick,"
        f"{day.day:04x}{i:04x}-1111-2222-3333-444455556666,1,0.1,6000"
        for i in range(n)
    ]


def _bybit_root(tmp_path: Path, last: bytes | None = None) -> Path:
    """Three daily files; the last one replaced by ``last`` when given."""
    root = tmp_path / "bybit"
    for day in DAYS:
        path = root / f"trading/BTCUSDT/BTCUSDT{day}.csv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = gzip.compress(("\n".join([BYBIT_HEADER, *_bybit_rows(day)]) + "\n").encode(), mtime=0)
        path.write_bytes(last if (last is not None and day == DAYS[-1]) else body)
    return root


def _bad_last_bybit_file() -> bytes:
    rows = _bybit_rows(DAYS[-1])
    rows[5] = rows[5].replace(",60005.5,", ",-60005.5,")  # column price of line 7
    assert rows[5] != _bybit_rows(DAYS[-1])[5]
    return gzip.compress(("\n".join([BYBIT_HEADER, *rows]) + "\n").encode(), mtime=0)


def _truncated_last_bybit_file() -> bytes:
    whole = gzip.compress(("\n".join([BYBIT_HEADER, *_bybit_rows(DAYS[-1], 400)]) + "\n").encode(), mtime=0)
    return whole[: len(whole) // 2]


@pytest.mark.parametrize(
    "last, says",
    [
        (_bad_last_bybit_file, "BTCUSDT2024-03-03.csv.gz line 7: price -60005.5 is not above zero"),
        (_truncated_last_bybit_file, "BTCUSDT2024-03-03.csv.gz from"),
    ],
    ids=["bad row", "truncated gzip"],
)
def test_bybit_bad_file_late_in_a_range_leaves_no_day_ingested(tmp_path, capsys, last, says):
    root = _bybit_root(tmp_path, last())
    lake_dir = tmp_path / "lake"
    argv = [
        "ingest",
        "bybit-archive",
        "--root",
        str(root),
        "--symbol",
        "BTCUSDT",
        "--start",
        str(DAYS[0]),
        "--end",
        str(DAYS[-1]),
        "--lake",
        str(lake_dir),
    ]
    assert datasets_main(argv) == 1
    err = one_error(capsys.readouterr().err)
    assert says in err, err
    assert lake_files(lake_dir) == []  # days 1 and 2 were fine, yet nothing of the run is stored
    _bybit_root(tmp_path)  # the corrected file: the whole range goes in
    assert datasets_main(argv) == 0
    lake = Lake(lake_dir)
    assert [p.date for p in lake.partitions("bronze")] == DAYS
    assert len(lake.read("bronze", "bybit_linear", "BTCUSDT", DAYS[0], DAYS[-1])) == 24
    assert all(read_quality(lake, p)["rows"] == 8 for p in lake.partitions("bronze"))


def _okx_zip(day: dt.date, bad: bool = False) -> bytes:
    t0 = ((day - dt.date(1970, 1, 1)).days * 86_400 - 8 * 3600) * 1000  # the file's UTC+8 day
    rows = [
        f"BTC-USDT-SWAP,{day.day * 100 + i},{'buy' if i % 2 else 'sell'},6000{i}.5,{i + 1},{t0 + 3_600_000 * i}"
        for i in range(6)
    ]
    if bad:
        rows[4] = rows[4].replace(",60004.5,", ",nan,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            f"BTC-USDT-SWAP-trades-{day}.csv",
            "\n".join(["instrument_name,trade_id,side,price,size,created_time", *rows]) + "\n",
        )
    return buf.getvalue()


def test_okx_bad_file_late_in_a_range_leaves_no_day_ingested(tmp_path, capsys):
    from datasets.sources.okx_archive import okx_relpath

    files = [*DAYS, DAYS[-1] + dt.timedelta(days=1)]  # UTC days 1..3 need files 1..4

    def write(bad_last: bool) -> None:
        for day in files:
            path = tmp_path / "okx" / okx_relpath("BTC-USDT-SWAP", day)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_okx_zip(day, bad=bad_last and day == files[-1]))

    write(bad_last=True)
    lake_dir = tmp_path / "lake"
    argv = [
        "ingest",
        "okx-archive",
        "--root",
        str(tmp_path / "okx"),
        "--symbol",
        "BTC-USDT-SWAP",
        "--start",
        str(DAYS[0]),
        "--end",
        str(DAYS[-1]),
        "--lake",
        str(lake_dir),
    ]
    assert datasets_main(argv) == 1
    err = one_error(capsys.readouterr().err)
    assert "BTC-USDT-SWAP-trades-2024-03-04.zip line 6: price nan is not a finite number" in err, err
    assert lake_files(lake_dir) == []
    assert datasets_main(argv + ["--skip-bad-rows"]) == 0
    lake = Lake(lake_dir)
    assert [p.date for p in lake.partitions("bronze")] == DAYS
    assert len(lake.quarantined("okx_swap", "BTCUSDT", DAYS[-1])) == 1


# ---------------------------------------------------------------------------- quality reports under the lock
def _trades(day: dt.date, ids: range, exchange: str = "bybit_linear") -> pd.DataFrame:
    t0 = (day - dt.date(1970, 1, 1)).days * 86_400_000
    n = len(ids)
    return pd.DataFrame(
        {
            "exchange": exchange,
            "symbol": "BTCUSDT",
            "trade_id": np.array(ids, np.int64),
            "ts_ms": t0 + 1000 * np.arange(1, n + 1, dtype=np.int64) + 7 * np.array(ids, np.int64),
            "price": 60000.5 + np.arange(n),
            "qty": 0.1 + np.arange(n) / 10,
            "side": np.where(np.arange(n) % 2, 1, -1).astype(np.int8),
        }
    )


def _report_matches_partition(lake: Lake, p: Partition) -> None:
    rep = read_quality(lake, p)
    assert rep is not None
    assert rep["rows"] == len(lake.read_partition(p))
    assert rep["content_sha256"] == lake.partition_meta(p)["content_sha256"]


def test_refresh_quality_takes_the_partition_lock_so_a_concurrent_merge_keeps_its_report(tmp_path, monkeypatch):
    from datasets.lake._keys import quality_key
    from datasets.quality import refresh_quality

    lake = Lake(tmp_path / "lake")
    day = DAYS[0]
    (r,) = lake.write_trades(_trades(day, range(1, 6)), id_space="bybit_match_uuid")
    p = r.partition
    lake.store.delete(quality_key(p))  # stale: refresh_quality recomputes it
    real = lake.read_with_meta
    other: list[threading.Thread] = []

    def read_then_let_another_ingest_in(part, *a, **k):
        got = real(part, *a, **k)
        if not other:  # the first read: refresh_quality's
            # a second ingest merges rows into the same day while the report is being computed
            t = threading.Thread(
                target=lambda: lake.write_trades(_trades(day, range(100, 104)), id_space="bybit_match_uuid")
            )
            other.append(t)
            t.start()
            t.join(1.5)  # it finishes now unless refresh_quality holds the partition's lock
        return got

    monkeypatch.setattr(lake, "read_with_meta", read_then_let_another_ingest_in)
    refresh_quality(lake, [p], workers=1)
    other[0].join(30)
    assert len(lake.read_partition(p)) == 9
    _report_matches_partition(lake, p)  # the report describes all 9 rows, not the 5 read before


def test_archive_ingest_leaves_the_report_of_a_concurrent_writer(tmp_path, monkeypatch):
    root = _bybit_root(tmp_path)
    lake = Lake(tmp_path / "lake")
    real = lake.write_trades

    def write_then_another_ingest_merges(df, **kw):
        out = real(df, **kw)
        day = out[0].partition.date
        real(_trades(day, range(1, 4)), id_space="bybit_match_uuid")  # lands right after our write
        return out

    monkeypatch.setattr(lake, "write_trades", write_then_another_ingest_merges)
    from datasets.sources.bybit_archive import ingest_bybit_archive

    ingest_bybit_archive(str(root), "BTCUSDT", DAYS[0], DAYS[0], lake, progress=False)
    (p,) = lake.partitions("bronze")
    assert len(lake.read_partition(p)) == 11
    _report_matches_partition(lake, p)


# ---------------------------------------------------------------------------- funding --skip-bad-rows
H = 3_600_000
JUL = 1719792000000  # 2024-07-01 00:00 UTC


def _funding_zip(root: Path, month: str, lines: list[str]) -> None:
    from datasets.exchanges.binance import funding_relpath

    rel = funding_relpath("BTCUSDT", int(month[:4]), int(month[5:]))
    name = rel.rsplit("/", 1)[-1]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            name.replace(".zip", ".csv"),
            "\n".join(["calc_time,funding_interval_hours,last_funding_rate", *lines]) + "\n",
        )
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    path.with_name(name + ".CHECKSUM").write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {name}\n")


@pytest.mark.parametrize(
    "bad, says, reason",
    [
        ("nan", "line 4: rate nan is not a finite number", "funding_rate_not_finite"),
        ("abc", "line 4: rate abc is not a finite number", "funding_rate_not_finite"),
        ("2.5", "line 4: rate 2.5 is not between -1 and 1", "funding_rate_out_of_range"),
    ],
)
def test_funding_archive_bad_row_refused_then_quarantined_and_counted(tmp_path, capsys, bad, says, reason):
    root = tmp_path / "archive"
    jul = [f"{JUL + 8 * H * i + 3},8,0.0001" for i in range(6)]
    jul[2] = f"{JUL + 16 * H},8,{bad}"
    _funding_zip(root, "2024-07", jul)
    aug = 1722470400000  # 2024-08-01
    _funding_zip(root, "2024-08", [f"{aug + 8 * H * i},8,-0.00002" for i in range(3)])
    lake_dir = tmp_path / "lake"
    lake = Lake(lake_dir)
    (bronze,) = lake.write_trades(
        _trades(dt.date(2024, 7, 1), range(1, 5), "binance_usdm"), id_space="binance_agg_trade"
    )
    before = lake_files(lake_dir)
    # The bad month comes first (months are stored one by one, each checked whole before its write).
    args = [
        "ingest",
        "funding",
        "--exchange",
        "binance_usdm",
        "--symbol",
        "BTCUSDT",
        "--start",
        "2024-07-01",
        "--end",
        "2024-08-31",
        "--root",
        str(root),
        "--lake",
        str(lake_dir),
        "--quiet",
    ]
    assert datasets_main(args) == 1
    err = one_error(capsys.readouterr().err)
    assert err.startswith("Error: BTCUSDT-fundingRate-2024-07.zip " + says), err
    assert "--skip-bad-rows" in err
    assert lake_files(lake_dir) == before  # no raw copy, no funding month
    assert datasets_main(args + ["--skip-bad-rows"]) == 0
    out = capsys.readouterr().out
    assert "8 funding times" in out and "1 bad rows quarantined under quarantine/funding_" in out, out
    from datasets.sources.funding import read_funding

    assert len(read_funding(lake, "binance_usdm", "BTCUSDT")) == 8
    q = lake.quarantined("binance_usdm", "BTCUSDT", "2024-07-01")
    assert q["row"].tolist() == [4] and q["reason"].tolist() == [reason] and q["source"].tolist() == ["funding_archive"]
    assert read_quality(lake, bronze.partition)["quarantined_rows"] == {reason: 1}


class _FakeBinanceFunding:
    id = "binanceusdm"

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def fapiPublicGetFundingRate(self, params):  # noqa: N802
        return self.rows


def test_funding_rest_bad_row_refused_then_quarantined():
    from datasets.sources.funding import ingest_funding_rest, read_funding

    rows = [{"fundingTime": JUL + 8 * H * i, "fundingRate": "0.0001"} for i in range(5)]
    rows[3]["fundingTime"] = 10**30
    lake = Lake("memory://funding-rest-bad")
    span = (JUL, JUL + 3 * 24 * H)
    with pytest.raises(ValueError, match=re.escape("binance_usdm BTCUSDT funding answer row 4: ts_ms 1000000000000")):
        ingest_funding_rest(lake, "binance_usdm", "BTCUSDT", *span, client=_FakeBinanceFunding(rows))
    assert lake.store.list() == []
    rep = ingest_funding_rest(
        lake, "binance_usdm", "BTCUSDT", *span, client=_FakeBinanceFunding(rows), skip_bad_rows=True
    )
    assert rep.quarantined == 1 and len(read_funding(lake, "binance_usdm", "BTCUSDT")) == 4
    assert [k.split("/")[1] for k in lake.store.list("quarantine/")] == ["funding_rest"]
