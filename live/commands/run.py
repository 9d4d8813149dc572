"""`live run`: the backtested signal code on an exchange WebSocket, journaling each decision."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError, add_lake_option, add_tracking_uri_option, env_default

EXAMPLE = """\
One kernel state per symbol; each whale event is decided as `bt signals` decides it and
written as one JSON line (docs/spec.md §5) to stdout and to --journal (fsync'd). SIGTERM drains and
flushes. A restart with the same --journal does not emit old events again. Each `long` is
paper-traded by the config's backtest rules into --paper (see `live report`).

Warm-up: `rest` (default on a real exchange) runs recent history through the kernel with
signals muted; `lake` reads it from the lake's bronze; `none` (default with --ws-url)
starts cold, as `bt signals` does at the start of its data.

Example:
  live run --config configs/demo_live.yaml --exchange binance_usdm --symbols BTCUSDT \\
      --ws-url ws://127.0.0.1:9001/stream --stream trade --journal results/live/journal.jsonl \\
      --http-port 9100
  live run --config configs/demo_live.yaml --exchange bybit_linear --symbols BTCUSDT,ETHUSDT
  live run --config configs/universe.yaml --exchange binance_usdm   # the config's data.symbols
  live run --model models:/whale-btcusdt@live --exchange binance_usdm --symbols BTCUSDT,ETHUSDT
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the signal kernel on an exchange WebSocket and journal decisions",
        description="Run whale signals live: WebSocket trades → kernel → decision → journal.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="YAML run config (docs/spec.md §7): its signal section decides")
    src.add_argument("--model", help="registered model URI, e.g. models:/whale-btcusdt@live")
    p.add_argument("--exchange", required=True, choices=["binance_usdm", "bybit_linear", "okx_swap"])
    p.add_argument(
        "--symbols",
        default=None,
        help="comma-separated, e.g. BTCUSDT,ETHUSDT (default with --config: its data.symbol, data.symbols "
        "or data.universe on --exchange, as `bt run` resolves them)",
    )
    p.add_argument("--ws-url", default=None, help="WebSocket URL instead of the exchange's (e.g. a `live replay`)")
    p.add_argument(
        "--rest-url",
        default=None,
        help="REST base for backfill/warm-up (default: the exchange's; with --ws-url, its host over http)",
    )
    p.add_argument(
        "--journal",
        default=env_default("WHALEBT_JOURNAL", ""),
        help="append decisions to this JSONL file (env WHALEBT_JOURNAL)",
    )
    p.add_argument(
        "--warmup-from",
        choices=["rest", "lake", "none"],
        default=None,
        help="history before signals are allowed (default: rest; none with --ws-url)",
    )
    p.add_argument("--warmup-s", type=float, default=None, help="seconds of warm-up history (default: from the rule)")
    add_lake_option(p, help="lake for --warmup-from lake")
    p.add_argument(
        "--stream",
        choices=["aggTrade", "trade"],
        default="aggTrade",
        help="Binance stream: aggTrade, or raw trade fills merged like aggTrades",
    )
    p.add_argument("--http-port", type=int, default=None, help="serve /health, /metrics, /signals on this port")
    p.add_argument(
        "--http-host",
        default=env_default("WHALEBT_HTTP_HOST", "127.0.0.1"),
        help="interface for --http-port (0.0.0.0 in a container: then WHALEBT_HTTP_TOKEN must be set, and "
        "/signals and /metrics need `Authorization: Bearer $WHALEBT_HTTP_TOKEN`; /health stays open)",
    )
    p.add_argument(
        "--health-max-age-s",
        type=float,
        default=60.0,
        help="/health is 503 when no frame came for this long, or a symbol's trades arrive but none is taken",
    )
    p.add_argument(
        "--silence-s",
        type=float,
        default=30.0,
        help="warn (log, /health 503, metric) when a connection brings no trade of --symbols for this long",
    )
    p.add_argument("--stale-s", type=float, default=60.0, help="reconnect when no frame arrives for this long")
    p.add_argument("--backoff-base-s", type=float, default=0.5, help="first reconnect delay (doubles, with jitter)")
    p.add_argument("--backoff-cap-s", type=float, default=30.0, help="longest reconnect delay")
    p.add_argument("--idle-exit-s", type=float, default=None, help="drain and exit after this long without frames")
    p.add_argument(
        "--max-backfill-ids",
        type=int,
        default=200_000,
        help="largest gap in trade ids fetched over REST (larger ones are logged and counted)",
    )
    p.add_argument("--metrics-out", default=None, help="write the final /metrics text here on exit")
    p.add_argument(
        "--paper",
        default=None,
        help="paper-trading outcomes file (default: next to --journal, *.paper.jsonl; 'none' to skip)",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo journal lines to stdout")
    p.add_argument(
        "--busy-poll",
        action="store_true",
        help="spin instead of sleeping while waiting for frames, and keep the frame path warm: the lowest "
        "latency after quiet spells, for one core kept at 100%% (give the runner a core of its own)",
    )
    p.add_argument(
        "--journal-blob",
        default=env_default("WHALEBT_JOURNAL_BLOB", ""),
        help="also append journal lines to an Azure append blob, e.g. az://journals/live/btc.jsonl "
        "(credentials as for an Azure lake; env WHALEBT_JOURNAL_BLOB)",
    )
    p.add_argument(
        "--journal-blob-timeout-s",
        type=float,
        default=15.0,
        help="give up starting when the --journal-blob storage account does not answer within this long",
    )
    add_tracking_uri_option(p, what="for --model / model.uri")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os
    import sys
    from urllib.parse import urlsplit, urlunsplit

    from live.decider import Decider, ModelUnavailable

    if args.symbols is None:
        if not args.config:
            raise UserError("--model needs --symbols, e.g. --symbols BTCUSDT,ETHUSDT")
        from bt.config import load_config
        from bt.universe import symbols_on

        args.symbols = ",".join(symbols_on(load_config(args.config), args.exchange))
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        raise UserError(f"--symbols needs at least one symbol, e.g. BTCUSDT; got {args.symbols!r}")
    if args.exchange == "okx_swap":  # BTCUSDT, BTC-USDT and BTC-USDT-SWAP, as `datasets ingest` takes them
        from datasets.exchanges import okx

        try:
            symbols = [okx.from_inst_id(okx.to_inst_id(s)) for s in symbols]
        except ValueError as exc:
            raise UserError(str(exc)) from None
    bad = [s for s in symbols if not s.isalnum()]
    if bad:
        raise UserError(f"symbols are upper case without separators (BTCUSDT, not BTC-USDT); got {bad}")
    if args.journal:
        from live.journal import check_journal_path

        check_journal_path(args.journal)
    if args.http_port is not None and not 0 <= args.http_port <= 65535:
        raise UserError(f"--http-port must be between 0 and 65535; got {args.http_port}")
    token = os.environ.get("WHALEBT_HTTP_TOKEN") or None
    if args.http_port is not None and not token:
        from live.http import is_loopback

        if not is_loopback(args.http_host):
            raise UserError(
                f"--http-host {args.http_host} is reachable from other machines: set WHALEBT_HTTP_TOKEN to a "
                "secret (e.g. `openssl rand -hex 32`) so that /signals and /metrics need it, or bind 127.0.0.1"
            )
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    from live.runner import Runner, RunnerOptions

    warmup = args.warmup_from or ("none" if args.ws_url else "rest")
    rest_url = args.rest_url
    if rest_url is None and args.ws_url:
        parts = urlsplit(args.ws_url)
        rest_url = urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "", "", ""))
    paper = args.paper
    if paper is None and args.journal:
        j = args.journal
        paper = (j[: -len(".jsonl")] if j.endswith(".jsonl") else j) + ".paper.jsonl"
    if paper == "none":
        paper = None
    opts = RunnerOptions(
        exchange=args.exchange,
        symbols=symbols,
        ws_url=args.ws_url,
        rest_url=rest_url,
        journal=args.journal or None,
        warmup_from=warmup,
        warmup_s=args.warmup_s,
        lake=args.lake,
        http_host=args.http_host,
        http_port=args.http_port,
        stream=args.stream,
        stale_s=args.stale_s,
        backoff_base_s=args.backoff_base_s,
        backoff_cap_s=args.backoff_cap_s,
        idle_exit_s=args.idle_exit_s,
        metrics_out=args.metrics_out,
        paper=paper,
        max_backfill_ids=args.max_backfill_ids,
        echo=not args.quiet,
        journal_blob=args.journal_blob or None,
        busy_poll=args.busy_poll,
        max_frame_age_s=args.health_max_age_s,
        silence_s=args.silence_s,
        http_token=token,
        journal_blob_timeout_s=args.journal_blob_timeout_s,
    )
    try:
        if args.config:
            from bt.config import load_config

            config = load_config(args.config)
            decider = Decider.from_config(config, tracking_uri=args.tracking_uri)
            if config.data.exchange != args.exchange or config.data.symbol not in symbols:
                logging.getLogger("whalebt.live").info(
                    "config %s was backtested on %s/%s; running it on %s/%s",
                    config.name,
                    config.data.exchange,
                    config.data.symbol,
                    args.exchange,
                    ",".join(symbols),
                )
        else:
            decider = Decider.from_model(args.model, tracking_uri=args.tracking_uri)
    except ModelUnavailable as exc:
        raise UserError(str(exc)) from None
    warning = decider.symbol_warning(args.exchange, symbols)
    if warning:
        logging.getLogger("whalebt.live").warning("%s", warning)

    if args.exchange == "okx_swap":
        from datasets.sources.frames import UnknownContractError
        from live.adapters import OkxAdapter

        try:
            OkxAdapter().check_symbols(symbols)
        except (UnknownContractError, ValueError) as exc:
            raise UserError(str(exc)) from None
    runner = Runner(opts, decider)
    logging.getLogger("whalebt.live").info(
        "live run: %s on %s %s, config_id %s, model %s, warm-up %s",
        decider.name or "config",
        args.exchange,
        ",".join(symbols),
        decider.config_id,
        decider.model_uri,
        warmup,
    )
    return asyncio.run(runner.run())
