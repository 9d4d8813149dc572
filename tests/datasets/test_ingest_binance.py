"""`datasets ingest binance-archive`: verification before any write, parsing variants, monthly
fallback, gaps, idempotence, a real local HTTP server (404, cut connections) and the CLI."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import os
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.cli import main as datasets_main
from datasets.lake import Lake, LakeConflictError
from datasets.sources._http import FetchError, NotFound, fetch, fetch_many
from datasets.sources.binance_archive import (
    COLUMNS,
    ArchiveError,
    daily_relpath,
    ingest_binance_archive,
    monthly_relpath,
)
from datasets.synth import SynthParams, generate_days, write_synth_archive

SYM = "PLANTUSDT"
D1, D2, D3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)


# ------------------------------------------------------------------ helpers
def synth_days(start: dt.date, days: int, rate: float = 0.05, seed: int = 0) -> dict[dt.date, pd.DataFrame]:
    """Synthetic aggTrades per day as archive CSV columns."""
    out = {}
    for day, tr in generate_days(
        SynthParams(symbol=SYM, start=start, days=days, trades_per_s=rate, seed=seed, whale_rate_per_day=0)
    ):
        out[day] = pd.DataFrame(
            {
                "agg_trade_id": tr["agg_trade_id"],
                "price": tr["price"],
                "quantity": tr["qty"],
                "first_trade_id": tr["first_trade_id"],
                "last_trade_id": tr["last_trade_id"],
                "transact_time": tr["ts_ms"],
                "is_buyer_maker": tr["side"] < 0,
            }
        )
    return out


def zip_csv(df: pd.DataFrame, member: str, header: bool = True, header_line: str | None = None) -> bytes:
    text = df.to_csv(index=False, header=False, lineterminator="\n").replace("True", "true").replace("False", "false")
    if header:
        text = (header_line or ",".join(COLUMNS)) + "\n" + text
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, text)
    return buf.getvalue()


def put(root: Path, relpath: str, data: bytes, checksum: bytes | None = None) -> None:
    """Write an archive file and its .CHECKSUM (of ``data`` unless given)."""
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    name = path.name
    path.with_name(name + ".CHECKSUM").write_bytes(
        checksum if checksum is not None else f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()
    )


def put_day(root: Path, day: dt.date, df: pd.DataFrame, **kw) -> bytes:
    rel = daily_relpath(SYM, day)
    data = zip_csv(df, Path(rel).with_suffix(".csv").name, **kw)
    put(root, rel, data)
    return data


def snapshot(lake_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a local lake with its bytes and mtime (ns)."""
    if not lake_dir.exists():
        return {}
    return {
        str(p.relative_to(lake_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(lake_dir.rglob("*"))
        if p.is_file()
    }


def bronze(lake_dir: Path, start=D1, end=D3) -> pd.DataFrame:
    return Lake(lake_dir).read("bronze", "binance_usdm", SYM, start, end)


def assert_bronze_equals(lake_dir: Path, days: dict[dt.date, pd.DataFrame]) -> None:
    got = bronze(lake_dir, min(days), max(days))
    want = pd.concat(days.values(), ignore_index=True)
    assert list(got.columns[:7]) == ["exchange", "symbol", "trade_id", "ts_ms", "price", "qty", "side"]
    assert (got["exchange"] == "binance_usdm").all() and (got["symbol"] == SYM).all()
    np.testing.assert_array_equal(got["trade_id"], want["agg_trade_id"])
    np.testing.assert_array_equal(got["ts_ms"], want["transact_time"])
    np.testing.assert_array_equal(got["price"], want["price"])
    np.testing.assert_array_equal(got["qty"], want["quantity"])
    np.testing.assert_array_equal(got["side"], np.where(want["is_buyer_maker"], -1, 1))


@pytest.fixture(scope="module")
def three_days() -> dict[dt.date, pd.DataFrame]:
    return synth_days(D1, 3)


@pytest.fixture(scope="module")
def three_zips(three_days) -> dict[str, bytes]:
    out = {}
    for day, df in three_days.items():
        rel = daily_relpath(SYM, day)
        out[rel] = zip_csv(df, Path(rel).with_suffix(".csv").name)
    return out


@pytest.fixture
def archive(tmp_path, three_zips) -> Path:
    root = tmp_path / "archive"
    for rel, data in three_zips.items():
        put(root, rel, data)
    return root


@pytest.fixture
def http_root(tmp_path, serve_dir):
    """A real HTTP server (stdlib http.server in a thread) serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    return root, serve_dir(root)


# ------------------------------------------------------------------ happy path
def test_ingest_writes_raw_byte_for_byte_and_bronze(tmp_path, archive, three_days):
    lake_dir = tmp_path / "lake"
    rep = ingest_binance_archive(archive, SYM, D1, D3, lake_dir)
    assert [d.date for d in rep.days] == [D1, D2, D3] and rep.gaps == []
    assert rep.rows == sum(len(df) for df in three_days.values())
    assert all(d.changed and d.ts_unit == "ms" for d in rep.days)
    assert_bronze_equals(lake_dir, three_days)
    for day in three_days:
        rel = daily_relpath(SYM, day)
        for suffix in ("", ".CHECKSUM"):
            stored = lake_dir / "raw" / "binance_usdm" / (rel + suffix)
            assert stored.read_bytes() == (archive / (rel + suffix)).read_bytes()
    assert rep.raw_written == 6 and rep.bytes == sum(
        (archive / daily_relpath(SYM, d)).stat().st_size for d in three_days
    )


def test_reingest_changes_no_object_bytes_or_mtimes(tmp_path, archive):
    lake_dir = tmp_path / "lake"
    ingest_binance_archive(archive, SYM, D1, D3, lake_dir)
    before = snapshot(lake_dir)
    rep = ingest_binance_archive(archive, SYM, D1, D3, lake_dir)
    rep2 = ingest_binance_archive(archive, SYM, D2, D2, lake_dir)
    assert snapshot(lake_dir) == before
    assert rep.days_changed == 0 and rep.raw_written == 0 and rep.raw_unchanged == 6
    assert rep2.days_changed == 0 and rep2.rows == rep.days[1].rows


def test_synth_archive_goes_through_ingest(tmp_path):
    res = write_synth_archive(tmp_path / "synth", SynthParams(days=2, trades_per_s=0.1, seed=2))
    rep = ingest_binance_archive(tmp_path / "synth", SYM, D1, D2, tmp_path / "lake")
    assert rep.rows == res.n_trades and rep.gaps == []
    b = bronze(tmp_path / "lake", D1, D2)
    whales = b["price"] * b["qty"] >= 1_000_000
    assert whales.sum() == res.n_whales and (b["side"][whales] == 1).all()


# ------------------------------------------------------------------ verification before any write
def test_checksum_mismatch_names_file_and_writes_nothing(tmp_path, archive):
    rel = daily_relpath(SYM, D2)
    good = hashlib.sha256((archive / rel).read_bytes()).hexdigest()
    (archive / (rel + ".CHECKSUM")).write_text("0" * 64 + f"  {Path(rel).name}\n")
    with pytest.raises(ArchiveError) as exc:
        ingest_binance_archive(archive, SYM, D1, D3, tmp_path / "lake")
    size = (archive / rel).stat().st_size
    assert str(exc.value) == (
        f"PLANTUSDT-aggTrades-2024-03-02.zip: checksum mismatch: expected sha256 {'0' * 64}, got {good} "
        f"({size} bytes); the download is damaged or changed, fetch it again"
    )
    assert snapshot(tmp_path / "lake") == {}


def test_missing_checksum_file_is_an_error(tmp_path, archive):
    (archive / (daily_relpath(SYM, D1) + ".CHECKSUM")).unlink()
    with pytest.raises(ArchiveError, match=r"PLANTUSDT-aggTrades-2024-03-01.zip: no checksum file .*unverified"):
        ingest_binance_archive(archive, SYM, D1, D3, tmp_path / "lake")
    assert snapshot(tmp_path / "lake") == {}


def test_truncated_zip_names_file_and_writes_nothing(tmp_path, archive):
    rel = daily_relpath(SYM, D3)
    data = (archive / rel).read_bytes()
    put(archive, rel, data[: len(data) // 2])  # checksum matches the truncated bytes
    with pytest.raises(ArchiveError) as exc:
        ingest_binance_archive(archive, SYM, D1, D3, tmp_path / "lake")
    assert str(exc.value).startswith("PLANTUSDT-aggTrades-2024-03-03.zip: corrupt or truncated zip (")
    assert snapshot(tmp_path / "lake") == {}


def test_damaged_zip_content_is_caught_by_crc(tmp_path, archive):
    rel = daily_relpath(SYM, D2)
    data = bytearray((archive / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the deflate stream
    put(archive, rel, bytes(data))
    with pytest.raises(ArchiveError, match=r"^PLANTUSDT-aggTrades-2024-03-02.zip: corrupt or truncated zip"):
        ingest_binance_archive(archive, SYM, D1, D3, tmp_path / "lake")
    assert snapshot(tmp_path / "lake") == {}


def test_wrong_columns_say_what_arrived_and_what_was_expected(tmp_path, archive, three_days):
    bad = "agg_trade_id,price,qty,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    put_day(archive, D2, three_days[D2], header_line=bad)
    with pytest.raises(ArchiveError) as exc:
        ingest_binance_archive(archive, SYM, D1, D3, tmp_path / "lake")
    assert str(exc.value) == (
        "PLANTUSDT-aggTrades-2024-03-02.zip: CSV columns do not match Binance aggTrades; expected "
        f"{list(COLUMNS)}, got {bad.split(',')}; missing 'quantity' (did you mean 'qty'?). "
        "Is this an aggTrades file of the USD-M futures archive?"
    )
    assert snapshot(tmp_path / "lake") == {}


def test_wrong_column_count_without_header(tmp_path, archive, three_days):
    put_day(archive, D1, three_days[D1].drop(columns=["first_trade_id"]), header=False)
    with pytest.raises(ArchiveError, match=r"^PLANTUSDT-aggTrades-2024-03-01.zip: expected 7 columns .* has 6"):
        ingest_binance_archive(archive, SYM, D1, D3, tmp_path / "lake")
    assert snapshot(tmp_path / "lake") == {}


def test_bad_value_deep_in_a_file_writes_nothing(tmp_path, archive, three_days):
    df = three_days[D3].astype({"price": object})
    df.loc[len(df) - 2, "price"] = "n/a"
    put_day(archive, D3, df)
    with pytest.raises(ArchiveError, match=r"^PLANTUSDT-aggTrades-2024-03-03.zip: CSV does not parse"):
        ingest_binance_archive(archive, SYM, D1, D3, tmp_path / "lake", block_bytes=4096)
    assert snapshot(tmp_path / "lake") == {}


def test_raw_conflict_is_refused_before_any_write(tmp_path, archive, three_days):
    lake_dir = tmp_path / "lake"
    ingest_binance_archive(archive, SYM, D1, D2, lake_dir)
    before = snapshot(lake_dir)
    other = synth_days(D1, 3, seed=99)
    put_day(archive, D2, other[D2])
    with pytest.raises(LakeConflictError, match=r"raw file raw/binance_usdm/.*2024-03-02.zip already exists"):
        ingest_binance_archive(archive, SYM, D1, D3, lake_dir)
    assert snapshot(lake_dir) == before


# ------------------------------------------------------------------ parsing variants
def test_header_and_no_header_give_the_same_trades(tmp_path, three_days):
    root = tmp_path / "archive"
    put_day(root, D1, three_days[D1], header=True)
    put_day(root, D2, three_days[D2], header=False)
    put_day(root, D3, three_days[D3], header=False)
    ingest_binance_archive(root, SYM, D1, D3, tmp_path / "lake", block_bytes=4096)  # many small blocks
    assert_bronze_equals(tmp_path / "lake", three_days)


def test_microsecond_timestamps_are_detected_and_kept(tmp_path, three_days):
    root = tmp_path / "archive"
    df = three_days[D1].copy()
    df["transact_time"] = df["transact_time"] * 1000 + np.arange(len(df)) % 1000
    put_day(root, D1, df)
    rep = ingest_binance_archive(root, SYM, D1, D1, tmp_path / "lake")
    assert rep.days[0].ts_unit == "us"
    got = bronze(tmp_path / "lake", D1, D1)
    np.testing.assert_array_equal(got["ts_us"], df["transact_time"])
    np.testing.assert_array_equal(got["ts_ms"], df["transact_time"] // 1000)


def test_monthly_file_fills_a_whole_month_without_daily_files(tmp_path):
    feb = synth_days(dt.date(2024, 2, 1), 29, rate=0.003)
    root = tmp_path / "archive"
    month = pd.concat(feb.values(), ignore_index=True)
    rel = monthly_relpath(SYM, 2024, 2)
    put(root, rel, zip_csv(month, Path(rel).with_suffix(".csv").name, header=False))
    put_day(root, dt.date(2024, 2, 10), feb[dt.date(2024, 2, 10)])
    rep = ingest_binance_archive(root, SYM, "2024-02-01", "2024-02-29", tmp_path / "lake")
    assert rep.gaps == [] and len(rep.days) == 29
    src = {d.date: d.source for d in rep.days}
    assert src[dt.date(2024, 2, 10)] == daily_relpath(SYM, dt.date(2024, 2, 10))
    assert {s for d, s in src.items() if d != dt.date(2024, 2, 10)} == {rel}
    assert_bronze_equals(tmp_path / "lake", feb)
    assert (tmp_path / "lake" / "raw" / "binance_usdm" / rel).read_bytes() == (root / rel).read_bytes()


def test_monthly_file_is_not_used_for_a_month_partly_outside_the_span(tmp_path):
    feb = synth_days(dt.date(2024, 2, 1), 29, rate=0.003)
    root = tmp_path / "archive"
    rel = monthly_relpath(SYM, 2024, 2)
    put(root, rel, zip_csv(pd.concat(feb.values(), ignore_index=True), "m.csv"))
    put_day(root, dt.date(2024, 2, 29), feb[dt.date(2024, 2, 29)])
    warnings: list[str] = []
    rep = ingest_binance_archive(root, SYM, "2024-02-26", "2024-02-29", tmp_path / "lake", warn=warnings.append)
    assert [d.date for d in rep.days] == [dt.date(2024, 2, 29)]
    assert rep.gaps == [dt.date(2024, 2, 26), dt.date(2024, 2, 27), dt.date(2024, 2, 28)]
    assert warnings == [
        f"gap: no aggTrades for {SYM} on 2024-02-26..2024-02-28 in {root} (no daily file, and no "
        "monthly file for a whole month inside the span)"
    ]


# ------------------------------------------------------------------ gaps
def test_missing_day_is_a_gap_not_a_crash(tmp_path, archive, three_days):
    (archive / daily_relpath(SYM, D2)).unlink()
    (archive / (daily_relpath(SYM, D2) + ".CHECKSUM")).unlink()
    warnings: list[str] = []
    rep = ingest_binance_archive(archive, SYM, D1, D3, tmp_path / "lake", warn=warnings.append)
    assert rep.gaps == [D2] and [d.date for d in rep.days] == [D1, D3]
    assert len(warnings) == 1 and "2024-03-02" in warnings[0]
    assert_bronze_equals(tmp_path / "lake", {D1: three_days[D1], D3: three_days[D3]})


def test_nothing_found_lists_what_was_looked_for(tmp_path, archive):
    with pytest.raises(ArchiveError) as exc:
        ingest_binance_archive(archive, "ETHUSDT", D1, D2, tmp_path / "lake")
    lines = str(exc.value).splitlines()
    assert lines[0] == f"no aggTrades files for ETHUSDT from 2024-03-01 to 2024-03-02 in {archive}; looked for:"
    assert lines[1].strip() == str(archive / daily_relpath("ETHUSDT", D1))
    assert lines[2].strip() == str(archive / daily_relpath("ETHUSDT", D2))
    assert snapshot(tmp_path / "lake") == {}


# ------------------------------------------------------------------ over HTTP
def test_base_url_through_a_real_http_server_with_a_404_day(tmp_path, http_root, archive, three_days):
    root, url = http_root
    for day in (D1, D3):
        for suffix in ("", ".CHECKSUM"):
            rel = daily_relpath(SYM, day) + suffix
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes((archive / rel).read_bytes())
    warnings: list[str] = []
    rep = ingest_binance_archive(url, SYM, D1, D3, tmp_path / "lake", warn=warnings.append, max_workers=3)
    assert rep.gaps == [D2] and [d.date for d in rep.days] == [D1, D3]
    assert warnings and "2024-03-02" in warnings[0]
    assert_bronze_equals(tmp_path / "lake", {D1: three_days[D1], D3: three_days[D3]})
    raw = tmp_path / "lake" / "raw" / "binance_usdm" / daily_relpath(SYM, D3)
    assert raw.read_bytes() == (archive / daily_relpath(SYM, D3)).read_bytes()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class CuttingHandler(QuietHandler):
    """Serves files, but cuts the first ``server.cuts`` bodies halfway; honours Range if ``server.ranges``."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        self.server.seen.append(self.headers.get("Range"))
        if not path.is_file():
            self.send_error(404)
            return
        if self.server.fail_first > 0:
            self.server.fail_first -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].rstrip("-")) if rng and self.server.ranges else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cuts > 0:
            self.server.cuts -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def cutting_server(tmp_path):
    root = tmp_path / "cut"
    root.mkdir()
    (root / "f.bin").write_bytes(os.urandom(300_000))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CuttingHandler, directory=str(root)))
    server.cuts, server.ranges, server.fail_first, server.seen = 0, True, 0, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_resumes_a_cut_download_with_range(cutting_server):
    server, root, url = cutting_server
    server.cuts = 1
    assert fetch(url, "f.bin", backoff_s=0.01) == (root / "f.bin").read_bytes()
    assert server.seen == [None, "bytes=150000-"]


