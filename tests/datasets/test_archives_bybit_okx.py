"""Bybit and OKX archive sources on files in each exchange's format, built from real recorded trades.

The trades come from the real recordings in ``tests/data/real`` (origin in its LICENSES.md):
Bybit v5 ``publicTrade`` frames and OKX v5 ``trades`` frames. The expected bronze rows are
derived here straight from those frames, independently of the parsers under test. Files are
served by a real HTTP server on 127.0.0.1 that can answer 404, 429, 503, cut a body short or
corrupt it, and logs every request.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import hashlib
import http.server
import io
import json
import threading
import uuid
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest_azurite import azure_lake_uri, azurite_conn_str  # noqa: F401  (fixtures)
from datasets.cli import main as datasets_main
from datasets.lake import Lake, Partition
from datasets.quality import read_quality
from datasets.schema import SchemaError
from datasets.sources._http import fetch
from datasets.sources.bybit_archive import (
    CorruptFile,
    bybit_relpath,
    ingest_bybit_archive,
    parse_bybit_csv,
)
from datasets.sources.frames import UnknownContractError
from datasets.sources.okx_archive import ingest_okx_archive, okx_relpath, parse_okx_zip

# The project's copy of the recordings (with their licences: tests/data/real/LICENSES.md).
REAL = Path(__file__).resolve().parents[1] / "data" / "real"
BYBIT_FILE = REAL / "bybit_v5_multi_2026-08-09_frames.jsonl.zst"
OKX_FILE = REAL / "okx_v5_multi_2022-05-13_frames.txt"
BYBIT_DAY = dt.date(2026, 8, 9)
BRONZE = ["exchange", "symbol", "trade_id", "ts_ms", "price", "qty", "side"]
fast_fetch = functools.partial(fetch, retries=3, backoff_s=0.01)


# ---------------------------------------------------------------------------- real trades
@functools.cache
def bybit_linear_trades() -> tuple[dict, ...]:
    """Unique publicTrade rows received on the linear connection, in arrival order."""
    import zstandard

    urls: dict[str, str] = {}
    rows: dict[str, dict] = {}
    with BYBIT_FILE.open("rb") as fh:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")
        for line in text:
            rec = json.loads(line)
            if rec.get("t") == "connect":
                urls[rec["conn"]] = rec["addr"]
            elif rec.get("t") == "recv" and urls.get(rec["conn"], "").endswith("/linear"):
                msg = json.loads(rec["data"])
                if str(msg.get("topic", "")).startswith("publicTrade."):
                    for t in msg["data"]:
                        rows.setdefault(t["i"], t)
    return tuple(rows.values())


@functools.cache
def okx_trades() -> tuple[dict, ...]:
    rows: dict[tuple[str, str], dict] = {}
    for line in OKX_FILE.read_text().splitlines():
        if '"channel":"trades"' not in line or '"data"' not in line:
            continue
        msg = json.loads(line.split(": ", 1)[1])
        for t in msg["data"]:
            rows.setdefault((t["instId"], t["tradeId"]), t)
    return tuple(rows.values())


def expected_bybit(symbol: str) -> pd.DataFrame:
    rows = [t for t in bybit_linear_trades() if t["s"] == symbol]
    df = pd.DataFrame(
        {
            "exchange": "bybit_linear",
            "symbol": symbol,
            "trade_id": [uuid.UUID(t["i"]).int >> 65 for t in rows],
            "ts_ms": [int(t["T"]) for t in rows],
            "price": [float(t["p"]) for t in rows],
            "qty": [float(t["v"]) for t in rows],
            "side": [1 if t["S"] == "Buy" else -1 for t in rows],
        }
    )
    return df.sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)


BYBIT_HEADER = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"


def bybit_file(symbol: str) -> bytes:
    """A daily file as Bybit's archive has it: gzip CSV, timestamp in seconds with a fraction."""
    lines = [BYBIT_HEADER]
    for t in bybit_linear_trades():
        if t["s"] != symbol:
            continue
        p, v = Decimal(t["p"]), Decimal(t["v"])
        lines.append(
            f"{Decimal(t['T']) / 1000:.4f},{t['s']},{t['S']},{t['v']},{t['p']},{t['L']},{t['i']},"
            f"{p * v * 100_000_000:.0f},{t['v']},{p * v}"
        )
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


