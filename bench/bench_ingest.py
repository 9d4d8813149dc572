"""Archive → bronze ingest: throughput (trades/s) and peak memory, local lake and Azurite.

Usage: python bench/bench_ingest.py [--days 30] [--trades-per-s 12] [--azure-days 7]
                                    [--formats bybit,okx,binance] [--no-azure]

A synthetic month (``datasets.synth``, BTC-like flow, ``--trades-per-s`` aggTrades per second)
is written once per parameter set under ``.bench/ingest/`` in three archive formats: Binance
daily aggTrades zips (``write_synth_archive``), Bybit daily ``.csv.gz`` (UUID trade ids,
seconds with a fraction) and OKX daily zips (UTC+8 days, sizes in contracts of 0.01). Each
ingest then runs in its own subprocess into an empty lake, so its peak RSS (VmHWM, reset
after imports) is its own; throughput is trades written to bronze per wall-clock second,
downloads from the local archive folder included. Azurite runs use fewer days
(``--azure-days``) because it keeps everything in memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = dt.date(2024, 1, 1)
SYMBOL = "BENCHUSDT"
OKX_INST = "BENCH-USDT-SWAP"
OKX_CT_VAL = 0.01
TARGET_RSS_MB = 2048


# ---------------------------------------------------------------------------- archive writers
def _uuids(rng, n: int):
    """n random UUID strings as an Arrow string array (built from bytes, not Python strings)."""
    import numpy as np
    import pyarrow as pa

    hexd = np.frombuffer(b"0123456789abcdef", np.uint8)
    nib = rng.integers(0, 16, size=(n, 32), dtype=np.uint8)
    chars = np.full((n, 36), ord("-"), np.uint8)
    pos = [i for i in range(36) if i not in (8, 13, 18, 23)]
    chars[:, pos] = hexd[nib]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(chars.tobytes()))


def _csv(table) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return (",".join(table.column_names) + "\n").encode() + sink.getvalue().to_pybytes()


def _bybit_day(out: Path, day: dt.date, tr: dict, rng) -> None:
    import numpy as np
    import pyarrow as pa

    price, qty, side = tr["price"], tr["qty"], tr["side"]
    step = np.sign(np.diff(price, prepend=price[0]))
    last = np.maximum.accumulate(np.where(step != 0, np.arange(step.size), 0))
    up = step[last] > 0
    tick = np.where(
        step > 0, "PlusTick", np.where(step < 0, "MinusTick", np.where(up, "ZeroPlusTick", "ZeroMinusTick"))
    )
    notional = price * qty
    t = pa.table(
        {
            "timestamp": tr["ts_ms"] / 1000.0,
            "symbol": pa.array([SYMBOL] * price.size),
            "side": np.where(side > 0, "Buy", "Sell"),
            "size": qty,
            "price": price,
            "tickDirection": tick,
            "trdMatchID": _uuids(rng, price.size),
            "grossValue": np.round(notional * 1e8),
            "homeNotional": qty,
            "foreignNotional": notional,
        }
    )
    rel = out / "bybit" / "trading" / SYMBOL / f"{SYMBOL}{day.isoformat()}.csv.gz"
    rel.parent.mkdir(parents=True, exist_ok=True)
    rel.write_bytes(gzip.compress(_csv(t), compresslevel=1, mtime=0))  # same format, 5x faster to write


def _okx_file(out: Path, file_day: dt.date, parts: list) -> None:
    import numpy as np
    import pyarrow as pa

    tr = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    t = pa.table(
        {
            "instrument_name": pa.array([OKX_INST] * tr["price"].size),
            "trade_id": tr["agg_trade_id"],
            "side": np.where(tr["side"] > 0, "buy", "sell"),
            "price": tr["price"],
            "size": np.round(tr["qty"] / OKX_CT_VAL, 6),
            "created_time": tr["ts_ms"],
        }
    )
    name = f"{OKX_INST}-trades-{file_day.isoformat()}"
    path = out / "okx" / "trades" / "daily" / f"{file_day:%Y%m%d}" / f"{name}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{name}.csv", _csv(t))


def make_archives(out: Path, days: int, trades_per_s: float) -> dict:
    """Write the three archives (once; reused while the parameters match)."""
    import numpy as np

    from datasets.synth import SynthParams, generate_days, write_synth_archive

    stamp = out / "done.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    if out.exists():
        shutil.rmtree(out)
    params = SynthParams(symbol=SYMBOL, start=START, days=days, seed=7, trades_per_s=trades_per_s)
    t0 = time.perf_counter()
    print(
        f"writing a {days}-day synthetic archive at {trades_per_s:g} trades/s (Binance, Bybit, OKX) into {out} ...",
        file=sys.stderr,
        flush=True,
    )
    res = write_synth_archive(out / "binance", params)
    rng = np.random.default_rng(11)
    carry: list = []  # rows of the next OKX file (UTC+8 day) already generated
    for day, tr in generate_days(params):
        _bybit_day(out, day, tr, rng)
        cut = int(
            np.searchsorted(tr["ts_ms"], (dt.datetime.combine(day, dt.time(16), dt.timezone.utc).timestamp() * 1000))
        )
        head = {k: v[:cut] for k, v in tr.items()}
        tail = {k: v[cut:] for k, v in tr.items()}
        _okx_file(out, day, carry + [head])  # OKX file D: D-1 16:00 .. D 16:00 UTC
        carry = [tail]
        print(f"  {day}: {tr['ts_ms'].size:,} trades ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    _okx_file(out, START + dt.timedelta(days=days), carry)
    info = {
        "days": days,
        "trades_per_s": trades_per_s,
        "trades": res.n_trades,
        "bytes": {
            f: sum(p.stat().st_size for p in (out / f).rglob("*") if p.is_file()) for f in ("binance", "bybit", "okx")
        },
    }
    stamp.write_text(json.dumps(info))
    return info


# ---------------------------------------------------------------------------- one measured run
def _peak_kb() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def child(fmt: str, archive: Path, lake_uri: str, days: int) -> None:
    import numpy as np  # noqa: F401  (imports before the peak reset)
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    from datasets.lake import Lake
    from datasets.sources.binance_archive import ingest_binance_archive
    from datasets.sources.bybit_archive import ingest_bybit_archive
    from datasets.sources.okx_archive import ingest_okx_archive

    lake = Lake(lake_uri)
    lake.store.list("x/")  # open connections / create nothing
    end = START + dt.timedelta(days=days - 1)
    _reset_peak()
    t0 = time.perf_counter()
    if fmt == "bybit":
        rep = ingest_bybit_archive(str(archive / "bybit"), SYMBOL, START, end, lake, progress=False)
        rows = rep.rows
    elif fmt == "okx":
        rep = ingest_okx_archive(
            str(archive / "okx"), OKX_INST, START, end, lake, progress=False, contract_values={OKX_INST: OKX_CT_VAL}
        )
        rows = rep.rows
    else:
        rep = ingest_binance_archive(str(archive / "binance"), SYMBOL, START, end, lake)
        rows = rep.rows
    seconds = time.perf_counter() - t0
    parts = len(lake.partitions("bronze"))
    print(json.dumps({"rows": int(rows), "seconds": seconds, "partitions": parts, "peak_rss_mb": _peak_kb() / 1024}))


def measure(fmt: str, archive: Path, lake_uri: str, days: int, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", fmt, "--archive", str(archive), "--lake", lake_uri, "--days", str(days)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"{fmt} ingest into {lake_uri} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--trades-per-s", type=float, default=12.0)  # ~1M trades a day, a BTCUSDT day on Bybit
    ap.add_argument("--azure-days", type=int, default=7)
    ap.add_argument("--formats", default="bybit,okx,binance")
    ap.add_argument("--no-azure", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--archive", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--lake", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.archive), args.lake, args.days)
        return 0

    sys.path.insert(0, str(ROOT))
    archive = ROOT / ".bench" / "ingest" / f"d{args.days}-r{args.trades_per_s:g}"
    info = make_archives(archive, args.days, args.trades_per_s)
    print(
        f"archive: {info['days']} days, {info['trades']:,} trades; sizes "
        + ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in info["bytes"].items())
    )
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    rows = []
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for fmt in formats:
            r = measure(fmt, archive, str(Path(tmp) / f"lake-{fmt}"), args.days, env)
            rows.append(("local", fmt, args.days, r))
            print(
                f"local   {fmt:<8} {args.days:>3} days  {r['rows']:>12,} trades  {r['seconds']:7.1f} s  "
                f"{r['rows'] / r['seconds']:>10,.0f} trades/s  peak RSS {r['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
        if not args.no_azure:
            state = Path(tmp) / "azurite"
            az_env = dict(env, AZURITE_STATE_DIR=str(state), AZURITE_MEMORY_MB="8192")
            conn = (
                subprocess.run(
                    ["bash", str(ROOT / "scripts" / "azurite.sh"), "start"],
                    env=az_env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            try:
                for fmt in formats:
                    r = measure(
                        fmt,
                        archive,
                        f"az://bench{fmt}/lake",
                        args.azure_days,
                        dict(env, AZURE_STORAGE_CONNECTION_STRING=conn),
                    )
                    rows.append(("azurite", fmt, args.azure_days, r))
                    print(
                        f"azurite {fmt:<8} {args.azure_days:>3} days  {r['rows']:>12,} trades  {r['seconds']:7.1f} s  "
                        f"{r['rows'] / r['seconds']:>10,.0f} trades/s  peak RSS {r['peak_rss_mb']:6.0f} MB",
                        flush=True,
                    )
            finally:
                subprocess.run(["bash", str(ROOT / "scripts" / "azurite.sh"), "stop"], env=az_env, check=False)
    worst = max(r["peak_rss_mb"] for *_, r in rows)
    print(
        f"peak RSS, worst run: {worst:.0f} MB (target <= {TARGET_RSS_MB} MB): "
        + ("OK" if worst <= TARGET_RSS_MB else "OVER TARGET")
    )
    return 0 if worst <= TARGET_RSS_MB else 1


if __name__ == "__main__":
    sys.exit(main())
