"""Funding: the pure charge function (bt/funding.py) and funding-rate ingestion into the lake."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bt.funding import funding_count, funding_covered, funding_return
from datasets.cli import main as datasets_main
from datasets.lake import Lake
from datasets.sources.funding import (
    funding_key,
    funding_months,
    funding_relpath,
    ingest_funding_rest,
    parse_binance_funding,
    read_funding,
    write_funding,
)
from datasets.sources.rest import Backoff, parse_time_ms
from servers.exchange_rest import ExchangeRestServer, binance_429

H = 3_600_000
T0 = parse_time_ms("2024-07-01")  # funding at 00:00, 08:00, 16:00 UTC


# ---------------------------------------------------------------------------- bt/funding.py
def test_a_long_spanning_two_funding_times_pays_or_receives_both_with_sign_and_notional():
    ts = np.array([T0 + 8 * H, T0 + 16 * H, T0 + 24 * H])
    rate = np.array([0.0001, -0.0003, 0.0002])
    entry = np.array([T0 + 7 * H, T0 + 7 * H, T0 + 9 * H, T0 + 8 * H, T0, T0 + 17 * H])
    exit_ = np.array([T0 + 9 * H, T0 + 17 * H, T0 + 23 * H, T0 + 16 * H, T0 + 8 * H - 1, T0 + 30 * H])
    notional_usd = np.array([10_000.0, 10_000.0, 50_000.0, 20_000.0, 10_000.0, 10_000.0])
    r = funding_return(entry, exit_, ts, rate)
    # By hand:
    #  07:00-09:00 spans 08:00 (+1 bp): the long pays 1 bp of 10,000 = -1.00 USD
    #  07:00-17:00 spans 08:00 (+1 bp) and 16:00 (-3 bp): pays 1, receives 3 → +2 bp = +2.00 USD
    #  09:00-23:00 spans 16:00 (-3 bp): receives 3 bp of 50,000 = +15.00 USD
    #  08:00-16:00: entry exactly at 08:00 is not settled, exit exactly at 16:00 is: +3 bp of 20,000 = +6.00 USD
    #  00:00-07:59:59.999: no funding time inside: 0
    #  17:00-next day 06:00 spans 24:00 (+2 bp): -2 bp of 10,000 = -2.00 USD
    assert np.allclose(r, [-0.0001, 0.0002, 0.0003, 0.0003, 0.0, -0.0002], rtol=0, atol=1e-15)
    assert np.allclose(r * notional_usd, [-1.0, 2.0, 15.0, 6.0, 0.0, -2.0], rtol=0, atol=1e-9)
    assert funding_count(entry, exit_, ts).tolist() == [1, 2, 1, 1, 0, 1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 400), min_size=0, max_size=30, unique=True),
    st.lists(st.tuples(st.integers(-20, 420), st.integers(0, 100)), min_size=1, max_size=20),
    st.randoms(use_true_random=False),
)
def test_funding_return_equals_the_slow_sum(times, spans, rnd):
    ts = np.array(sorted(times), dtype=np.int64)
    rate = np.array([rnd.uniform(-0.001, 0.001) for _ in ts])
    entry = np.array([a for a, _ in spans], dtype=np.int64)
    exit_ = entry + np.array([d for _, d in spans], dtype=np.int64)
    slow = np.array([-rate[(ts > a) & (ts <= b)].sum() for a, b in zip(entry, exit_)])
    assert np.allclose(funding_return(entry, exit_, ts, rate), slow, rtol=0, atol=1e-12)
    assert (funding_count(entry, exit_, ts) == [((ts > a) & (ts <= b)).sum() for a, b in zip(entry, exit_)]).all()


def test_funding_inputs_are_checked():
    with pytest.raises(ValueError, match="strictly increasing"):
        funding_return([0], [10], [5, 5], [0.1, 0.2])
    with pytest.raises(ValueError, match="exits before it enters: entry 10 > exit 5 ms"):
        funding_return([10], [5], [1], [0.1])
    with pytest.raises(ValueError, match="same length"):
        funding_return([0], [10], [1, 2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        funding_return([0], [10], [1], [np.nan])
    assert funding_return(np.zeros((2, 2)), np.ones((2, 2)), [], []).shape == (2, 2)


def test_funding_covered_flags_positions_outside_the_history():
    ts = np.array([T0, T0 + 8 * H, T0 + 16 * H])
    entry = np.array([T0 - 8 * H, T0 - 8 * H - 1, T0, T0 + 20 * H])
    exit_ = np.array([T0 + H, T0 + H, T0 + 24 * H - 1, T0 + 24 * H])
    assert funding_covered(entry, exit_, ts).tolist() == [True, False, True, False]
    assert funding_covered(entry, exit_, []).tolist() == [False] * 4


# ---------------------------------------------------------------------------- the archive
def _series(server_series, month: str) -> list[tuple[int, str]]:
    return [(t, r) for t, r in server_series if str(np.datetime64(t, "ms").astype("datetime64[M]")) == month]


def write_archive(
    root: Path, symbol: str, rows: list[tuple[int, str]], month: str, *, header: bool = True, corrupt: bool = False
) -> None:
    """One monthly fundingRate zip + .CHECKSUM in Binance's layout (calc_time jittered by a few ms)."""
    y, m = int(month[:4]), int(month[5:])
    rel = funding_relpath(symbol, y, m)
    name = rel.rsplit("/", 1)[-1]
    lines = ["calc_time,funding_interval_hours,last_funding_rate"] if header else []
    lines += [f"{t + k % 7},8,{r}" for k, (t, r) in enumerate(rows)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name.replace(".zip", ".csv"), "\n".join(lines) + "\n")
    data = buf.getvalue()
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = hashlib.sha256(data + (b"x" if corrupt else b"")).hexdigest()
    path.with_name(name + ".CHECKSUM").write_text(f"{digest}  {name}\n")


