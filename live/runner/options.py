"""What `live run` can set (:class:`RunnerOptions`), the connection's limits, and the reconnect back-off."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from datasets._retry import backoff_s

OPEN_TIMEOUT_S = 10.0  # TCP connect + WebSocket handshake
CLOSE_TIMEOUT_S = 2.0  # wait for the server's answer to our close frame
PING_IDLE_S = 20.0  # ping after this long without a message; drop the connection if no pong within as long
MAX_MESSAGE_BYTES = 2**23
REHEARSE_EVERY_S = 0.002  # see Runner._poll_busily


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return backoff_s(attempt, base_s, cap_s, rng)


@dataclass
class RunnerOptions:
    """Everything `live run` can set. Times in seconds unless the name says otherwise."""

    exchange: str
    symbols: list[str]
    ws_url: str | None = None
    rest_url: str | None = None
    journal: str | None = None
    warmup_from: str = "none"  # rest | lake | none
    warmup_s: float | None = None
    lake: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    stream: str = "aggTrade"  # Binance only: aggTrade or trade
    stale_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    rest_retries: int = 3
    max_backfill_ids: int = 200_000
    idle_exit_s: float | None = None
    metrics_out: str | None = None
    paper: str | None = None  # file of paper-trading outcomes (needs Decider.paper_rules)
    echo: bool = True
    busy_poll: bool = False  # spin and keep the frame path warm while waiting for frames (Runner._poll_busily)
    journal_blob: str | None = None  # az://container/path/journal.jsonl: a copy of the journal
    max_frame_age_s: float = 60.0
    contract_values: dict[str, Any] | None = None
    clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    seed: int | None = None


def _fan_out(sinks: list[Callable[[str], None]]) -> Callable[[str], None]:
    """One journal-line callback that hands the line to every sink (stdout echo, blob copy)."""
    if len(sinks) == 1:
        return sinks[0]

    def send(line: str) -> None:
        for sink in sinks:
            sink(line)

    return send