# OKX: the recording holds one UNI-USD-SWAP trade (coin-margined, ctVal 10 USD) and 69 BTC-USDT
# spot trades. To exercise a full linear swap file too, the spot trades are written as
# BTC-USDT-SWAP contracts (sz / ctVal, ctVal 0.01 BTC): ids, times, prices and sides stay real.
OKX_NEW_HEADER = "instrument_name,trade_id,side,price,size,created_time"
OKX_OLD_HEADER = "trade_id/交易id,side/交易方向,size/数量,price/价格,created_time/成交时间"


def okx_rows(inst: str) -> list[dict]:
    if inst == "UNI-USD-SWAP":
        return [dict(t) for t in okx_trades() if t["instId"] == "UNI-USD-SWAP"]
    assert inst == "BTC-USDT-SWAP"
    return [
        dict(t, instId=inst, sz=str(Decimal(t["sz"]) / Decimal("0.01")))
        for t in okx_trades()
        if t["instId"] == "BTC-USDT"
    ]


def expected_okx(inst: str) -> pd.DataFrame:
    if inst == "UNI-USD-SWAP":
        src, symbol = [t for t in okx_trades() if t["instId"] == "UNI-USD-SWAP"], "UNIUSD"
        qty = [float(t["sz"]) * 10.0 / float(t["px"]) for t in src]  # contracts x 10 USD / price
    else:
        src, symbol = [t for t in okx_trades() if t["instId"] == "BTC-USDT"], "BTCUSDT"
        qty = [float(t["sz"]) for t in src]  # the base size we started from
    df = pd.DataFrame(
        {
            "exchange": "okx_swap",
            "symbol": symbol,
            "trade_id": [int(t["tradeId"]) for t in src],
            "ts_ms": [int(t["ts"]) for t in src],
            "price": [float(t["px"]) for t in src],
            "qty": qty,
            "side": [1 if t["side"] == "buy" else -1 for t in src],
        }
    )
    return df.sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)


