"""Symbol ranking on a small hand-built kline set: scores, order and exclusion reasons by hand."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.cli import main as datasets_main
from datasets.rank import (
    DEFAULT_WEIGHTS,
    KLINE_COLUMNS,
    STABLECOINS,
    RankError,
    RankFilters,
    load_klines,
    rank_symbols,
)

DAY_MS = 86_400_000
D0 = 1704067200000  # 2024-01-01
PLUS_MINUS = [1, -1, 1, -1, 1, -1]  # signed taker flow, in $M


def klines(rs, qs_musd, *, days=None, wide=(), qv=3e6, count=5000, bad_day=None) -> pd.DataFrame:
    """Daily klines with open 100, close 100*exp(r), flow q: taker buy quote = (qv + q) / 2."""
    days = list(range(len(rs))) if days is None else days
    rows = []
    for i, (d, r, q) in enumerate(zip(days, rs, qs_musd)):
        o, c = 100.0, 100.0 * float(np.exp(r))
        hi, lo = (max(o, c) * 1.15, min(o, c) * 0.9) if i in wide else (max(o, c) + 0.5, min(o, c) - 0.5)
        if d == bad_day:
            hi = min(o, c) - 1  # high below open/close
        tbq = (qv + q * 1e6) / 2
        ot = D0 + d * DAY_MS
        rows.append([ot, o, hi, lo, c, qv / c, ot + DAY_MS - 1, qv, count, tbq / c, tbq, 0])
    return pd.DataFrame(rows, columns=list(KLINE_COLUMNS))


def info(symbol, status="TRADING", contract="PERPETUAL", base=None):
    return {
        "symbol": symbol,
        "status": status,
        "contractType": contract,
        "baseAsset": base or symbol.removesuffix("USDT"),
        "quoteAsset": "USDT",
    }


def kline_set() -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    k = {
        # eligible; lambda = |cov(r,q)| / var(q) with mean r = mean q = 0 and var(q) = 6e12/5 = 1.2e12:
        "AAAUSDT": klines([0.02, -0.02] * 3, PLUS_MINUS, wide={0}),  # cov 6*0.02e6/5 = 24000 → 2e-8
        "BBBUSDT": klines([0.01, -0.01] * 3, PLUS_MINUS),  # → 1e-8
        "CCCUSDT": klines([-0.03, 0.03] * 3, PLUS_MINUS),  # cov -36000 → |.| → 3e-8
        "DDDUSDT": klines([0.06, -0.06, 0.01, -0.01, 0.01, -0.01], PLUS_MINUS, wide={2, 3}),  # 0.16e6/5/1.2e12
        # excluded, one reason each (two for FDUSDUSDT)
        "USDCUSDT": klines([0.01, -0.01] * 3, PLUS_MINUS),
        "SHORTUSDT": klines([0.01, -0.01, 0.01], [1, -1, 1], days=[3, 4, 5]),
        "GAPPYUSDT": klines([0.01, -0.01, 0.01, -0.01], [1, -1, 1, -1], days=[0, 3, 4, 5]),
        "STALEUSDT": klines([0.01, -0.01, 0.01, -0.01], [1, -1, 1, -1], days=[0, 1, 2, 3]),
        "BADUSDT": klines([0.01, -0.01] * 3, PLUS_MINUS, bad_day=2),
        "THINUSDT": klines([0.01, -0.01] * 3, [0.1, -0.1] * 3, qv=5e5),
        "QUIETUSDT": klines([0.01, -0.01] * 3, PLUS_MINUS, count=500),
        "FLATUSDT": klines([0.01, -0.01] * 3, [0.5] * 6),
        "DELISTUSDT": klines([0.01, -0.01] * 3, PLUS_MINUS),
        "QTRUSDT": klines([0.01, -0.01] * 3, PLUS_MINUS),
        "GONEUSDT": klines([0.01, -0.01] * 3, PLUS_MINUS),
        "FDUSDUSDT": klines([0.0, 0.0], [1, -1], days=[4, 5]),
    }
    # A monthly and a daily file that both hold day 0 of BADUSDT: identical rows are not bad.
    k["BADUSDT"] = pd.concat([k["BADUSDT"], k["BADUSDT"].iloc[:1]], ignore_index=True)
    ex = {s: info(s) for s in k if s != "GONEUSDT"}
    ex["DELISTUSDT"] = info("DELISTUSDT", status="SETTLING")
    ex["QTRUSDT"] = info("QTRUSDT", contract="CURRENT_QUARTER")
    return k, ex


FILTERS = RankFilters(min_days=4, max_missing_days=1, max_stale_days=1, min_quote_volume_usd=1e6, min_trades=1000)

EXPECTED_REASONS = {
    "BADUSDT": "quality: 1 bad rows > 0",
    "DELISTUSDT": "status: SETTLING (not TRADING)",
    "FDUSDUSDT": "stablecoin: base asset FDUSD; history: 2 good days < 4",
    "FLATUSDT": "flow: taker flow does not vary, Kyle's lambda undefined",
    "GAPPYUSDT": "gaps: 2 missing days > 1",
    "GONEUSDT": "status: not listed in exchangeInfo (delisted?)",
    "QTRUSDT": "status: contract type CURRENT_QUARTER (not PERPETUAL)",
    "QUIETUSDT": "activity: median 500 trades/day < 1,000",
    "SHORTUSDT": "history: 3 good days < 4",
    "STALEUSDT": "stale: last kline 2024-01-04, 2 days before the newest (2024-01-06)",
    "THINUSDT": "liquidity: median quote volume $500k < $1M",
    "USDCUSDT": "stablecoin: base asset USDC",
}


def test_scores_order_and_reasons_match_the_hand_computation():
    k, ex = kline_set()
    t = rank_symbols(k, filters=FILTERS, exchange_info=ex)
    assert t["symbol"].tolist()[:4] == ["DDDUSDT", "CCCUSDT", "AAAUSDT", "BBBUSDT"]
    top = t.set_index("symbol").loc[["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]]
    assert np.allclose(top["kyle_lambda"], [2e-8, 1e-8, 3e-8, 0.16e6 / 5 / 1.2e12], rtol=1e-9, atol=0)
    assert np.allclose(top["kyle_lambda_bps_per_musd"], [200, 100, 300, 266.6666667], rtol=1e-8)
    # |e^0.06 - 1| = 6.2 % and |e^-0.06 - 1| = 5.8 % are the only moves above 5 %.
    assert top["big_move_share"].tolist() == [0, 0, 0, 2 / 6]
    assert top["wide_range_share"].tolist() == [1 / 6, 0, 0, 2 / 6]
    # Percentile ranks among the 4 eligible (rank / 4, ties averaged), weights 0.4 / 0.3 / 0.3:
    #   lambda: B .25, A .5, D .75, C 1 · big moves: A B C tie (rank 2) .5, D 1 · range: B C tie .375, A .75, D 1
    #   A = .4*.5 + .3*.5 + .3*.75 = .575 · B = .1 + .15 + .1125 = .3625 · C = .4 + .15 + .1125 = .6625 · D = .9
    assert np.allclose(top["score"], [0.575, 0.3625, 0.6625, 0.9], rtol=0, atol=1e-12)
    assert t["rank"].tolist()[:4] == [1, 2, 3, 4] and t["rank"].iloc[4:].isna().all()
    excluded = t.iloc[4:]
    assert excluded["symbol"].tolist() == sorted(EXPECTED_REASONS)
    assert dict(zip(excluded["symbol"], excluded["reasons"])) == EXPECTED_REASONS
    assert excluded["score"].isna().all() and not excluded["eligible"].any() and t["eligible"].iloc[:4].all()
    assert (t["reasons"].iloc[:4] == "").all()
    row = t.set_index("symbol").loc["GAPPYUSDT"]
    assert (row["days"], row["missing_days"], row["first_day"], row["last_day"]) == (4, 2, "2024-01-01", "2024-01-06")


def test_zscore_normalisation_by_hand():
    k, ex = kline_set()
    t = rank_symbols(k, filters=FILTERS, exchange_info=ex, normalise="zscore").set_index("symbol")
    # lambda (1e-8): 1, 2, 3, 2.6667 → mean 2.16667, population std 0.763763;
    # big moves: 0, 0, 0, 1/3 → mean 1/12, std 0.144338; range: 1/6, 0, 0, 1/3 → mean .125, std .138193.
    #   D = .4*.654654 + .3*1.732051 + .3*1.507557 = 1.233744
    #   C = .4*1.091089 - .3*.577350 - .3*.904534 = -0.008130
    #   A = -.4*.218218 - .3*.577350 + .3*.301511 = -0.170040
    #   B = -.4*1.527525 - .3*.577350 - .3*.904534 = -1.055577
    assert np.allclose(
        t.loc[["DDDUSDT", "CCCUSDT", "AAAUSDT", "BBBUSDT"], "score"],
        [1.233744, -0.008130, -0.170040, -1.055577],
        rtol=0,
        atol=2e-6,
    )
    assert t.index.tolist()[:4] == ["DDDUSDT", "CCCUSDT", "AAAUSDT", "BBBUSDT"]


def test_weights_change_the_order_and_are_rescaled():
    k, ex = kline_set()
    t = rank_symbols(k, filters=FILTERS, exchange_info=ex, weights={"kyle_lambda": 2})
    assert t["symbol"].tolist()[:4] == ["CCCUSDT", "DDDUSDT", "AAAUSDT", "BBBUSDT"]
    assert t["score"].tolist()[:4] == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(RankError, match="unknown score component 'kyle_lamda'.*Did you mean 'kyle_lambda'"):
        rank_symbols(k, weights={"kyle_lamda": 1})
    with pytest.raises(RankError, match="must not all be zero"):
        rank_symbols(k, weights={"kyle_lambda": 0})


def test_without_exchange_info_there_is_no_status_check_and_a_missing_column_is_named():
    k, _ = kline_set()
    t = rank_symbols(k, filters=FILTERS).set_index("symbol")
    assert t.loc["GONEUSDT", "eligible"] and t.loc["QTRUSDT", "eligible"]
    # Two different rows for one day: one bad row (the later row is kept).
    conflict = pd.concat([k["AAAUSDT"], k["AAAUSDT"].iloc[:1].assign(count=4000)], ignore_index=True)
    row = rank_symbols({"AAAUSDT": conflict}, filters=FILTERS).iloc[0]
    assert (row["bad_rows"], row["days"], row["reasons"]) == (1, 6, "quality: 1 bad rows > 0")
    bad = k["AAAUSDT"].rename(columns={"taker_buy_quote_volume": "taker_buy_quote"})
    with pytest.raises(
        RankError,
        match=r"klines of XUSDT are missing column\(s\) \['taker_buy_quote_volume'\].*"
        r"Did you mean 'taker_buy_quote' for 'taker_buy_quote_volume'\?",
    ):
        rank_symbols({"XUSDT": bad})


def test_command_defaults_are_the_library_defaults():
    from datasets.commands.rank import DEFAULTS

    f = RankFilters()
    assert DEFAULTS["weights"] == ",".join(f"{k}={v}" for k, v in DEFAULT_WEIGHTS.items())
    assert DEFAULTS["stablecoins"] == ",".join(STABLECOINS) == ",".join(f.stablecoins)
    for name in (
        "min_days",
        "max_missing_days",
        "max_stale_days",
        "max_bad_rows",
        "min_quote_volume_usd",
        "min_trades",
    ):
        assert DEFAULTS[name] == getattr(f, name), name


# ---------------------------------------------------------------------------- files and the command
def write_archive(root: Path, k: dict[str, pd.DataFrame]) -> None:
    """Each symbol as monthly zips (no header) or daily zips (with header), Binance's layout, with .CHECKSUM."""
    for i, (sym, df) in enumerate(sorted(k.items())):
        if i % 2:
            groups = [(f"data/futures/um/monthly/klines/{sym}/1d/{sym}-1d-2024-01.zip", df, False)]
        else:
            groups = []
            for ot, g in df.groupby("open_time"):
                day = pd.Timestamp(ot, unit="ms").date().isoformat()
                groups.append((f"data/futures/um/daily/klines/{sym}/1d/{sym}-1d-{day}.zip", g, True))
        for rel, g, header in groups:
            name = rel.rsplit("/", 1)[-1]
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr(name.replace(".zip", ".csv"), g.to_csv(index=False, header=header))
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.getvalue())
            path.with_name(name + ".CHECKSUM").write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {name}\n")


