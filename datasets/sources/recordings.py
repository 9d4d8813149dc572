"""Recorded exchange WebSocket traffic → frames → bronze trades.

Three recording layouts are read, each plain or compressed (gzip / zstd, told by magic bytes):

- ``hftbacktest``: one line per received frame, ``<receive time, ns since epoch> <raw JSON>``
  (Binance combined stream; no URL is recorded).
- ``cryptofeed``: ``<ws url> <-> <ts>`` when a connection opens, ``<ws url> <- <ts>: <msg>``
  for a message sent, ``<ts>: <frame>`` for a frame received; times are float seconds.
- ``cryptofeed-jsonl``: one JSON record per line, ``{"t": "recv"|"send"|"connect"|"http"|
  "header", "conn": .., "ts": .., "data"|"addr"|"url": ..}``; ``conn`` ties frames to the
  URL of their ``connect`` record.

:func:`iter_frames` yields every record as a :class:`RecordedFrame`; :func:`recording_trades`
turns the received frames into the bronze frame of docs/spec.md §2 with the parsers of
:mod:`datasets.sources.frames`. By default only perpetual markets reach bronze
(``binance_usdm``, ``bybit_linear``, ``okx_swap``); spot, dated futures, options and
coin-margined Binance streams in the same file are left out.
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import gzip
import io
import json
import os
import re
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, NamedTuple
from urllib.parse import urlsplit

import pandas as pd

from datasets.schema import normalise_symbol, sort_trades, validate_bronze
from datasets.validate import screen_trades
from datasets.sources.frames import (
    PERP_EXCHANGES,
    BinanceTradeMerger,
    FrameError,
    Trade,
    parse_binance,
    parse_bybit,
    parse_okx,
)

__all__ = [
    "RecordedFrame",
    "RecordingFormatError",
    "FORMATS",
    "detect_format",
    "iter_frames",
    "exchange_for_url",
    "recording_trades",
    "recording_bronze",
    "RecordingBronze",
    "trades_from_frames",
    "frame_id_space",
]

FORMATS = {
    "hftbacktest": "lines '<ns since epoch> <raw JSON>' (hftbacktest; gzip or plain)",
    "cryptofeed": "'<url> <-> <ts>' header, then '<ts>: <frame>' and '<url> <- <ts>: <sent>' lines",
    "cryptofeed-jsonl": 'JSON lines {"t": recv|send|connect|http|header, "conn", "ts", ...} (zstd or plain)',
}

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_HFT_LINE = re.compile(r"^(\d{15,20}) (.*)$", re.S)
_CF_CONNECT = re.compile(r"^(\S+://\S+) <-> (\d+(?:\.\d*)?)\s*$")
_CF_SEND = re.compile(r"^(\S+://\S+) <- (\d+(?:\.\d*)?): (.*)$", re.S)
_CF_RECV = re.compile(r"^(\d+(?:\.\d*)?): (.*)$", re.S)


class RecordedFrame(NamedTuple):
    """One record of a recording.

    Attributes:
        recv_ns: local time of the record, ns since epoch.
        direction: ``"recv"`` (frame from the exchange), ``"send"`` (message we sent),
            ``"connect"`` (a connection opened; text is empty) or ``"http"`` (a REST response).
        url: the connection's URL (the request URL for ``http``); None when not recorded.
        text: the raw frame as received.

    Frames read from a file also have ``line``: the record's 1-based line in it.
    """

    recv_ns: int
    direction: str
    url: str | None
    text: str


class _FileFrame(RecordedFrame):
    """A :class:`RecordedFrame` that knows its line in the file (equal to the plain frame)."""

    line: int


def _at(n: int, recv_ns: int, direction: str, url: str | None, text: str) -> RecordedFrame:
    fr = _FileFrame(recv_ns, direction, url, text)
    fr.line = n
    return fr


class RecordingFormatError(WhalebtError, ValueError):
    """A file is not one of the recording layouts this module reads."""


def _seconds_to_ns(s: str | int | float) -> int:
    """Exact ns from a decimal seconds string (floats would lose the last digits)."""
    if isinstance(s, int):
        return s * 1_000_000_000
    text = s if isinstance(s, str) else repr(float(s))
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def _open_text(path: Path) -> IO[str]:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == _GZIP:
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    if magic == _ZSTD:
        import zstandard

        raw = open(path, "rb")
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8", newline="\n")
    return open(path, encoding="utf-8", newline="\n")


def _first_line(fh: IO[str]) -> str:
    for line in fh:
        if line.strip():
            return line
    return ""


def _format_of_line(line: str) -> str | None:
    line = line.rstrip("\r\n")
    if _HFT_LINE.match(line) and line.split(" ", 1)[1].lstrip()[:1] in "{[":
        return "hftbacktest"
    if _CF_CONNECT.match(line):
        return "cryptofeed"
    if line.startswith("{"):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            return None
        if isinstance(rec, dict) and rec.get("t") in ("header", "connect", "recv", "send", "http"):
            return "cryptofeed-jsonl"
    return None


def _unknown(path: Path, line: str) -> RecordingFormatError:
    line = line.rstrip("\r\n")
    shown = line[:120] + ("..." if len(line) > 120 else "")
    return RecordingFormatError(
        f"{path.name}: not a recording layout this reader knows; first line is {shown!r}. "
        "Expected one of: " + "; ".join(f"{k}: {v}" for k, v in FORMATS.items())
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the recording layout of ``path`` (a key of :data:`FORMATS`).

    Raises:
        RecordingFormatError: the first line matches none of them.
        FileNotFoundError: no such file.
    """
    p = Path(path)
    try:
        with _open_text(p) as fh:
            line = _first_line(fh)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise RecordingFormatError(
            f"{p.name}: cannot be read as text ({exc}); expected one of " + ", ".join(FORMATS)
        ) from None
    fmt = _format_of_line(line)
    if fmt is None:
        raise _unknown(p, line)
    return fmt