@pytest.fixture(scope="module")
def server():
    with ExchangeRestServer() as srv:
        yield srv


@pytest.fixture()
def archive(tmp_path, server):
    root = tmp_path / "archive"
    series = server.binance_funding["BTCUSDT"]
    write_archive(root, "BTCUSDT", _series(series, "2024-07"), "2024-07")
    write_archive(root, "BTCUSDT", _series(series, "2024-08"), "2024-08", header=False)
    return root  # 2024-09 is not published


@pytest.fixture()
def http_root(archive, serve_dir):
    return serve_dir(archive)


def test_archive_ingest_rounds_times_keeps_raw_reports_the_missing_month_and_is_idempotent(
    archive, server, tmp_path, capsys
):
    lake_dir = tmp_path / "lake"
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
        "2024-09-30",
        "--root",
        str(archive),
        "--lake",
        str(lake_dir),
        "--quiet",
    ]
    assert datasets_main(args) == 0
    out, err = capsys.readouterr()
    assert "warning: gap: 2024-09: no BTCUSDT-fundingRate-2024-09.zip at" in err
    assert out.splitlines()[0] == (
        "binance_usdm BTCUSDT: 186 funding times (2024-07-01 00:00 .. 2024-08-31 16:00 UTC) "
        "from " + str(archive) + "; 2 month(s) changed in " + str(lake_dir)
    )
    lake = Lake(lake_dir)
    assert funding_months(lake, "binance_usdm", "BTCUSDT") == ["2024-07", "2024-08"]
    got = read_funding(lake, "binance_usdm", "BTCUSDT")
    want = _series(server.binance_funding["BTCUSDT"], "2024-07") + _series(server.binance_funding["BTCUSDT"], "2024-08")
    assert got["ts_ms"].tolist() == [t for t, _ in want]  # the few-ms jitter is gone
    assert got["rate"].tolist() == [float(r) for _, r in want]
    assert [str(t) for t in got.dtypes] == ["int64", "float64"]
    rel = funding_relpath("BTCUSDT", 2024, 7)
    assert lake.store.get(f"raw/binance_usdm/{rel}") == (archive / rel).read_bytes()
    before = {k: lake.store.get(k) for k in lake.store.list("funding/")}
    assert datasets_main(args) == 0
    assert "0 month(s) changed" in capsys.readouterr().out
    assert {k: lake.store.get(k) for k in lake.store.list("funding/")} == before