FILTER_FLAGS = [
    "--min-days",
    "4",
    "--max-missing-days",
    "1",
    "--max-stale-days",
    "1",
    "--min-quote-volume-usd",
    "1e6",
    "--min-trades",
    "1000",
]


def test_rank_command_reads_the_archive_and_writes_csv_and_html(tmp_path, capsys):
    k, ex = kline_set()
    k.pop("BADUSDT")  # its duplicated row cannot be written as one file per day
    root = tmp_path / "mirror"
    write_archive(root, k)
    (tmp_path / "exchangeInfo.json").write_text(json.dumps({"timezone": "UTC", "symbols": list(ex.values())}))
    base = ["rank", "--klines", str(root), "--exchange-info", str(tmp_path / "exchangeInfo.json"), *FILTER_FLAGS]
    assert datasets_main([*base, "--out", str(tmp_path / "rank.csv")]) == 0
    out = capsys.readouterr().out
    assert "DDDUSDT" in out and "stale: last kline 2024-01-04" in out
    got = pd.read_csv(tmp_path / "rank.csv")
    want = rank_symbols(k, filters=FILTERS, exchange_info=ex)
    assert got["symbol"].tolist() == want["symbol"].tolist()
    assert np.allclose(got["score"].to_numpy(float), want["score"].to_numpy(float), equal_nan=True)
    assert got["reasons"].fillna("").tolist() == want["reasons"].tolist()
    assert datasets_main([*base, "--out", str(tmp_path / "rank.html"), "--top", "2"]) == 0
    html = (tmp_path / "rank.html").read_text()
    assert html.startswith("<!doctype html>") and "<table" in html and "CCCUSDT" in html
    shown = capsys.readouterr().out
    assert "DDDUSDT" in shown and "CCCUSDT" in shown and "AAAUSDT" not in shown and "USDCUSDT" in shown