def test_fetch_restarts_when_the_server_ignores_range(cutting_server):
    server, root, url = cutting_server
    server.cuts, server.ranges = 2, False
    assert fetch(url, "f.bin", backoff_s=0.01) == (root / "f.bin").read_bytes()
    assert len(server.seen) == 3


def test_fetch_retries_5xx_and_gives_up_without_partial_data(cutting_server):
    server, root, url = cutting_server
    server.fail_first = 2
    assert fetch(url, "f.bin", backoff_s=0.01) == (root / "f.bin").read_bytes()
    server.cuts = 10
    with pytest.raises(FetchError, match=r"could not fetch .*/f.bin after 3 attempts \(\d+ of 300000 bytes"):
        fetch(url, "f.bin", retries=2, backoff_s=0.01)


def test_fetch_not_found_locally_and_over_http(tmp_path, cutting_server):
    _, _, url = cutting_server
    with pytest.raises(NotFound):
        fetch(url, "nope.zip")
    with pytest.raises(NotFound):
        fetch(tmp_path, "nope.zip")


def test_fetch_many_keeps_order_and_reports_missing(cutting_server):
    _, root, url = cutting_server
    (root / "a").write_bytes(b"A")
    (root / "b").write_bytes(b"B")
    got = list(fetch_many(url, ["b", "missing", "a", "b"], max_workers=2))
    assert [r for r, _ in got] == ["b", "missing", "a", "b"]
    assert got[0][1] == b"B" and isinstance(got[1][1], NotFound) and got[2][1] == b"A"


