"""Whale-rule parameters: a frozen, validated value object (no YAML, no I/O)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

__all__ = ["WhaleParams"]

_FLOW_ONLY_KEYS = ("q", "lookback_s", "min_samples")


def _is_int(x: Any) -> bool:
    # bool is an int subclass; `window_s: true` in YAML is a mistake, not 1 second.
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class WhaleParams:
    """Which trades are whale events (docs/spec.md §3).

    Attributes:
        min_notional_usd: notional rule, fires when one trade's price * qty >= this.
        window_s: flow rule, taker-buy notional over the last `window_s` seconds.
        q: flow rule, the trade fires when that flow is strictly above the `q` quantile
            of the flow's per-second history.
        lookback_s: flow rule, number of closed seconds kept in that history.
        min_samples: flow rule, no firing before the history holds this many seconds.
        cooldown_s: after an event, no new event before `last_event_ts + cooldown_s`.

    At least one of `min_notional_usd` and `window_s` must be set; with both, an event
    fires if either rule fires. Only taker buys (side +1) can fire.
    """

    min_notional_usd: float | None = None
    window_s: int | None = None
    q: float = 0.99
    lookback_s: int = 3600
    min_samples: int = 60
    cooldown_s: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        m = self.min_notional_usd
        if m is not None and not (_is_real(m) and math.isfinite(m) and m > 0):
            problems.append(f"min_notional_usd must be a number > 0 or null; got {m!r}")
        w = self.window_s
        if w is not None and not (_is_int(w) and w >= 1):
            problems.append(f"window_s must be a whole number of seconds >= 1 or null; got {w!r}")
        if not (_is_real(self.q) and 0.0 < self.q < 1.0):
            problems.append(f"q must be a quantile strictly between 0 and 1; got {self.q!r}")
        if not (_is_int(self.lookback_s) and self.lookback_s >= 1):
            problems.append(f"lookback_s must be a whole number of seconds >= 1; got {self.lookback_s!r}")
        if not (_is_int(self.min_samples) and self.min_samples >= 1):
            problems.append(f"min_samples must be a whole number >= 1; got {self.min_samples!r}")
        elif _is_int(self.lookback_s) and self.min_samples > self.lookback_s:
            problems.append(
                f"min_samples ({self.min_samples}) exceeds lookback_s ({self.lookback_s}), so the "
                "flow rule could never fire; lower min_samples or raise lookback_s"
            )
        c = self.cooldown_s
        if not (_is_real(c) and math.isfinite(c) and c >= 0):
            problems.append(f"cooldown_s must be a number of seconds >= 0; got {c!r}")
        if m is None and w is None:
            problems.append("no whale rule set: give min_notional_usd, window_s, or both")
        if problems:
            raise ValueError("invalid whale params: " + "; ".join(problems))
        # Canonical float types so equal configs hash and compare equal (1e6 vs 1000000).
        if m is not None:
            object.__setattr__(self, "min_notional_usd", float(m))
        object.__setattr__(self, "q", float(self.q))
        object.__setattr__(self, "cooldown_s", float(c))

    @property
    def uses_flow(self) -> bool:
        return self.window_s is not None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WhaleParams":
        """Build from a mapping such as the `signal.whale` block of a config.

        Args:
            d: keys among the dataclass fields.

        Raises:
            ValueError: unknown keys (with a suggestion), flow-rule keys without `window_s`,
                no rule, or out-of-range values.

        Example:
            >>> WhaleParams.from_dict({"window_s": 5, "q": 0.99})
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"whale params must be a mapping; got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = [k for k in d if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown whale params key(s): {', '.join(hints)}; expected keys among {known}")
        if d.get("window_s") is None:
            stray = [k for k in _FLOW_ONLY_KEYS if k in d]
            if stray:
                raise ValueError(
                    f"{stray} only apply to the flow rule, which is off because window_s is not "
                    "set; add window_s or remove them"
                )
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """The resolved params; flow-rule keys only when the flow rule is on, so
        `WhaleParams.from_dict(p.to_dict()) == p`."""
        out: dict[str, Any] = {}
        if self.min_notional_usd is not None:
            out["min_notional_usd"] = self.min_notional_usd
        if self.window_s is not None:
            out["window_s"] = self.window_s
            out["q"] = self.q
            out["lookback_s"] = self.lookback_s
            out["min_samples"] = self.min_samples
        out["cooldown_s"] = self.cooldown_s
        return out
