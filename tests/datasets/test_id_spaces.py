"""One id space per partition: a real recording and an aggTrades archive of the same day never mix.

The recording is the real Binance USD-M BTCUSDT ``@trade`` stream in ``tests/data/real``
(fill ids). The archive is built here from the same trades in Binance's aggTrades format
(aggregate ids that count up by one), as a second source for that day would be.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datasets.cli import main as datasets_main
from datasets.lake import Lake, Partition
from datasets.quality import partition_quality, span_id_report
from datasets.sources.binance_archive import COLUMNS, daily_relpath

REC = Path(__file__).resolve().parents[1] / "data" / "real" / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
DAY = dt.date(2024, 8, 8)
P = Partition("bronze", "binance_usdm", "BTCUSDT", DAY)


def _ingest_recording(lake_dir: Path) -> pd.DataFrame:
    assert datasets_main(["ingest", "recording", str(REC), "--lake", str(lake_dir)]) == 0
    return Lake(lake_dir).read_partition(P)


def _archive_of(rows: pd.DataFrame, root: Path) -> None:
    """The same trades as Binance's daily aggTrades file (ids from 2,300,000,000, consecutive)."""
    n = len(rows)
    csv = pd.DataFrame(
        {
            "agg_trade_id": 2_300_000_000 + np.arange(n),
            "price": rows["price"].to_numpy(),
            "quantity": rows["qty"].to_numpy(),
            "first_trade_id": rows["trade_id"].to_numpy(),
            "last_trade_id": rows["trade_id"].to_numpy(),
            "transact_time": rows["ts_ms"].to_numpy(),
            "is_buyer_maker": rows["side"].to_numpy() < 0,
        }
    )
    text = (
        ",".join(COLUMNS)
        + "\n"
        + csv.to_csv(index=False, header=False, lineterminator="\n").replace("True", "true").replace("False", "false")
    )
    rel = daily_relpath("BTCUSDT", DAY)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(Path(rel).with_suffix(".csv").name, text)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    path.with_name(path.name + ".CHECKSUM").write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {path.name}\n")


def _archive_argv(root: Path, lake_dir: Path) -> list[str]:
    return [
        "ingest",
        "binance-archive",
        "--root",
        str(root),
        "--symbol",
        "BTCUSDT",
        "--start",
        str(DAY),
        "--end",
        str(DAY),
        "--lake",
        str(lake_dir),
        "--no-progress",
    ]


def test_an_archive_into_a_recorded_day_is_refused_naming_both_id_spaces(tmp_path, capsys):
    lake_dir = tmp_path / "lake"
    rec = _ingest_recording(lake_dir)
    lake = Lake(lake_dir)
    assert lake.partition_meta(P)["id_space"] == "binance_fill"
    before = lake.store.get(P.key)
    _archive_of(rec, tmp_path / "archive")
    capsys.readouterr()
    rc = datasets_main(_archive_argv(tmp_path / "archive", lake_dir))
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("Error:")]
    assert rc == 1 and len(err) == 1, err
    assert "binance_fill" in err[0] and "binance_agg_trade" in err[0] and "--replace" in err[0]
    assert lake.store.get(P.key) == before  # nothing stored changed: the day still has its 10,447 rows
    assert len(lake.read_partition(P)) == len(rec) == 10_447
    # --replace swaps the day for the archive alone: one copy of each trade, aggregate ids
    assert datasets_main(_archive_argv(tmp_path / "archive", lake_dir) + ["--replace"]) == 0
    after = lake.read_partition(P)
    assert len(after) == len(rec) and lake.partition_meta(P)["id_space"] == "binance_agg_trade"
    assert after["trade_id"].min() == 2_300_000_000 and after["trade_id"].is_monotonic_increasing


def test_quality_checks_ids_only_where_they_count_up_and_flags_a_day_stored_twice(tmp_path):
    rec = _ingest_recording(tmp_path / "lake")
    # A clean recording: fill ids have holes by design (merged fills), so no false "missing ids".
    q = partition_quality(rec, P, id_space="binance_fill")
    assert not np.all(np.diff(np.sort(rec["trade_id"].to_numpy())) == 1)  # the holes are there
    assert q["missing_ids"] is None and q["issues"] == []
    # a few real trades repeat another's ms, price, size and side: far below the flag threshold
    assert q["cross_source_duplicates"] < 0.001 * len(rec)
    # The same day as written before id spaces existed: recording + archive rows in one partition.
    agg = rec.assign(trade_id=2_300_000_000 + np.arange(len(rec)))
    both = pd.concat([rec, agg]).sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)
    q2 = partition_quality(both, P)
    assert q2["rows"] == 2 * 10_447 and q2["duplicate_ids"] == 0  # ids alone cannot see it
    assert q2["cross_source_duplicates"] == 10_447 + q["cross_source_duplicates"]  # each copy, plus the coincidences
    assert "cross_source_duplicates" in q2["issues"]
    # span_id_report (bt audit's source) reads it from the lake the same way
    lake = Lake(tmp_path / "legacy")
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(both, preserve_index=False), buf)
    lake.store.put(P.key, buf.getvalue())
    (r,) = span_id_report(lake, [P])
    assert r["id_space"] == "unknown" and "cross_source_duplicates" in r["issues"]
