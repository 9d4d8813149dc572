"""Data-quality reports, lake status, lineage and retention."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest_azurite import azure_lake_uri, azurite_conn_str  # noqa: F401  (fixtures)
from datasets.cli import main as datasets_main
from datasets.lake import Lake, LakeError, Partition
from datasets.quality import (
    lake_status,
    lineage,
    partition_quality,
    quality_key,
    read_quality,
    refresh_quality,
    write_quality,
)
from datasets.retention import (
    PROTECTED_KEY,
    apply_retention,
    key_date,
    load_protection,
    plan_retention,
    protect,
    unprotect,
)

DAY = dt.date(2024, 3, 1)
T0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)


def frame(ids, ts, price=None, qty=None, side=None, exchange="binance_usdm", symbol="BTCUSDT") -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "exchange": exchange,
            "symbol": symbol,
            "trade_id": np.asarray(ids, np.int64),
            "ts_ms": np.asarray(ts, np.int64),
            "price": np.full(n, 100.0) if price is None else np.asarray(price, float),
            "qty": np.full(n, 1.0) if qty is None else np.asarray(qty, float),
            "side": np.ones(n, np.int8) if side is None else np.asarray(side, np.int8),
        }
    )


def day_trades(day: str, n: int = 40, first_id: int = 1, exchange="binance_usdm", symbol="BTCUSDT") -> pd.DataFrame:
    t0 = int(pd.Timestamp(day, tz="UTC").value // 1_000_000)
    ts = t0 + np.linspace(0, 86_399_000, n).astype(np.int64)
    return frame(np.arange(first_id, first_id + n), ts, exchange=exchange, symbol=symbol)


# ---------------------------------------------------------------------------- quality checks
def test_quality_report_counts_each_problem_by_hand():
    p = Partition("bronze", "binance_usdm", "BTCUSDT", DAY)
    df = frame(
        ids=[10, 11, 11, 15, 16, 17, 18],  # one duplicate, a hole of 3 (12, 13, 14)
        ts=[T0 + 500, T0 + 1_200, T0 + 1_900, T0 + 1_800, T0 + 60_000, T0 - 5, T0 + 86_400_000],
        price=[1.0, 2.0, 0.0, np.nan, 3.0, 3.0, 3.0],  # zero and NaN
        qty=[1.0, -1.0, 1.0, 1.0, 0.0, 1.0, 1.0],  # negative and zero
        side=[1, -1, 1, 1, 2, -1, 1],  # a 2
    )
    q = partition_quality(df, p, sha256="abc")
    assert {
        k: q[k]
        for k in (
            "rows",
            "first_ts_ms",
            "last_ts_ms",
            "id_gaps",
            "missing_ids",
            "duplicate_ids",
            "non_positive_prices",
            "non_positive_qty",
            "out_of_order_ts",
            "ts_outside_date",
            "bad_sides",
            "seconds_without_trades",
            "content_sha256",
            "ids_sequential",
        )
    } == {
        "rows": 7,
        "first_ts_ms": T0 - 5,
        "last_ts_ms": T0 + 86_400_000,
        "id_gaps": 1,
        "missing_ids": 3,
        "duplicate_ids": 1,
        "non_positive_prices": 2,
        "non_positive_qty": 2,
        "out_of_order_ts": 2,  # 1_900 -> 1_800 and 60_000 -> -5
        "ts_outside_date": 2,
        "bad_sides": 1,
        "seconds_without_trades": 86_400 - 3,  # seconds 0, 1 and 60 of the day have trades
        "content_sha256": "abc",
        "ids_sequential": True,
    }
    assert q["longest_quiet_s"] == pytest.approx((86_400_000 - 60_000) / 1000)
    assert q["issues"] == [
        "duplicate_ids",
        "missing_ids",
        "non_positive_prices",
        "non_positive_qty",
        "out_of_order_ts",
        "ts_outside_date",
        "bad_sides",
    ]


def test_bybit_ids_are_not_checked_for_holes_and_empty_days_are_all_quiet():
    q = partition_quality(
        frame([5, 900, 7], [T0, T0 + 1, T0 + 2], exchange="bybit_linear"),
        Partition("bronze", "bybit_linear", "BTCUSDT", DAY),
    )
    assert (q["ids_sequential"], q["id_gaps"], q["missing_ids"], q["issues"]) == (False, None, None, [])
    e = partition_quality(frame([], []), Partition("bronze", "binance_usdm", "BTCUSDT", DAY))
    assert (e["rows"], e["seconds_without_trades"], e["longest_quiet_s"], e["first_ts_ms"]) == (
        0,
        86_400,
        86_400.0,
        None,
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 86_399_999), min_size=1, max_size=200))
def test_coverage_matches_a_slow_reference(offsets):
    ts = np.sort(np.asarray(offsets, np.int64)) + T0
    df = frame(np.arange(len(ts)), ts)
    q = partition_quality(df, Partition("bronze", "binance_usdm", "BTCUSDT", DAY))
    secs = pd.Series(pd.to_datetime(ts, unit="ms", utc=True)).dt.floor("1s").nunique()
    edges = [T0, *ts.tolist(), T0 + 86_400_000]
    assert q["seconds_without_trades"] == 86_400 - secs
    assert q["longest_quiet_s"] == max(b - a for a, b in zip(edges, edges[1:])) / 1000
    assert q["issues"] == [] and q["missing_ids"] == 0


def test_reports_follow_rewrites_and_stay_put_otherwise(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    r = lake.write_trades(day_trades("2024-03-01"))[0]
    (first,) = refresh_quality(lake)
    assert first["content_sha256"] == r.sha256 and first["rows"] == 40
    stored = lake.store.get(quality_key(r.partition))
    refresh_quality(lake)  # current: not recomputed
    assert lake.store.get(quality_key(r.partition)) == stored
    lake.write_trades(day_trades("2024-03-01", n=5, first_id=100))  # merge: partition changes
    (second,) = refresh_quality(lake)
    assert second["rows"] == 45 and second["content_sha256"] != first["content_sha256"]
    lake.store.put(quality_key(r.partition), b"{not json")  # a damaged report is recomputed
    assert read_quality(lake, r.partition) is None
    assert refresh_quality(lake)[0]["rows"] == 45


def test_lineage_names_each_partition_once_with_its_content_hash(tmp_path):
    a, b = Lake(str(tmp_path / "a")), Lake("memory://lineage-b")
    for lake in (a, b):
        lake.write_trades(pd.concat([day_trades("2024-03-01"), day_trades("2024-03-02", first_id=500)]))
    parts = a.partitions("bronze")
    got = lineage(a, parts + parts[:1])
    assert [g["key"] for g in got] == [p.key for p in parts]
    assert [g["rows"] for g in got] == [40, 40]
    assert [g["sha256"] for g in got] == [a.partition_meta(p)["content_sha256"] for p in parts]
    assert lineage(b, b.partitions("bronze")) == got  # same data, same lineage on another backend


# ---------------------------------------------------------------------------- status
def test_status_table_json_and_refresh(tmp_path, capsys):
    lake = Lake(str(tmp_path / "lake"))
    lake.write_trades(
        pd.concat(
            [
                day_trades("2024-03-01"),
                day_trades("2024-03-03", first_id=100),
                day_trades("2024-03-01", exchange="okx_swap", symbol="ETHUSDT"),
            ]
        )
    )
    lake.put_raw("binance_usdm", "data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-03-01.zip", b"z")
    bad = frame([1, 2, 2], [T0 + 10, T0 + 5, T0 + 5], exchange="okx_swap", symbol="SOLUSDT")
    lake.write("bronze", bad, "okx_swap", "SOLUSDT", DAY)  # bypasses write_trades' sorting and dedup
    argv = ["status", "--lake", str(tmp_path / "lake")]
    assert datasets_main(argv) == 0
    out, err = capsys.readouterr()
    assert "binance_usdm/BTCUSDT" in out and "2024-03-01..2024-03-03" in out
    assert err.strip() == ""  # every bronze write leaves its report beside it
    lake.store.delete(quality_key(Partition("bronze", "okx_swap", "SOLUSDT", DAY)))
    assert datasets_main(argv) == 0
    assert capsys.readouterr().err.strip() == "1 bronze partitions have no current quality report; run with --refresh"
    assert datasets_main(argv + ["--refresh", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by = {(r["layer"], r["group"]): r for r in doc["layers"]}
    assert by[("bronze", "binance_usdm/BTCUSDT")] | {"bytes": None} == {
        "layer": "bronze",
        "group": "binance_usdm/BTCUSDT",
        "partitions": 2,
        "first": "2024-03-01",
        "last": "2024-03-03",
        "missing_days": 1,
        "rows": 80,
        "bytes": None,
        "checked": 2,
        "issues": {},
    }
    assert by[("bronze", "okx_swap/SOLUSDT")]["issues"] == {"duplicate_ids": 1, "out_of_order_ts": 1}
    assert by[("raw", "binance_usdm")]["partitions"] == 1 and by[("raw", "binance_usdm")]["first"] == "2024-03-01"
    assert datasets_main(argv + ["--layer", "bronze", "--detail", "--symbol", "SOLUSDT"]) == 0
    out = capsys.readouterr().out
    assert "duplicate_ids, out_of_order_ts" in out
    assert datasets_main(argv + ["--layer", "bronz"]) == 1
    assert capsys.readouterr().err.strip() == "Error: --layer takes raw, bronze, silver, gold; got bronz"


# ---------------------------------------------------------------------------- retention
def test_key_dates():
    assert key_date("bronze/exchange=x/symbol=Y/date=2024-03-01/part-0.parquet") == DAY
    assert key_date("raw/bybit_archive/trading/BTCUSDT/BTCUSDT2024-03-01.csv.gz") == DAY
    assert key_date("raw/binance_usdm/data/futures/um/monthly/aggTrades/X/X-aggTrades-2024-02.zip") == dt.date(
        2024, 2, 29
    )
    assert key_date("raw/okx_archive/trades/daily/20240301/BTC-USDT-SWAP-trades-2024-03-01.zip") == DAY
    assert key_date("raw/recordings/binance_usdm_btcusdt_2024-08-08_stream.txt.gz") == dt.date(2024, 8, 8)
    assert key_date("raw/recordings/OKX.ws.1.0") is None


def _lake_with_history(root) -> Lake:
    lake = Lake(str(root))
    lake.write_trades(
        pd.concat(
            [
                day_trades(d, first_id=i * 100)
                for i, d in enumerate(["2024-01-01", "2024-01-02", "2024-03-30", "2024-03-31"])
            ]
        )
    )
    refresh_quality(lake)
    for d in ("2024-01-01", "2024-03-31"):
        lake.put_raw("bybit_archive", f"trading/BTCUSDT/BTCUSDT{d}.csv.gz", d.encode())
    lake.put_raw("recordings", "OKX.ws.1.0", b"no date")
    return lake


def test_retain_dry_run_protection_and_apply(tmp_path, capsys):
    lake = _lake_with_history(tmp_path / "lake")
    old = [p for p in lake.partitions("bronze") if p.date < dt.date(2024, 3, 1)]
    protect(lake, [old[0].key], "run-1", model="models:/whale/1")
    argv = [
        "retain",
        "--lake",
        str(tmp_path / "lake"),
        "--layer",
        "bronze",
        "--older-than",
        "30d",
        "--today",
        "2024-04-01",
    ]
    before = {k: lake.store.get(k) for k in lake.store.list()}
    assert datasets_main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"keep-protected  2024-01-01  {old[0].key}  (protected by run run-1)",
        f"delete          2024-01-02  {old[1].key}",
        f"dry run on {lake.uri}: 1 delete, 1 keep-protected. Re-run with --apply to do it.",
    ]
    assert {k: lake.store.get(k) for k in lake.store.list()} == before  # a dry run changes nothing
    assert datasets_main(argv + ["--apply"]) == 0
    assert [p.date.isoformat() for p in lake.partitions("bronze")] == ["2024-01-01", "2024-03-30", "2024-03-31"]
    assert not lake.store.exists(quality_key(old[1]))  # its report went with it
    assert unprotect(lake, "run-1") and not unprotect(lake, "run-1")
    assert datasets_main(argv) == 0
    assert "1 delete" in capsys.readouterr().out.splitlines()[-1]


def test_retain_archives_raw_copy_verify_delete_and_keeps_undated(tmp_path, capsys):
    lake = _lake_with_history(tmp_path / "lake")
    cold = tmp_path / "cold"
    argv = [
        "retain",
        "--lake",
        str(tmp_path / "lake"),
        "--layer",
        "raw",
        "--older-than",
        "30d",
        "--today",
        "2024-04-01",
        "--archive-to",
        str(cold),
        "--apply",
    ]
    assert datasets_main(argv) == 0
    key = "raw/bybit_archive/trading/BTCUSDT/BTCUSDT2024-01-01.csv.gz"
    assert (cold / key).read_bytes() == b"2024-01-01"
    assert not lake.store.exists(key)
    assert lake.store.exists("raw/recordings/OKX.ws.1.0")  # no date in its name: never aged out
    assert lake.store.exists("raw/bybit_archive/trading/BTCUSDT/BTCUSDT2024-03-31.csv.gz")
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{lake.uri}: 0 deleted, 1 archived to {cold} (0.0 MB), 0 kept as protected, 0 failed"
    )
    # a different file already in the archive under that name: kept on both sides, reported
    lake.put_raw("bybit_archive", "trading/BTCUSDT/BTCUSDT2024-01-01.csv.gz", b"other bytes")
    assert datasets_main(argv) == 1
    err = capsys.readouterr().err
    assert f"warning: {key}: {cold}/{key} exists with other content; kept both" in err
    assert err.strip().endswith("Error: 1 keys could not be archived and were kept; see the warnings above")
    assert lake.store.get(key) == b"other bytes" and (cold / key).read_bytes() == b"2024-01-01"


def test_retain_refuses_a_broken_protection_file_and_bad_ages(tmp_path, capsys):
    lake = _lake_with_history(tmp_path / "lake")
    lake.store.put(PROTECTED_KEY, b'{"runs": "all"}')
    with pytest.raises(LakeError, match="registry/protected.json cannot be read"):
        load_protection(lake)
    base = ["retain", "--lake", str(tmp_path / "lake"), "--layer", "bronze"]
    assert datasets_main(base + ["--older-than", "90d"]) == 1
    assert "refuses to guess what is protected" in capsys.readouterr().err
    assert datasets_main(base + ["--older-than", "36h"]) == 1
    assert capsys.readouterr().err.strip() == "Error: --older-than counts whole days, like 90d; got '36h'"


def test_force_includes_protected_and_archive_into_the_lake_itself_is_refused(tmp_path):
    lake = _lake_with_history(tmp_path / "lake")
    protect(lake, [], "run-2", prefixes=["bronze/exchange=binance_usdm/"])
    plan = plan_retention(lake, "bronze", 30, today=dt.date(2024, 4, 1))
    assert {a.action for a in plan} == {"keep-protected"}
    plan = plan_retention(lake, "bronze", 30, today=dt.date(2024, 4, 1), force=True, archive=True)
    assert [a.action for a in plan] == ["archive", "archive"]
    with pytest.raises(LakeError, match="is the lake itself"):
        apply_retention(lake, plan, archive_to=str(tmp_path / "lake"), progress=False)


@pytest.mark.services
def test_retain_archives_from_azurite_to_another_container(azure_lake_uri, tmp_path):
    lake = Lake(azure_lake_uri)
    lake.write_trades(pd.concat([day_trades("2024-01-01"), day_trades("2024-03-31", first_id=500)]))
    cold_uri = f"az://cold{uuid.uuid4().hex[:16]}/whale"  # another container, created on first write
    cold = Lake(cold_uri)
    plan = plan_retention(lake, "bronze", 30, today=dt.date(2024, 4, 1), archive=True)
    res = apply_retention(lake, plan, archive_to=cold_uri, progress=False)
    p = Partition("bronze", "binance_usdm", "BTCUSDT", dt.date(2024, 1, 1))
    assert res.archived == [p.key] and not res.failed
    assert [q.date.isoformat() for q in lake.partitions("bronze")] == ["2024-03-31"]
    pd.testing.assert_frame_equal(
        cold.read_partition(p),
        day_trades("2024-01-01").astype({"exchange": object, "symbol": object}),
        check_dtype=False,
    )
    write_quality(cold, p)
    assert lake_status(cold, ["bronze"])[0]["rows"] == 40