def test_klines_over_http_need_symbols_and_match_the_directory(tmp_path):
    k, _ = kline_set()
    k = {s: k[s] for s in ("AAAUSDT", "BBBUSDT")}
    root = tmp_path / "mirror"
    write_archive(root, k)  # AAA as daily files only (no monthly): fetched day by day
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **kw: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        start, end = pd.Timestamp("2024-01-01").date(), pd.Timestamp("2024-01-06").date()
        over_http = load_klines(url, symbols=["AAAUSDT", "BBBUSDT"], start=start, end=end)
        with pytest.raises(RankError, match="a base URL cannot be listed: give --symbols, --start and --end"):
            load_klines(url)
    finally:
        httpd.shutdown()
        httpd.server_close()
    local = load_klines(root)
    for s in k:
        a = over_http[s].sort_values("open_time").reset_index(drop=True)
        b = local[s].sort_values("open_time").reset_index(drop=True)
        assert np.allclose(a[list(KLINE_COLUMNS)].to_numpy(float), b[list(KLINE_COLUMNS)].to_numpy(float))
    assert rank_symbols(over_http, filters=FILTERS)["symbol"].tolist() == ["AAAUSDT", "BBBUSDT"]


def test_rank_command_errors(tmp_path, capsys):
    k, _ = kline_set()
    root = tmp_path / "mirror"
    write_archive(root, {"AAAUSDT": k["AAAUSDT"]})
    zips = sorted(root.rglob("*.zip"))
    zips[0].write_bytes(zips[0].read_bytes() + b"!")
    assert datasets_main(["rank", "--klines", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"Error: {zips[0].name}: checksum mismatch: expected sha256 ")
    assert datasets_main(["rank", "--klines", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"Error: --klines {tmp_path / 'nowhere'}: expected a directory (or http(s) base URL) holding "
        "SYM-1d-YYYY-MM[-DD].zip kline files; it does not exist or is not a directory"
    )
    assert datasets_main(["rank", "--klines", str(root), "--out", "rank.txt"]) == 1
    assert capsys.readouterr().err.strip() == "Error: --out rank.txt: expected a .html or .csv file name"