def test_archive_over_http_gives_the_same_content_as_from_a_directory(archive, http_root, tmp_path):
    from datasets.sources.funding import ingest_funding_archive

    a, b = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    ra = ingest_funding_archive(
        a, "BTCUSDT", pd.Timestamp("2024-07-01").date(), pd.Timestamp("2024-08-31").date(), archive
    )
    rb = ingest_funding_archive(
        b, "BTCUSDT", pd.Timestamp("2024-07-01").date(), pd.Timestamp("2024-08-31").date(), http_root
    )
    assert ra.rows == rb.rows == 186 and ra.gaps == rb.gaps == []
    assert read_funding(a, "binance_usdm", "BTCUSDT").equals(read_funding(b, "binance_usdm", "BTCUSDT"))


def test_a_checksum_mismatch_stops_before_that_month_is_stored(tmp_path, server, capsys):
    root = tmp_path / "archive"
    series = server.binance_funding["BTCUSDT"]
    write_archive(root, "BTCUSDT", _series(series, "2024-07"), "2024-07")
    write_archive(root, "BTCUSDT", _series(series, "2024-08"), "2024-08", corrupt=True)
    lake = Lake(tmp_path / "lake")
    rc = datasets_main(
        [
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
            str(tmp_path / "lake"),
            "--quiet",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("Error: BTCUSDT-fundingRate-2024-08.zip: checksum mismatch: expected sha256 ")
    assert funding_months(lake, "binance_usdm", "BTCUSDT") == ["2024-07"]
    assert not lake.store.exists(f"raw/binance_usdm/{funding_relpath('BTCUSDT', 2024, 8)}")


def test_archive_user_errors(tmp_path, capsys):
    rc = datasets_main(
        [
            "ingest",
            "funding",
            "--exchange",
            "bybit_linear",
            "--symbol",
            "BTCUSDT",
            "--start",
            "2024-07-01",
            "--end",
            "2024-07-31",
            "--root",
            str(tmp_path),
            "--lake",
            "memory://f",
        ]
    )
    assert rc == 1
    assert capsys.readouterr().err.strip() == (
        "Error: bybit_linear publishes no funding archive; drop --base-url/--root to use its REST API"
    )
    rc = datasets_main(
        [
            "ingest",
            "funding",
            "--exchange",
            "binance_usdm",
            "--symbol",
            "BTCUSDT",
            "--start",
            "2024-07-01",
            "--end",
            "2024-07-31",
            "--root",
            str(tmp_path),
            "--lake",
            "memory://f",
            "--quiet",
        ]
    )
    assert rc == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .startswith("Error: no Binance fundingRate file for BTCUSDT from 2024-07 to 2024-07 under ")
    )


def test_parse_binance_funding_reads_both_csv_forms_and_names_bad_columns():
    body = "1719792000004,8,0.00010000\n1719820800000,8,-0.00002500\n"
    a = parse_binance_funding(("calc_time,funding_interval_hours,last_funding_rate\n" + body).encode())
    b = parse_binance_funding(body.encode())
    assert a.equals(b) and a["ts_ms"].tolist() == [1719792000000, 1719820800000]
    assert a["rate"].tolist() == [0.0001, -0.000025]
    with pytest.raises(
        ValueError,
        match=r"missing column\(s\) \['last_funding_rate'\]; got \['calc_time', "
        r"'funding_interval_hours', 'rate'\]",
    ):
        parse_binance_funding(b"calc_time,funding_interval_hours,rate\n1,8,0.1\n", "f.csv")


# ---------------------------------------------------------------------------- REST
@pytest.mark.parametrize(
    "exchange, symbol, series_of",
    [
        ("binance_usdm", "BTCUSDT", lambda s: s.binance_funding["BTCUSDT"]),
        ("bybit_linear", "BTCUSDT", lambda s: s.bybit_funding["BTCUSDT"]),
        ("okx_swap", "BTC-USDT-SWAP", lambda s: s.okx_funding["BTC-USDT-SWAP"]),
    ],
)
def test_rest_funding_pages_through_the_whole_span(server, exchange, symbol, series_of):
    server.reset()
    lake = Lake("memory://")
    start, end = parse_time_ms("2024-07-01"), parse_time_ms("2024-10-01") - 1
    rep = ingest_funding_rest(lake, exchange, symbol, start, end, api_url=server.url, rate_limit_ms=0)
    series = series_of(server)
    got = read_funding(lake, exchange, "BTCUSDT")
    assert got["ts_ms"].tolist() == [t for t, _ in series] and len(got) == 276
    assert got["rate"].tolist() == [float(r) for _, r in series]
    assert rep.requests == {"binance_usdm": 1, "bybit_linear": 2, "okx_swap": 3}[exchange]
    assert len(rep.keys_changed) == 3 and rep.gaps == []


def test_rest_funding_waits_out_a_429(server):
    server.reset()
    server.inject("/fapi/v1/fundingRate", binance_429(1))
    rep = ingest_funding_rest(
        Lake("memory://"),
        "binance_usdm",
        "BTCUSDT",
        T0,
        T0 + 10 * 24 * H,
        api_url=server.url,
        rate_limit_ms=0,
        backoff=Backoff(base_s=30),
    )
    log = server.requests("/fapi/v1/fundingRate")
    assert [r.status for r in log] == [429, 200] and log[1].t - log[0].t >= 1.0
    assert rep.retries == 1 and rep.rows == 31  # 10 days of 8-hourly settlements, both ends included


def test_archive_and_rest_of_the_same_settlements_merge_to_one_row_each(archive, server, tmp_path):
    from datasets.sources.funding import ingest_funding_archive

    server.reset()
    lake = Lake(tmp_path / "lake")
    ingest_funding_archive(
        lake, "BTCUSDT", pd.Timestamp("2024-07-01").date(), pd.Timestamp("2024-09-30").date(), archive
    )
    rep = ingest_funding_rest(
        lake,
        "binance_usdm",
        "BTCUSDT",
        parse_time_ms("2024-08-01"),
        parse_time_ms("2024-10-01") - 1,
        api_url=server.url,
        rate_limit_ms=0,
    )
    assert rep.changed_rates == 0
    assert rep.keys_changed == [funding_key("binance_usdm", "BTCUSDT", "2024-09")]  # July/August unchanged
    got = read_funding(lake, "binance_usdm", "BTCUSDT")
    assert got["ts_ms"].tolist() == [t for t, _ in server.binance_funding["BTCUSDT"]]


def test_read_funding_windows_and_the_empty_answer():
    lake = Lake("memory://")
    empty = read_funding(lake, "binance_usdm", "BTCUSDT", T0, T0 + 24 * H)
    assert (
        empty.empty
        and list(empty.columns) == ["ts_ms", "rate"]
        and [str(t) for t in empty.dtypes] == ["int64", "float64"]
    )
    ts = [T0 - 8 * H, T0, T0 + 8 * H, T0 + 31 * 24 * H]
    write_funding(
        lake, "okx_swap", "BTCUSDT", pd.DataFrame({"ts_ms": ts, "rate": [1e-4, 2e-4, 3e-4, 4e-4]}), source="test"
    )
    assert funding_months(lake, "okx_swap", "BTCUSDT") == ["2024-06", "2024-07", "2024-08"]
    assert read_funding(lake, "okx_swap", "BTCUSDT", T0, T0 + 8 * H)["rate"].tolist() == [2e-4, 3e-4]
    assert len(read_funding(lake, "okx_swap", "BTCUSDT")) == 4
    # A different rate for a stored settlement replaces it and is counted.
    from datasets.sources.funding import FundingReport

    rep = FundingReport("okx_swap", "BTCUSDT", "test")
    write_funding(
        lake, "okx_swap", "BTCUSDT", pd.DataFrame({"ts_ms": [T0 + 3], "rate": [5e-4]}), source="t", report=rep
    )
    assert rep.changed_rates == 1
    assert read_funding(lake, "okx_swap", "BTCUSDT", T0, T0)["rate"].tolist() == [5e-4]


def test_funding_command_over_rest_takes_whole_utc_days(server, capsys):
    server.reset()
    rc = datasets_main(
        [
            "ingest",
            "funding",
            "--exchange",
            "okx_swap",
            "--symbol",
            "BTCUSDT",
            "--start",
            "2024-07-01",
            "--end",
            "2024-07-31",
            "--lake",
            "memory://funding-cli",
            "--api-url",
            server.url,
            "--rate-limit-ms",
            "0",
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "okx_swap BTCUSDT: 93 funding times (2024-07-01 00:00 .. 2024-07-31 16:00 UTC) from rest:okx_swap; "
        "1 month(s) changed in memory://funding-cli"
    )