def iter_frames(path: str | os.PathLike[str]) -> Iterator[RecordedFrame]:
    """Every record of a recording, in file order (format detected from the content).

    Raises:
        RecordingFormatError: unknown layout, or a line that breaks the detected layout
            (the message names the line number).
    """
    p = Path(path)
    fmt = detect_format(p)
    with _open_text(p) as fh:
        if fmt == "hftbacktest":
            yield from _iter_hft(p, fh)
        elif fmt == "cryptofeed":
            yield from _iter_cryptofeed(p, fh)
        else:
            yield from _iter_jsonl(p, fh)


def _broken(p: Path, n: int, fmt: str, line: str) -> RecordingFormatError:
    shown = line[:120] + ("..." if len(line) > 120 else "")
    return RecordingFormatError(
        f"{p.name} line {n}: does not fit the {fmt} layout ({FORMATS[fmt]}); "
        f"got {shown!r}. The file may be truncated or mixed"
    )


def _iter_hft(p: Path, fh: IO[str]) -> Iterator[RecordedFrame]:
    for n, line in enumerate(fh, 1):
        line = line.rstrip("\r\n")
        if not line:
            continue
        ns, sep, text = line.partition(" ")
        if not sep or not ns.isdigit():
            raise _broken(p, n, "hftbacktest", line)
        yield _at(n, int(ns), "recv", None, text)


def _iter_cryptofeed(p: Path, fh: IO[str]) -> Iterator[RecordedFrame]:
    url: str | None = None
    for n, line in enumerate(fh, 1):
        line = line.rstrip("\r\n")
        if not line:
            continue
        m = _CF_RECV.match(line)
        if m:
            yield _at(n, _seconds_to_ns(m.group(1)), "recv", url, m.group(2))
            continue
        m = _CF_CONNECT.match(line)
        if m:
            url = m.group(1)
            yield _at(n, _seconds_to_ns(m.group(2)), "connect", url, "")
            continue
        m = _CF_SEND.match(line)
        if m:
            yield _at(n, _seconds_to_ns(m.group(2)), "send", m.group(1), m.group(3))
            continue
        raise _broken(p, n, "cryptofeed", line)