# ------------------------------------------------------------------ CLI
def test_cli_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        datasets_main(["ingest", "binance-archive", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "--base-url" in out


def test_cli_ingests_and_prints_a_summary(tmp_path, archive, capsys):
    (archive / daily_relpath(SYM, D3)).unlink()
    rc = datasets_main(
        [
            "ingest",
            "binance-archive",
            "--root",
            str(archive),
            "--symbol",
            "plant-usdt",
            "--start",
            "2024-03-01",
            "--end",
            "2024-03-03",
            "--lake",
            str(tmp_path / "lake"),
        ]
    )
    assert rc == 0
    cap = capsys.readouterr()
    assert "PLANTUSDT-aggTrades-2024-03-01.zip" in cap.out and "gaps 1: 2024-03-03" in cap.out
    assert cap.err.startswith("Warning: gap: no aggTrades for PLANTUSDT on 2024-03-03")


def cli_error(capsys, *argv) -> str:
    rc = datasets_main(["ingest", "binance-archive", *argv])
    assert rc == 1
    return capsys.readouterr().err


def test_cli_errors(tmp_path, archive, capsys):
    lake = ["--lake", str(tmp_path / "lake")]
    assert cli_error(
        capsys, "--root", str(tmp_path / "nope"), "--symbol", SYM, "--start", "2024-03-01", "--end", "2024-03-02", *lake
    ) == (
        f"Error: --root {tmp_path / 'nope'} is not a directory; expected a local copy of the archive "
        "(the folder that holds data/futures/um/...)\n"
    )
    assert (
        cli_error(
            capsys, "--root", str(archive), "--symbol", SYM, "--start", "2024-03-03", "--end", "2024-03-01", *lake
        )
        == "Error: end 2024-03-01 is before start 2024-03-03; expected start <= end\n"
    )
    assert (
        cli_error(
            capsys, "--root", str(archive), "--symbol", SYM, "--start", "2024-13-01", "--end", "2024-03-01", *lake
        )
        == "Error: start must be a date like 2024-03-01; got '2024-13-01'\n"
    )
    err = cli_error(
        capsys, "--root", str(archive), "--symbol", "ETHUSDT", "--start", "2024-03-01", "--end", "2024-03-01", *lake
    )
    assert (
        err.splitlines()[0]
        == f"Error: no aggTrades files for ETHUSDT from 2024-03-01 to 2024-03-01 in {archive}; looked for:"
    )
    rel = daily_relpath(SYM, D1)
    (archive / (rel + ".CHECKSUM")).write_text("f" * 64 + "  x.zip\n")
    err = cli_error(
        capsys, "--root", str(archive), "--symbol", SYM, "--start", "2024-03-01", "--end", "2024-03-03", *lake
    )
    got = hashlib.sha256((archive / rel).read_bytes()).hexdigest()
    assert err == (
        f"Error: PLANTUSDT-aggTrades-2024-03-01.zip: checksum mismatch: expected sha256 {'f' * 64}, "
        f"got {got} ({(archive / rel).stat().st_size} bytes); the download is damaged or changed, "
        "fetch it again\n"
    )
    assert snapshot(tmp_path / "lake") == {}


def test_cli_base_url_that_does_not_answer(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = cli_error(
        capsys,
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--symbol",
        SYM,
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-01",
        "--lake",
        str(tmp_path / "lake"),
        "--retries",
        "1",
    )
    assert err.startswith(f"Error: could not fetch http://127.0.0.1:{port}/data/futures/um/daily/aggTrades/")
    assert "after 2 attempts" in err and err.endswith("run again; nothing partial was kept\n")
    assert snapshot(tmp_path / "lake") == {}


def test_daily_file_without_trades_of_its_day_is_a_gap(tmp_path, three_days):
    root = tmp_path / "archive"
    put_day(root, D1, three_days[D1])
    put_day(root, D2, three_days[D1].head(0))  # header only
    warnings: list[str] = []
    rep = ingest_binance_archive(root, SYM, D1, D2, tmp_path / "lake", warn=warnings.append)
    assert rep.gaps == [D2] and [d.date for d in rep.days] == [D1]
    assert warnings[0] == "PLANTUSDT-aggTrades-2024-03-02.zip: no trades for 2024-03-02 in this file; counted as a gap"
    assert not (tmp_path / "lake" / "raw" / "binance_usdm" / daily_relpath(SYM, D2)).exists()
