"""`live replay FILE --port P`: serve a recording over a WebSocket as the exchange would."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError

EXAMPLE = """\
Serves the recording's frames on the exchange's URL paths (Binance /stream?streams=...
and /ws, Bybit /v5/public/linear, OKX /ws/v5/public) after the client's subscription,
plus Binance REST /fapi/v1/aggTrades and /fapi/v1/historicalTrades on the same port.
The tape carries over between connections, like a market.

Example:
  live replay tests/data/real/binance_usdm_btcusdt_2024-08-08_stream.txt.gz --port 9001 --speed max
  live replay tests/data/real/bybit_v5_multi_2026-08-09_frames.jsonl.zst --port 9002 --speed 10
  # faults: drop every 2000 frames losing 50, a 3 s stall at 5000, garbage every 700
  live replay REC --port 9001 --drop-after 2000 --lose 50 --stall-after 5000 --stall-s 3 --garbage-every 700
"""


def _speed(text: str) -> float:
    if text == "max":
        return float("inf")
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'max'; got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'max'; got {text!r}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="serve a recorded file over a WebSocket, optionally with faults",
        description="Replay recorded exchange frames over a real WebSocket server.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="recording (hftbacktest or cryptofeed layout)")
    p.add_argument("--port", type=int, required=True, help="TCP port (0: any free port, printed)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind")
    p.add_argument("--speed", type=_speed, default=1.0, help="pace factor (1 = recorded pace) or max")
    p.add_argument("--drop-after", type=int, default=None, metavar="N", help="abort each connection after N frames")
    p.add_argument("--lose", type=int, default=0, metavar="N", help="frames lost on each reconnect (a gap)")
    p.add_argument("--repeat", type=int, default=0, metavar="N", help="frames re-sent on each reconnect (duplicates)")
    p.add_argument("--stall-after", type=int, default=None, metavar="N", help="go silent once after N frames")
    p.add_argument("--stall-s", type=float, default=5.0, help="length of the stall")
    p.add_argument("--garbage-every", type=int, default=None, metavar="N", help="send a malformed frame every N frames")
    p.add_argument("--exit-at-end", action="store_true", help="exit once the whole recording has been sent")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal
    import sys
    from pathlib import Path

    from live.replay import FaultPlan, ReplayServer, load_tape

    for name in ("drop_after", "stall_after", "garbage_every"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1; got {v}")
    if args.lose < 0 or args.repeat < 0:
        raise UserError("--lose and --repeat must be >= 0")
    if not Path(args.file).is_file():
        raise UserError(
            f"recording {args.file} not found; give a file such as "
            "tests/data/real/binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
        )
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    tape = load_tape(args.file)
    faults = FaultPlan(args.drop_after, args.lose, args.repeat, args.stall_after, args.stall_s, args.garbage_every)

    async def main() -> int:
        server = await ReplayServer(tape, host=args.host, port=args.port, speed=args.speed, faults=faults).start()
        keys = sorted(tape.keys().items(), key=lambda kv: -kv[1])[:6]
        print(
            f"replaying {tape.source}: {len(tape.frames):,} {tape.family} frames "
            f"({', '.join(f'{k} {n:,}' for k, n in keys)}) on {server.url}",
            file=sys.stderr,
            flush=True,
        )
        print(server.url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waits = [asyncio.create_task(stop.wait())]
        if args.exit_at_end:
            waits.append(asyncio.create_task(server.ended_and_closed.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        await server.stop()
        print(
            f"replay: {server.sent:,} frames sent over {server.connections} connection(s), "
            f"{server.garbage_sent} garbage, {server.rest_requests} REST requests",
            file=sys.stderr,
        )
        return 0

    try:
        return asyncio.run(main())
    except OSError as exc:
        raise UserError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); pick another --port"
        ) from None