def okx_file(inst: str, day: dt.date, *, old_header: bool = False) -> bytes:
    rows = okx_rows(inst)
    if old_header:
        body = [OKX_OLD_HEADER] + [f"{t['tradeId']},{t['side']},{t['sz']},{t['px']},{t['ts']}" for t in rows]
    else:
        body = [OKX_NEW_HEADER] + [
            f"{t['instId']},{t['tradeId']},{t['side']},{t['px']},{t['sz']},{t['ts']}" for t in rows
        ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{inst}-trades-{day.isoformat()}.csv", "\n".join(body) + "\n")
    return buf.getvalue()


# ---------------------------------------------------------------------------- a real HTTP archive
class ArchiveServer:
    """Serves ``files`` (relpath → bytes) over HTTP; ``faults[relpath]`` is a queue of answers to
    give before the real one: ``"503"``, ``"429"``, ``"500"``, ``"cut"`` (half the body, then
    close), ``"corrupt"`` (one byte flipped). Every request path is appended to ``log``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.log: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                rel = self.path.lstrip("/").split("?")[0]
                from urllib.parse import unquote

                rel = unquote(rel)
                owner.log.append(rel)
                queue = owner.faults.get(rel) or []
                fault = queue.pop(0) if queue else None
                body = owner.files.get(rel)
                if fault in ("503", "429", "500"):
                    self.send_response(int(fault))
                    if fault == "429":
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "corrupt":
                    b = bytearray(body)
                    b[len(b) // 2] ^= 0xFF
                    body = bytes(b)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ArchiveServer()
    yield s
    s.close()


def stored_bronze(lake: Lake, exchange: str, symbol: str, day: dt.date) -> pd.DataFrame:
    return lake.read("bronze", exchange, symbol, day, day)


# ---------------------------------------------------------------------------- Bybit
@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"])
def test_bybit_daily_file_parses_to_the_recorded_trades(symbol):
    df = parse_bybit_csv(bybit_file(symbol), symbol, name="f.csv.gz")
    exp = expected_bybit(symbol)
    got = df.sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[BRONZE], exp, check_dtype=False)
    assert (got["ts_us"] == got["ts_ms"] * 1000).all()  # the recording has ms; the file keeps µs


def test_bybit_trade_id_is_the_uuid_top_63_bits_also_off_the_fast_path():
    ids = [t["i"] for t in bybit_linear_trades()[:5]]
    from datasets.sources.bybit_archive import bybit_trade_ids

    fast = bybit_trade_ids(ids)
    slow = bybit_trade_ids([i.upper() for i in ids[:4]] + ["12345"])  # mixed case, a numeric id
    assert fast.tolist() == [uuid.UUID(i).int >> 65 for i in ids]
    assert slow.tolist() == fast.tolist()[:4] + [12345]
    with pytest.raises(SchemaError, match="'not-an-id' is neither a UUID nor a number"):
        bybit_trade_ids(["not-an-id"])


def test_bybit_file_errors_name_the_problem():
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['price'\].*Did you mean 'prices'"):
        parse_bybit_csv(
            gzip.compress(b"timestamp,symbol,side,size,prices,trdMatchID\n1.5,BTCUSDT,Buy,1,2,7\n"),
            "BTCUSDT",
            name="x.csv.gz",
        )
    with pytest.raises(SchemaError, match=r"holds trades of \['ETHUSDT'\], expected only BTCUSDT"):
        parse_bybit_csv(bybit_file("ETHUSDT"), "BTCUSDT", name="x.csv.gz")
    with pytest.raises(CorruptFile, match="damaged or truncated"):
        parse_bybit_csv(bybit_file("BTCUSDT")[:-20], "BTCUSDT", name="x.csv.gz")


def test_bybit_ingest_over_http_retries_reports_gaps_and_keeps_raw(server, tmp_path, capsys):
    rel = bybit_relpath("BTCUSDT", BYBIT_DAY)
    server.files[rel] = bybit_file("BTCUSDT")
    server.faults[rel] = ["503", "429", "cut"]
    lake_dir = tmp_path / "lake"
    argv = [
        "ingest",
        "bybit-archive",
        "--base-url",
        server.url,
        "--symbol",
        "BTCUSDT",
        "--start",
        "2026-08-08",
        "--end",
        "2026-08-09",
        "--lake",
        str(lake_dir),
        "--workers",
        "2",
    ]
    assert datasets_main(argv) == 0
    out, err = capsys.readouterr()
    assert "2 files, 1 ingested (0 from the lake's raw copy), 0 already done, 1 gaps; 56 trades" in out
    assert "gap: trading/BTCUSDT/BTCUSDT2026-08-08.csv.gz is not in the archive" in err
    assert server.log.count(rel) == 4  # 503, 429, a cut body, then the whole file
    lake = Lake(str(lake_dir))
    pd.testing.assert_frame_equal(
        stored_bronze(lake, "bybit_linear", "BTCUSDT", BYBIT_DAY)[BRONZE], expected_bybit("BTCUSDT"), check_dtype=False
    )
    assert lake.store.get(f"raw/bybit_archive/{rel}") == server.files[rel]  # byte for byte
    q = read_quality(lake, Partition("bronze", "bybit_linear", "BTCUSDT", BYBIT_DAY))
    assert q["rows"] == 56 and q["issues"] == [] and q["id_gaps"] is None
    manifest = json.loads(lake.store.get(f"ingest/bybit_archive/{rel}.json"))
    assert manifest["sha256"] == hashlib.sha256(server.files[rel]).hexdigest()

    # a second run downloads nothing it has (it asks again only for the gap) and changes nothing
    server.log.clear()
    before = {k: lake.store.get(k) for k in lake.store.list()}
    assert datasets_main(argv) == 0
    assert "1 already done" in capsys.readouterr().out
    assert server.log == [bybit_relpath("BTCUSDT", dt.date(2026, 8, 8))]
    assert {k: lake.store.get(k) for k in lake.store.list()} == before


def test_bybit_corrupt_download_is_fetched_again_and_never_stored(server, tmp_path):
    rel = bybit_relpath("ETHUSDT", BYBIT_DAY)
    server.files[rel] = bybit_file("ETHUSDT")
    server.faults[rel] = ["corrupt"]
    lake = Lake(str(tmp_path / "lake"))
    rep = ingest_bybit_archive(server.url, "ETHUSDT", BYBIT_DAY, BYBIT_DAY, lake, progress=False, fetcher=fast_fetch)
    assert (rep.ingested, rep.rows, server.log.count(rel)) == (1, len(expected_bybit("ETHUSDT")), 2)
    assert lake.store.get(f"raw/bybit_archive/{rel}") == server.files[rel]


def test_bybit_resumes_from_the_raw_copy_after_a_crash_before_bronze(server, tmp_path):
    rel = bybit_relpath("SOLUSDT", BYBIT_DAY)
    server.files[rel] = bybit_file("SOLUSDT")
    lake = Lake(str(tmp_path / "lake"))
    lake.put_raw("bybit_archive", rel, server.files[rel])  # what a run killed after the raw write leaves
    rep = ingest_bybit_archive(server.url, "SOLUSDT", BYBIT_DAY, BYBIT_DAY, lake, progress=False, fetcher=fast_fetch)
    assert (rep.from_raw, rep.bytes_downloaded, server.log) == (1, 0, [])
    pd.testing.assert_frame_equal(
        stored_bronze(lake, "bybit_linear", "SOLUSDT", BYBIT_DAY)[BRONZE], expected_bybit("SOLUSDT"), check_dtype=False
    )
    # retention removed the bronze partition: the manifest no longer counts the file as done
    lake.delete_partition(Partition("bronze", "bybit_linear", "SOLUSDT", BYBIT_DAY))
    rep = ingest_bybit_archive(server.url, "SOLUSDT", BYBIT_DAY, BYBIT_DAY, lake, progress=False, fetcher=fast_fetch)
    assert (rep.skipped, rep.from_raw, rep.rows) == (0, 1, len(expected_bybit("SOLUSDT")))


def test_bybit_failed_download_stops_with_nothing_half_written(server, tmp_path, capsys):
    rel = bybit_relpath("DOGEUSDT", BYBIT_DAY)
    server.files[rel] = bybit_file("DOGEUSDT")
    server.faults[rel] = ["500"] * 50
    lake = Lake(str(tmp_path / "lake"))
    from datasets.sources._http import FetchError

    with pytest.raises(FetchError, match="could not fetch"):
        ingest_bybit_archive(server.url, "DOGEUSDT", BYBIT_DAY, BYBIT_DAY, lake, progress=False, fetcher=fast_fetch)
    assert lake.store.list() == []
    server.faults.clear()
    rep = ingest_bybit_archive(server.url, "DOGEUSDT", BYBIT_DAY, BYBIT_DAY, lake, progress=False, fetcher=fast_fetch)
    assert rep.ingested == 1 and rep.rows == len(expected_bybit("DOGEUSDT"))


def test_bybit_cli_errors(server, tmp_path, capsys):
    base = ["ingest", "bybit-archive", "--base-url", server.url, "--lake", str(tmp_path / "l")]
    assert datasets_main(base + ["--symbol", "BTCUSDT", "--start", "2026-08-09", "--end", "2026-08-01"]) == 1
    assert capsys.readouterr().err.strip().endswith("Error: --end 2026-08-01 is before --start 2026-08-09; swap them")
    assert datasets_main(base + ["--symbol", "NOPEUSDT", "--start", "2026-08-09", "--end", "2026-08-10"]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "Error: none of the 2 files of bybit NOPEUSDT 2026-08-09..2026-08-10 exist in the archive; check "
            "--symbol (exchange's own spelling) and --base-url/--root"
        )
    )
    assert datasets_main(base + ["--symbol", "BTC-USDT", "--start", "2026-08-09", "--end", "2026-08-09"]) == 1
    assert "Error: Bybit archive symbols look like BTCUSDT; got 'BTC-USDT' (try 'BTCUSDT')" in capsys.readouterr().err


# ---------------------------------------------------------------------------- OKX
@pytest.mark.parametrize("inst", ["UNI-USD-SWAP", "BTC-USDT-SWAP"])
@pytest.mark.parametrize("old_header", [False, True], ids=["header-2024", "header-bilingual"])
def test_okx_daily_zip_parses_to_the_recorded_trades(inst, old_header):
    df = parse_okx_zip(okx_file(inst, dt.date(2022, 5, 14), old_header=old_header), inst, name="f.zip")
    got = df.sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)
    exp = expected_okx(inst)
    pd.testing.assert_frame_equal(got[BRONZE].drop(columns="qty"), exp.drop(columns="qty"), check_dtype=False)
    np.testing.assert_allclose(got["qty"], exp["qty"], rtol=1e-12)


def test_okx_errors_name_the_problem():
    data = okx_file("BTC-USDT-SWAP", dt.date(2022, 5, 14))
    with pytest.raises(SchemaError, match=r"holds trades of \['BTC-USDT-SWAP'\], expected only ETH-USDT-SWAP"):
        parse_okx_zip(data, "ETH-USDT-SWAP", name="x.zip")
    with pytest.raises(UnknownContractError, match="contract value of FOO-USDT-SWAP is not known"):
        parse_okx_zip(data, "FOO-USDT-SWAP", name="x.zip")
    with pytest.raises(CorruptFile, match="not a readable zip"):
        parse_okx_zip(data[: len(data) // 2], "BTC-USDT-SWAP", name="x.zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.csv", "id,px,qty\n1,2,3\n")
    with pytest.raises(SchemaError, match=r"missing \['trade_id', 'side', 'size', 'price', 'created_time'\]"):
        parse_okx_zip(buf.getvalue(), "BTC-USDT-SWAP", name="x.zip")


def test_okx_ingest_maps_utc_plus_8_files_to_utc_days(server, tmp_path, capsys):
    # The trades happened 2022-05-13 16:27 UTC = 00:27 on 05-14 in UTC+8, so OKX files them on 05-14.
    rel = okx_relpath("BTC-USDT-SWAP", dt.date(2022, 5, 14))
    assert rel == "trades/daily/20220514/BTC-USDT-SWAP-trades-2022-05-14.zip"
    server.files[rel] = okx_file("BTC-USDT-SWAP", dt.date(2022, 5, 14))
    lake = Lake(str(tmp_path / "lake"))
    # Asking for UTC 05-14 reads files 05-14 and 05-15: the rows are on UTC 05-13, so none are kept ...
    rep = ingest_okx_archive(
        server.url,
        "BTC-USDT-SWAP",
        dt.date(2022, 5, 14),
        dt.date(2022, 5, 14),
        lake,
        progress=False,
        fetcher=fast_fetch,
    )
    assert (rep.files, rep.ingested, rep.rows, len(rep.gaps)) == (2, 1, 0, 1)
    assert lake.partitions("bronze") == []
    # ... asking for UTC 05-13 then takes them from the raw copy, without downloading it again.
    server.log.clear()
    argv = [
        "ingest",
        "okx-archive",
        "--base-url",
        server.url,
        "--symbol",
        "btc-usdt-swap",
        "--start",
        "2022-05-13",
        "--end",
        "2022-05-13",
        "--lake",
        str(tmp_path / "lake"),
    ]
    assert datasets_main(argv) == 0
    assert (
        "2 files, 1 ingested (1 from the lake's raw copy), 0 already done, 1 gaps; 69 trades" in capsys.readouterr().out
    )
    assert server.log == ["trades/daily/20220513/BTC-USDT-SWAP-trades-2022-05-13.zip"]
    day = dt.date(2022, 5, 13)
    got = stored_bronze(lake, "okx_swap", "BTCUSDT", day)
    exp = expected_okx("BTC-USDT-SWAP")
    pd.testing.assert_frame_equal(got[BRONZE].drop(columns="qty"), exp.drop(columns="qty"), check_dtype=False)
    q = read_quality(lake, Partition("bronze", "okx_swap", "BTCUSDT", day))
    ids = np.unique(exp["trade_id"])
    assert q["rows"] == len(exp) == 69 and q["ids_sequential"] is True
    assert q["missing_ids"] == int(ids[-1] - ids[0] + 1 - ids.size)
    assert lake.store.get(f"raw/okx_archive/{rel}") == server.files[rel]


def test_okx_cli_contract_value(server, tmp_path, capsys):
    rel = okx_relpath("PEPE-USDT-SWAP", dt.date(2022, 5, 14))
    rows = okx_rows("BTC-USDT-SWAP")
    body = [OKX_NEW_HEADER] + [f"PEPE-USDT-SWAP,{t['tradeId']},{t['side']},{t['px']},{t['sz']},{t['ts']}" for t in rows]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("PEPE-USDT-SWAP-trades-2022-05-14.csv", "\n".join(body) + "\n")
    server.files[rel] = buf.getvalue()
    argv = [
        "ingest",
        "okx-archive",
        "--base-url",
        server.url,
        "--symbol",
        "PEPE-USDT-SWAP",
        "--start",
        "2022-05-13",
        "--end",
        "2022-05-13",
        "--lake",
        str(tmp_path / "lake"),
    ]
    assert datasets_main(argv) == 1
    err = capsys.readouterr().err
    assert "Error: okx: contract value of PEPE-USDT-SWAP is not known" in err and "--contract-value <ctVal>" in err
    assert Lake(str(tmp_path / "lake")).store.list() == []  # refused before any download
    assert datasets_main(argv + ["--contract-value", "2"]) == 0
    got = stored_bronze(Lake(str(tmp_path / "lake")), "okx_swap", "PEPEUSDT", dt.date(2022, 5, 13))
    np.testing.assert_allclose(np.sort(got["qty"]), np.sort(expected_okx("BTC-USDT-SWAP")["qty"]) * 200, rtol=1e-12)
    assert (
        datasets_main(
            [
                "ingest",
                "okx-archive",
                "--symbol",
                "BTCUSDT",
                "--start",
                "2022-05-13",
                "--end",
                "2022-05-13",
                "--lake",
                str(tmp_path / "x"),
            ]
        )
        == 1
    )
    assert (
        "Error: okx-archive ingests perpetual swaps named like BTC-USDT-SWAP; got 'BTCUSDT' "
        "(did you mean BTC-USDT-SWAP?)"
    ) in capsys.readouterr().err


# ---------------------------------------------------------------------------- Azure
@pytest.mark.services
def test_archive_ingest_into_azurite_equals_local(server, tmp_path, azure_lake_uri):
    for sym in ("BTCUSDT", "ETHUSDT"):
        server.files[bybit_relpath(sym, BYBIT_DAY)] = bybit_file(sym)
    server.files[okx_relpath("UNI-USD-SWAP", dt.date(2022, 5, 14))] = okx_file("UNI-USD-SWAP", dt.date(2022, 5, 14))
    local, az = Lake(str(tmp_path / "lake")), Lake(azure_lake_uri)
    for lake in (local, az):
        for sym in ("BTCUSDT", "ETHUSDT"):
            ingest_bybit_archive(server.url, sym, BYBIT_DAY, BYBIT_DAY, lake, progress=False, fetcher=fast_fetch)
        ingest_okx_archive(
            server.url,
            "UNI-USD-SWAP",
            dt.date(2022, 5, 13),
            dt.date(2022, 5, 13),
            lake,
            progress=False,
            fetcher=fast_fetch,
        )
    assert az.store.list() == local.store.list()
    for p in local.partitions("bronze"):
        assert az.partition_meta(p)["content_sha256"] == local.partition_meta(p)["content_sha256"]
        assert read_quality(az, p) == read_quality(local, p)
    for k in local.raw_keys():
        assert az.store.get(k) == local.store.get(k)


def test_bybit_recording_and_archive_of_the_same_trades_are_stored_once(server, tmp_path):
    """WebSocket frames and the daily archive number a Bybit trade alike, so the lake dedupes them."""
    from datasets.sources.recordings import recording_trades

    lake = Lake(str(tmp_path / "lake"))
    rec = recording_trades(REAL / "bybit_v5_multi_2026-08-09_frames.jsonl.zst", symbols=["BTCUSDT"])
    lake.write_trades(rec)
    before = stored_bronze(lake, "bybit_linear", "BTCUSDT", BYBIT_DAY)
    rel = bybit_relpath("BTCUSDT", BYBIT_DAY)
    server.files[rel] = bybit_file("BTCUSDT")
    argv = [
        "ingest",
        "bybit-archive",
        "--base-url",
        server.url,
        "--symbol",
        "BTCUSDT",
        "--start",
        str(BYBIT_DAY),
        "--end",
        str(BYBIT_DAY),
        "--lake",
        str(tmp_path / "lake"),
    ]
    assert datasets_main(argv) == 0
    after = stored_bronze(lake, "bybit_linear", "BTCUSDT", BYBIT_DAY)
    assert len(after) == len(before) == 56
    assert after["trade_id"].tolist() == before["trade_id"].tolist()
