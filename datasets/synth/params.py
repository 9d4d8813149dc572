"""What to generate: :class:`SynthParams`, validated on construction."""

from __future__ import annotations

from whalebt.errors import UserError
import datetime as dt
from dataclasses import dataclass


from datasets.synth.calibration import DAY_S


@dataclass(frozen=True)
class SynthParams:
    """What to generate. Validated on construction (``ValueError`` names the bad field).

    Attributes:
        symbol: upper case, no separators (``PLANTUSDT``).
        start: first UTC day. days: number of days.
        seed: the whole market is a function of the seed and these parameters.
        trades_per_s: mean aggTrades per second (the recorded BTCUSDT minutes had ~30).
        plant_effect_bps: drift after each planted whale, in bps of simple return.
        plant_horizon_s: seconds over which that drift builds up.
        whale_notional_usd: planted whales have notional uniform in [X, 2X]; organic trades stay below X.
        whale_rate_per_day: mean number of planted whales per day.
        null: plant the whales but no drift (a control market).
        profile: which calibrated symbol to imitate (``BTCUSDT`` or ``ETHUSDT``).
        start_price: first price; default the profile's median price.
    """

    symbol: str = "PLANTUSDT"
    start: dt.date = dt.date(2024, 3, 1)
    days: int = 10
    seed: int = 0
    trades_per_s: float = 3.0
    plant_effect_bps: float = 30.0
    plant_horizon_s: float = 3600.0
    whale_notional_usd: float = 1_000_000.0
    whale_rate_per_day: float = 6.0
    null: bool = False
    profile: str = "BTCUSDT"
    start_price: float | None = None

    def __post_init__(self):
        if not self.symbol or not self.symbol.isalnum() or self.symbol != self.symbol.upper():
            raise UserError(f"symbol must be upper case letters and digits (like PLANTUSDT); got {self.symbol!r}")
        if not isinstance(self.start, dt.date):
            object.__setattr__(self, "start", dt.date.fromisoformat(str(self.start)))
        checks = [
            ("days", self.days, 1 <= self.days <= 3660, "between 1 and 3660"),
            ("trades_per_s", self.trades_per_s, 0 < self.trades_per_s <= 500, "in (0, 500]"),
            ("plant_horizon_s", self.plant_horizon_s, 1 <= self.plant_horizon_s <= DAY_S, "between 1 and 86400"),
            ("whale_notional_usd", self.whale_notional_usd, self.whale_notional_usd >= 1000, "at least 1000"),
            ("whale_rate_per_day", self.whale_rate_per_day, self.whale_rate_per_day >= 0, "0 or more"),
            ("plant_effect_bps", self.plant_effect_bps, -5000 < self.plant_effect_bps <= 5000, "in (-5000, 5000]"),
        ]
        for name, value, ok, want in checks:
            if not ok:
                raise UserError(f"{name} must be {want}; got {value}")
        max_rate = DAY_S / (1.25 * self.plant_horizon_s)
        if self.whale_rate_per_day >= max_rate:
            raise UserError(
                f"whale_rate_per_day {self.whale_rate_per_day:g} is too high for plant_horizon_s "
                f"{self.plant_horizon_s:g}: planted effects must not overlap (gaps of at least 1.25 x horizon), "
                f"so use fewer than {max_rate:.1f} whales per day or a shorter horizon"
            )

    @property
    def effect_bps(self) -> float:
        """The drift actually planted (0 for a null market)."""
        return 0.0 if self.null else float(self.plant_effect_bps)

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)
