"""What `live run` can set (:class:`RunnerOptions`), the connection's limits, and the reconnect back-off."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from datasets._retry import backoff_s
from whalebt.errors import UserError

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
    max_frame_age_s: float = 60.0  # /health: 503 when no frame for this long, or a symbol stuck this long
    max_future_s: float = 600.0  # trades (and journal records) timed beyond the wall clock + this are refused
    silence_s: float = 10.0  # a connection that brought no trade of our symbols for this long is "silent"
    http_token: str | None = None  # bearer token for /signals and /metrics (WHALEBT_HTTP_TOKEN)
    journal_blob_timeout_s: float = 15.0  # reaching the --journal-blob account at start
    contract_values: dict[str, Any] | None = None
    clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    seed: int | None = None

    def __post_init__(self) -> None:
        """Refuse settings that make no sense (each names its `live run` flag)."""
        positive = {
            "--stale-s": self.stale_s,
            "--backoff-base-s": self.backoff_base_s,
            "--backoff-cap-s": self.backoff_cap_s,
            "--health-max-age-s": self.max_frame_age_s,
            "--journal-blob-timeout-s": self.journal_blob_timeout_s,
            "max_future_s": self.max_future_s,
            "silence_s": self.silence_s,
        }
        if self.idle_exit_s is not None:
            positive["--idle-exit-s"] = self.idle_exit_s
        for flag, v in positive.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UserError(f"{flag} must be a number of seconds above 0; got {v!r}")
        if self.backoff_cap_s < self.backoff_base_s:
            raise UserError(
                f"--backoff-cap-s ({self.backoff_cap_s}) must be at least --backoff-base-s ({self.backoff_base_s})"
            )
        if self.warmup_s is not None and not (math.isfinite(self.warmup_s) and 0 <= self.warmup_s <= 86_400):
            raise UserError(f"--warmup-s must be between 0 and 86400 seconds; got {self.warmup_s!r}")
        if self.max_backfill_ids < 0:
            raise UserError(f"--max-backfill-ids must be 0 or more; got {self.max_backfill_ids}")
        if self.rest_retries < 1:
            raise UserError(f"rest_retries must be at least 1; got {self.rest_retries}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise UserError(f"--http-port must be between 0 and 65535; got {self.http_port}")


def _fan_out(sinks: list[Callable[[str], None]]) -> Callable[[str], None]:
    """One journal-line callback that hands the line to every sink (stdout echo, blob copy)."""
    if len(sinks) == 1:
        return sinks[0]

    def send(line: str) -> None:
        for sink in sinks:
            sink(line)

    return send