def _iter_jsonl(p: Path, fh: IO[str]) -> Iterator[RecordedFrame]:
    conns: dict[str, str] = {}
    for n, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line, parse_float=str)
            kind = rec["t"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise _broken(p, n, "cryptofeed-jsonl", line) from None
        if kind == "header":
            continue
        ts = _seconds_to_ns(rec.get("ts", 0))
        conn = rec.get("conn")
        if kind == "connect":
            conns[conn] = rec.get("addr")
            yield _at(n, ts, "connect", rec.get("addr"), "")
        elif kind in ("recv", "send"):
            url = conns.get(conn) or rec.get("addr")
            data = rec.get("data")
            yield _at(n, ts, kind, url, data if isinstance(data, str) else json.dumps(data))
        elif kind == "http":
            data = rec.get("data")
            yield _at(n, ts, "http", rec.get("url"), data if isinstance(data, str) else json.dumps(data))
        else:
            raise _broken(p, n, "cryptofeed-jsonl", line)


def exchange_for_url(url: str | None) -> str | None:
    """Market a WebSocket URL serves: ``binance_usdm``, ``bybit_linear``, ``okx`` (per instrument), ...

    Returns None for URLs that name no known exchange (e.g. a local replay server).
    """
    if not url:
        return None
    parts = urlsplit(url)
    host, path = parts.hostname or "", parts.path.rstrip("/")
    if "binance" in host:
        if host.startswith("fstream") or "fapi" in host or "binancefuture" in host:
            return "binance_usdm"
        if host.startswith("dstream"):
            return "binance_coinm"
        return "binance_spot"
    if "bybit" in host:
        kind = path.rsplit("/", 1)[-1]
        return f"bybit_{kind}" if kind in ("linear", "spot", "inverse", "option") else None
    if "okx" in host or "okex" in host:
        return "okx"
    return None


def trades_from_frames(
    frames: Iterable[RecordedFrame],
    *,
    exchange: str | None = None,
    symbols: Iterable[str] | None = None,
    contract_values: Mapping[str, Any] | None = None,
    skip_bad_frames: bool = False,
    what: str = "recording",
    info: dict | None = None,
) -> tuple[list[Trade], int]:
    """Parse received frames into trade rows (unsorted, not deduplicated).

    Args:
        frames: records from :func:`iter_frames` (only ``recv`` ones are read).
        exchange: keep only this exchange; frames without a URL are read as this exchange
            (``binance_usdm`` when not given). Default: the perpetual markets.
        symbols: keep only these symbols (any spelling :func:`normalise_symbol` accepts).
        contract_values: OKX instId → ctVal overrides.
        skip_bad_frames: count and skip malformed frames instead of raising.
        what: how to name the input in errors.
        info: when given, filled with ``frames_ms`` (connection family → [first, last] receive
            time in ms of its frames: what the recording covers), ``row_id_space`` (one id
            space per returned row, see :func:`frame_id_space`) and ``row_line`` (the file line
            of the frame each row came from; merged @trade fills: the frame that completed them).

    Returns:
        (rows, number of malformed frames skipped).
    """
    spans: dict[str, list[int]] = {}
    row_space: list[str] = []
    row_line: list[int] = []
    started: dict[tuple[str, str], int] = {}  # (exchange, symbol) → line of the merger's pending row
    keep = {exchange} if exchange else set(PERP_EXCHANGES)
    want = {normalise_symbol(s) for s in symbols} if symbols else None
    merger = BinanceTradeMerger()
    out: list[Trade] = []
    bad = 0
    for i, fr in enumerate(frames):
        if fr.direction != "recv":
            continue
        family = exchange_for_url(fr.url) if fr.url else (exchange or "binance_usdm")
        if family is None:
            family = exchange or "binance_usdm"
        before: dict = {}
        try:
            if family.startswith("binance"):
                if family not in keep:
                    continue
                before = dict(merger._pending)  # to tell which frame started each merged row
                rows = parse_binance(fr.text, merger, exchange=family)
            elif family.startswith("bybit"):
                if family not in keep:
                    continue
                rows = parse_bybit(fr.text, exchange=family)
            elif family == "okx":
                okx_keep = [e for e in keep if e.startswith("okx")]
                if not okx_keep:
                    continue
                rows = parse_okx(fr.text, exchanges=okx_keep, contract_values=contract_values)
            else:
                continue
        except (FrameError, ValueError, OverflowError, RecursionError) as exc:
            # ValueError/OverflowError/RecursionError: numbers beyond the int-string limit, nesting
            # too deep for the JSON parser.
            if not skip_bad_frames:
                line = getattr(fr, "line", 0)
                why = str(exc) if isinstance(exc, FrameError) else f"unreadable frame ({str(exc).split(';')[0][:120]})"
                raise FrameError(
                    f"{what}, frame {i + 1}: {why}{f' (line {line})' if line else ''}. Pass skip_bad_frames=True "
                    "(--skip-bad-frames) to count and skip such frames"
                ) from None
            bad += 1
            continue
        ms = fr.recv_ns // 1_000_000
        span = spans.get(family)
        if span is None:
            spans[family] = [ms, ms]
        else:
            span[0], span[1] = min(span[0], ms), max(span[1], ms)
        line = getattr(fr, "line", 0)
        lines = [line] * len(rows)
        if family.startswith("binance") and (rows or merger._pending):
            # A merged @trade row is emitted by the next fill: name the line of its first fill.
            lines = [started.get((r.exchange, r.symbol), line) if r.exchange == family else line for r in rows]
            for key, cur in merger._pending.items():
                if before.get(key) is not cur:
                    started[key] = line
        if want is not None:
            keep_rows = [i for i, r in enumerate(rows) if r.symbol in want]
            rows, lines = [rows[i] for i in keep_rows], [lines[i] for i in keep_rows]
        out.extend(rows)
        if info is not None and rows:
            space = frame_id_space(family, fr.text)
            row_space.extend([space] * len(rows))
            row_line.extend(lines)
    tail = merger.flush()
    tail = [r for r in tail if want is None or r.symbol in want]
    out.extend(tail)
    if info is not None:
        row_space.extend(["binance_fill"] * len(tail))  # only @trade fills wait in the merger
        row_line.extend(started.get((r.exchange, r.symbol), 0) for r in tail)
        info["frames_ms"] = spans
        info["row_id_space"] = row_space
        info["row_line"] = row_line
    return out, bad


def frame_id_space(family: str, text: str) -> str:
    """Id space of the trade ids a frame of ``family`` gives (bronze footer ``id_space``).

    Binance ``@aggTrade`` frames carry aggregate-trade ids (``a``), ``@trade`` frames raw fill ids
    (``t``; merged fills keep their first id). Bybit linear ids are the match UUID's top bits (as
    in the archive), other Bybit markets' numeric ids; OKX's WebSocket ``trades`` channel may
    aggregate fills under one ``tradeId``, so its ids are their own space.
    """
    if family.startswith("binance"):
        return "binance_agg_trade" if '"aggTrade"' in text else "binance_fill"
    if family == "bybit_linear":
        return "bybit_match_uuid"
    if family.startswith("bybit"):
        return "bybit_trade_id"
    return "okx_ws_trade_id"


def _family(exchange: str) -> str:
    return "okx" if exchange.startswith("okx") else exchange


class RecordingBronze(NamedTuple):
    """A recording's bronze trades with what the lake records about them."""

    trades: pd.DataFrame  # validated, ordered, deduplicated
    id_spaces: dict  # (exchange, symbol) -> id space
    coverage: dict  # exchange -> [[first frame ms, last frame ms + 1]]
    bad_frames: int
    notes: list  # what was left out and why (printed as warnings)
    bad_rows: pd.DataFrame | None = None  # refused rows to quarantine (skip_bad_rows), else None


def recording_bronze(
    path: str | os.PathLike[str],
    exchange: str | None = None,
    symbols: Iterable[str] | None = None,
    *,
    contract_values: Mapping[str, Any] | None = None,
    skip_bad_frames: bool = False,
    skip_bad_rows: bool = False,
) -> RecordingBronze:
    """:func:`recording_trades` plus each market's id space and the time the recording covers.

    Every row is screened first (:func:`datasets.validate.screen_trades`, rows named by file
    line): a bad one raises :class:`~datasets.validate.BadRowsError`, or with ``skip_bad_rows``
    is returned in ``bad_rows`` and left out of ``trades``.

    The recording covers, per connection family (exchange), its first to last received frame.
    A symbol that arrives both as Binance ``@aggTrade`` (aggregate ids) and ``@trade`` (fill ids)
    keeps only its aggregate trades, which the contract names (a note says so), so that one
    partition never mixes the two numberings.
    """
    p = Path(path)
    info: dict = {}
    rows, bad = trades_from_frames(
        iter_frames(p),
        exchange=exchange,
        symbols=symbols,
        contract_values=contract_values,
        skip_bad_frames=skip_bad_frames,
        what=p.name,
        info=info,
    )
    df = pd.DataFrame.from_records(rows, columns=list(Trade._fields))
    screened = screen_trades(df, what=p.name, rows=info["row_line"], skip_bad_rows=skip_bad_rows)
    space = pd.Series(info["row_id_space"], index=df.index, dtype=object)[screened.good.index]
    df = screened.good
    notes: list[str] = []
    spaces: dict = {}
    if len(df):
        keep = pd.Series(True, index=df.index)
        for (ex, sym), idx in df.groupby(["exchange", "symbol"]).groups.items():
            kinds = set(space[idx])
            if len(kinds) > 1 and "binance_agg_trade" in kinds:
                fills = idx[(space[idx] != "binance_agg_trade").to_numpy()]
                keep[fills] = False
                notes.append(
                    f"{p.name}: {ex}/{sym} arrives as both @aggTrade and @trade streams; kept the "
                    f"aggregate trades, left out {len(fills)} fill rows"
                )
                kinds = {"binance_agg_trade"}
            spaces[(ex, sym)] = sorted(kinds)[0]
        df = df[keep.to_numpy()]
    trades = sort_trades(validate_bronze(df, what=p.name))
    coverage = {}
    for ex in trades["exchange"].unique() if len(trades) else []:
        # First to last frame of the connection; its own trades' times too, in case the
        # recorder's clock ran behind the exchange's.
        ts = trades["ts_ms"].to_numpy()[(trades["exchange"] == ex).to_numpy()]
        lo, hi = int(ts.min()), int(ts.max())
        span = info["frames_ms"].get(_family(ex))
        if span is not None:
            lo, hi = min(lo, int(span[0])), max(hi, int(span[1]))
        coverage[ex] = [[lo, hi + 1]]
    return RecordingBronze(trades, spaces, coverage, bad, notes, screened.bad)


def recording_trades(
    path: str | os.PathLike[str],
    exchange: str | None = None,
    symbols: Iterable[str] | None = None,
    *,
    contract_values: Mapping[str, Any] | None = None,
    skip_bad_frames: bool = False,
) -> pd.DataFrame:
    """Bronze trades of a recording: validated, ordered by ``(ts_ms, trade_id)``, deduplicated.

    Args:
        path: a recording in one of :data:`FORMATS`.
        exchange: keep only this exchange (see :func:`trades_from_frames`); default: the
            perpetual markets ``binance_usdm``, ``bybit_linear``, ``okx_swap``.
        symbols: keep only these symbols.
        contract_values: OKX instId → ctVal overrides.
        skip_bad_frames: skip malformed frames instead of raising.

    Example:
        >>> df = recording_trades("binance_usdm_multi_2021-07-22_frames.txt", symbols=["SUSHIUSDT"])
    """
    p = Path(path)
    info: dict = {}
    rows, _ = trades_from_frames(
        iter_frames(p),
        exchange=exchange,
        symbols=symbols,
        contract_values=contract_values,
        skip_bad_frames=skip_bad_frames,
        what=p.name,
        info=info,
    )
    df = pd.DataFrame.from_records(rows, columns=list(Trade._fields))
    screen_trades(df, what=p.name, rows=info["row_line"])  # raises on a bad row
    return sort_trades(validate_bronze(df, what=p.name))
