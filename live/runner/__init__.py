"""The live runner: exchange WebSocket → adapter → per-symbol kernel → decision → journal.

One asyncio loop, one connection per exchange, one kernel state per symbol. Each trade
goes through the same `signals.update` that `bt` loops over in `signals.run_batch`, in the
same order (by trade id within a symbol), so the journal equals `bt signals` on the same
trades. Around that core:

- ids: on exchanges with consecutive ids (Binance) a trade whose id is not above the symbol's
  last is a repeat and is dropped, and a jump is a gap, fetched over REST before the trade that
  revealed it is processed; on the others (Bybit's ids come from UUIDs, OKX's are sparse) a
  trade is a repeat when its id is among the symbol's recent ids;
- reconnects with exponential back-off and full jitter; a connection with no frame for
  `stale_s` is treated as dead; Binance connections are renewed before their 24 h limit;
- warm-up (`rest`, `lake` or `none`): history runs through the kernel with signals muted;
- restart: events already in the journal under the same config are not emitted again;
- SIGTERM/SIGINT: stop reading, decide what is pending (Binance `@trade` merge), flush, exit.

Latency: the transport is picows, and each message is decided inside its callback, with no
queue and no task switch; only REST work (a gap's backfill, a reconnect's catch-up) makes the
frames behind it wait, in order, with the socket not read meanwhile. The start-up heap is
frozen for the garbage collector. With `busy_poll` the runner spins instead of sleeping and
rehearses the frame path on scratch state while idle, so that the frame after a quiet spell
does not find it cold (see `Runner._poll_busily`).

Modules: ``options`` (:class:`RunnerOptions`, limits, back-off), ``ids`` (the pure per-symbol id
and gap checks, :class:`IdTracker`, and :class:`SymbolFeed`), ``core`` (:class:`Runner`: frames,
trades, decisions), ``lifecycle`` (start, SIGTERM, drain), ``connection`` (picows), ``rest``
(backfill, catch-up, warm-up), ``health`` (health, metrics, counters).
"""

from live.runner.connection import _Listener
from live.runner.core import Runner, SymbolFeed
from live.runner.ids import IdTracker
from live.runner.options import RunnerOptions, backoff_delay

__all__ = ["RunnerOptions", "Runner", "SymbolFeed", "IdTracker", "backoff_delay", "_Listener"]
