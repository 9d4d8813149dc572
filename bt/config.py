"""The run config, one typed tree validated once on load (docs/spec.md §7).

``RunConfig`` → ``data``, ``signal.whale`` (a :class:`signals.WhaleParams`), ``backtest``,
``portfolio``, ``model`` (:class:`ModelConfig`: split, imbalance, threshold, gate, and ``sweep``,
a :class:`bt.space.SearchSpace`). Every node is frozen and rejects unknown keys; everything
downstream receives typed values, never the YAML dicts.

A config's ``run_id`` is its name plus a hash of the resolved config, and ``config_id`` a hash of
the resolved whale rule and model, so two spellings of one config give the same ids.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_serializer,
    field_validator,
    model_validator,
)

from bt.space import SearchSpace, parse_space
from whalebt.cli import DEFAULT_LAKE, UserError
from datasets.durations import format_duration, parse_duration_ms
from signals.config import WhaleParams
from signals.journal import canonical_json, config_id

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    "UniverseConfig",
    "RankUniverse",
    "SignalConfig",
    "BacktestConfig",
    "PortfolioConfig",
    "ModelConfig",
    "SplitConfig",
    "ThresholdConfig",
    "ImbalanceConfig",
    "GateConfig",
    "DEFAULT_LGBM",
    "parse_model_config",
    "signal_config",
    "load_config",
    "parse_config",
    "parse_duration_ms",
    "format_duration",
    "apply_overrides",
    "parse_override_value",
    "cli_overrides",
    "LIMITS",
]


class ConfigError(UserError):
    """A config file is missing, malformed or inconsistent."""


class _Frozen(BaseModel):
    # No NaN or infinity anywhere: a bound like `gt=0` lets `.inf` through otherwise.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


#: What makes sense for a config value; beyond it a run costs hours or gigabytes, or means nothing.
#: Each is refused with one line naming the key, the limit and the value (docs/spec.md §7).
LIMITS: dict[str, Any] = {
    "first_date": dt.date(2017, 1, 1),  # before any crypto perpetual future traded
    "future_days": 1,  # data.end at most this many days after today (UTC)
    "name_chars": 100,
    "min_bar_ms": 1000,
    "max_bars": 5_000_000,  # equity bars over the span (about 80 bytes each, several copies)
    "max_horizon_ms": 30 * 86_400_000,
    "max_latency_ms": 3_600_000,
    "max_bootstrap": 100_000,
    "max_bps": 10_000,  # fees and slippage: 100 %
    "max_positions": 1_000,
    "max_cash": 1e15,
    "max_seed": 2**32 - 1,  # what numpy's legacy seeding accepts
    "max_period_ms": 30 * 86_400_000,
    "max_walk_forward": 100,
    "max_window_s": 86_400,
    "max_lookback_s": 30 * 86_400,
    "max_cooldown_s": 30 * 86_400,
}


def _bounded_duration(v: Any, key: str, *, lo_ms: int = 1, hi_ms: int) -> str:
    """A duration in its canonical spelling, refused outside ``[lo_ms, hi_ms]``."""
    ms = parse_duration_ms(v)
    if ms < lo_ms:
        raise ValueError(
            f"{key} must be at least {format_duration(lo_ms)}; got {v!r}; use {format_duration(lo_ms)} or more"
        )
    if ms > hi_ms:
        raise ValueError(
            f"{key} must be at most {format_duration(hi_ms)}; got {v!r}; use {format_duration(hi_ms)} or less"
        )
    return format_duration(ms)


#: LightGBM defaults for whale events: small trees (a few thousand events), one thread each,
#: deterministic so the same config and data give the same booster.
DEFAULT_LGBM: dict[str, Any] = {
    "num_leaves": 15,
    "learning_rate": 0.05,
    "num_boost_round": 200,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
}


class SplitConfig(_Frozen):
    """Time split of the events: fractions of the data span, in this order."""

    train: float = Field(0.6, gt=0, lt=1)
    validation: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    purge: str | None = None  # gap before each boundary; default (and minimum): the horizon
    walk_forward: int = Field(
        0, ge=0, le=LIMITS["max_walk_forward"], description="folds over train+validation; 0 = one split"
    )
    window: Literal["expanding", "rolling"] = "expanding"

    @field_validator("purge")
    @classmethod
    def _purge(cls, v: Any) -> str | None:
        return None if v is None else _bounded_duration(v, "purge", hi_ms=LIMITS["max_horizon_ms"])

    @model_validator(mode="after")
    def _sums(self) -> "SplitConfig":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + validation + test must be 1; got {total:g}")
        if self.walk_forward == 1:
            raise ValueError("walk_forward needs at least 2 folds (or 0 for a single split)")
        return self


class ThresholdConfig(_Frozen):
    """How the decision threshold is chosen on validation (see :func:`choose_threshold`)."""

    policy: Literal["precision_target", "max_mean_return", "top_fraction", "fixed"] = "precision_target"
    precision_target: float = Field(0.55, gt=0, le=1)
    min_signals: int = Field(20, ge=1, le=1_000_000)  # independent signals (every policy, fixed included)
    fraction: float = Field(0.2, gt=0, le=1)  # top_fraction
    value: float = Field(0.5, ge=0, le=1)  # fixed
    step: float = Field(0.01, gt=0, lt=0.5)  # candidate grid step


class ImbalanceConfig(_Frozen):
    """Class imbalance: weights (``balanced``) or keeping a seeded share of negatives."""

    method: Literal["none", "class_weight", "downsample"] = "none"
    neg_keep: float = Field(0.5, gt=0, le=1)


class GateConfig(_Frozen):
    """Promotion gate (``bt promote``, and ``bt sweep`` before registering): every condition must hold."""

    min_mean_return: float = 0.0  # out-of-sample mean net return must be above this
    min_test_signals: int = Field(30, ge=0, le=1_000_000)  # independent test signals (clusters of overlapping windows)
    min_dsr: float = Field(0.5, ge=0, le=1)
    max_pbo: float = Field(0.5, ge=0, le=1)  # probability of backtest overfitting (sweeps) at most this


class ModelConfig(_Frozen):
    """The ``model:`` section of a run config."""

    uri: str | None = None  # score with a registered model (models:/name@alias) instead of training
    features: list[str] | None = None  # default: every kernel feature
    lgbm: dict[str, Any] = Field(default_factory=dict)
    split: SplitConfig = SplitConfig()
    imbalance: ImbalanceConfig = ImbalanceConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    objective: Literal["mean_return", "sum_return", "sharpe"] = "mean_return"
    period: str = "1h"  # per-period returns for Sharpe, DSR and PBO
    seed: int = Field(0, ge=0, le=LIMITS["max_seed"])
    registry_name: str | None = None  # default whale-<symbol, lower case>; a universe: whale-<config name>
    gate: GateConfig = GateConfig()
    sweep: SearchSpace | None = None  # what `bt sweep` searches (bt.space)

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        from signals.features import feature_index

        for name in v:
            feature_index(name)  # ValueError listing the known names
        if len(set(v)) != len(v):
            raise ValueError(f"features are listed twice: {sorted({x for x in v if v.count(x) > 1})}")
        return v

    @field_validator("lgbm")
    @classmethod
    def _lgbm(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in ("objective", "num_class", "linear_tree") if k in v]
        if bad:
            raise ValueError(f"lgbm may not set {bad}: the model is a binary classifier with plain trees")
        return v

    @field_validator("sweep", mode="before")
    @classmethod
    def _sweep(cls, v: Any) -> Any:
        return v if v is None or isinstance(v, SearchSpace) else parse_space(v)

    @field_serializer("sweep")
    def _dump_sweep(self, v: SearchSpace | None) -> dict[str, Any] | None:
        return None if v is None else v.to_dict()

    @field_validator("period")
    @classmethod
    def _period(cls, v: Any) -> str:
        return _bounded_duration(v, "period", lo_ms=1000, hi_ms=LIMITS["max_period_ms"])

    @property
    def feature_names(self) -> tuple[str, ...]:
        from signals.features import FEATURE_NAMES

        return tuple(self.features) if self.features else FEATURE_NAMES

    @property
    def period_ms(self) -> int:
        return parse_duration_ms(self.period)

    def lgbm_params(self) -> dict[str, Any]:
        return {**DEFAULT_LGBM, **self.lgbm}


def parse_model_config(raw: Any, source: str = "model") -> ModelConfig:
    """Validate the ``model:`` mapping of a run config; ValueError names the bad keys."""
    if isinstance(raw, ModelConfig):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping (the model section); got {type(raw).__name__}")
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in (source, *err["loc"]))
            if err["type"] == "extra_forbidden":
                msgs.append(f"unknown key {loc!r}")
            else:
                msgs.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("; ".join(msgs)) from None


class RankUniverse(_Frozen):
    """``data.universe.rank``: the top symbols of ``datasets rank`` over the days before ``data.start``."""

    exchange: Literal["binance_usdm"] = "binance_usdm"
    klines: str  # archive directory or base URL of daily klines (as `datasets rank --klines`)
    top: int = Field(ge=1, le=500)
    by: str = "score"  # the weighted score, or one component (kyle_lambda, big_move_share, wide_range_share)
    lookback_days: int = Field(90, ge=1, le=3660)  # klines of these days, ending the day before data.start
    exchange_info: str | None = None
    filters: dict[str, Any] = Field(default_factory=dict)  # datasets.rank.RankFilters fields, e.g. min_days

    @field_validator("by")
    @classmethod
    def _by(cls, v: str) -> str:
        known = ("score", "kyle_lambda", "big_move_share", "wide_range_share")
        if v not in known:
            raise ValueError(f"by must be one of {list(known)}; got {v!r}")
        return v


class UniverseConfig(_Frozen):
    """``data.universe``: a universe chosen at run time (bt.universe resolves it into ``data.symbols``)."""

    rank: RankUniverse


_SYMBOL_RE = r"[A-Z0-9]+"


def _check_symbol(v: str) -> str:
    if not re.fullmatch(_SYMBOL_RE, v):
        raise ValueError(f"symbol must be upper case with no separators (like BTCUSDT); got {v!r}")
    return v


class DataConfig(_Frozen):
    """The data span: one ``symbol``, or a universe (``symbols``, or ``universe`` resolved at run time).

    ``symbols`` entries are ``SYM`` (on ``exchange``) or ``exchange:SYM``; a mapping
    ``{exchange: [SYM, ...]}`` is accepted too. One plain entry means ``symbol: SYM`` (same ids).
    """

    lake: str = DEFAULT_LAKE
    exchange: str
    symbol: str = ""  # empty in a universe
    start: dt.date
    end: dt.date
    price_exchange: str | None = None  # evaluate entries/exits on another venue's trades
    symbols: tuple[str, ...] | None = None
    universe: UniverseConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_symbol(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        syms = v.get("symbols")
        if isinstance(syms, dict):  # {exchange: [SYM, ...]}
            syms = [s if ex == v.get("exchange") else f"{ex}:{s}" for ex, lst in syms.items() for s in (lst or [])]
            v = {**v, "symbols": syms}
        if isinstance(syms, str):  # "A,B" (as on a command line)
            syms = [x.strip() for x in syms.split(",") if x.strip()]
            v = {**v, "symbols": syms}
        if (
            isinstance(syms, (list, tuple))
            and len(syms) == 1
            and isinstance(syms[0], str)
            and ":" not in syms[0]
            and not v.get("symbol")
            and v.get("universe") is None
        ):
            v = {k: x for k, x in v.items() if k != "symbols"}
            v["symbol"] = syms[0]
        return v

    @field_validator("symbol")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v if v == "" else _check_symbol(v)

    @field_validator("symbols")
    @classmethod
    def _members(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("symbols is empty; list at least one, e.g. [BTCUSDT, ETHUSDT]")
        for entry in v:
            ex, _, sym = entry.rpartition(":")
            if ex and not re.fullmatch(r"[a-z0-9_]+", ex):
                raise ValueError(f"a symbols entry is SYM or exchange:SYM (like bybit_linear:BTCUSDT); got {entry!r}")
            _check_symbol(sym)
        if len(set(v)) != len(v):
            raise ValueError(f"symbols are listed twice: {sorted({x for x in v if v.count(x) > 1})}")
        return v

    @field_validator("lake")
    @classmethod
    def _lake(cls, v: str) -> str:
        if "://" not in v and os.path.isfile(v):
            raise ValueError(f"lake {v!r} is a file; give a lake directory or an az:// URI")
        return v

    @model_validator(mode="after")
    def _span(self) -> "DataConfig":
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}; swap them")
        if self.symbol and (self.symbols is not None or self.universe is not None):
            raise ValueError("give symbol, or symbols/universe, not both")
        if not self.symbol and self.symbols is None and self.universe is None:
            raise ValueError("data needs symbol (one), symbols (a list) or universe (a rank)")
        first = LIMITS["first_date"]
        if self.start < first:
            raise ValueError(f"start {self.start} is before {first} (no perpetual future traded); use {first} or later")
        last = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=LIMITS["future_days"])
        if self.end > last:
            raise ValueError(f"end {self.end} is in the future; use {last} (tomorrow, UTC) or earlier")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # A single-symbol config dumps exactly as before universes existed (same run_id); a
        # universe leaves out the symbol it does not have.
        out = handler(self)
        for key in ("symbols", "universe"):
            if out.get(key) is None:
                out.pop(key, None)
        if out.get("symbol") == "" and ("symbols" in out or "universe" in out):
            out.pop("symbol")
        return out

    @property
    def is_universe(self) -> bool:
        return not self.symbol

    @property
    def members(self) -> tuple[tuple[str, str], ...]:
        """``(exchange, symbol)`` of each study; a universe must be resolved first (bt.universe)."""
        if self.symbol:
            return ((self.exchange, self.symbol),)
        if self.symbols is None:
            raise ValueError("data.universe is not resolved yet (bt.universe.resolve_universe)")
        out = []
        for entry in self.symbols:
            ex, _, sym = entry.rpartition(":")
            out.append((ex or self.exchange, sym))
        return tuple(out)


class SignalConfig(_Frozen):
    whale: WhaleParams  # the resolved rule: defaults filled in, numbers canonical (1e6 == 1000000)

    @field_validator("whale", mode="before")
    @classmethod
    def _whale(cls, v: Any) -> WhaleParams:
        w = v if isinstance(v, WhaleParams) else WhaleParams.from_dict(v)  # ValueError with the reason
        for key, value, limit in (
            ("window_s", w.window_s, LIMITS["max_window_s"]),
            ("lookback_s", w.lookback_s if w.uses_flow else None, LIMITS["max_lookback_s"]),
            ("cooldown_s", w.cooldown_s, LIMITS["max_cooldown_s"]),
        ):
            if value is not None and value > limit:
                raise ValueError(f"{key} must be at most {limit:,} s ({format_duration(limit * 1000)}); got {value:g}")
        return w

    @field_serializer("whale")
    def _dump_whale(self, v: WhaleParams) -> dict[str, Any]:
        return v.to_dict()


class BacktestConfig(_Frozen):
    horizon: str = "1h"
    horizons: tuple[str, ...] = ()  # extra horizons evaluated in the same pass
    entry_latency_ms: int = Field(0, ge=0, le=LIMITS["max_latency_ms"])
    fee_bps: float = Field(5.0, ge=0, le=LIMITS["max_bps"])
    slippage_bps: float = Field(0.0, ge=0, le=LIMITS["max_bps"])
    label_threshold: float = Field(0.01, gt=-1, le=100)
    take_profit: float | None = Field(None, gt=0, le=100, description="fraction, e.g. 0.02")
    stop_loss: float | None = Field(None, gt=0, lt=1, description="fraction, e.g. 0.01")
    bootstrap: int = Field(2000, ge=0, le=LIMITS["max_bootstrap"])
    seed: int = Field(0, ge=0, le=LIMITS["max_seed"])
    # Funding missing for some holding windows: "optional" charges it as zero with one warning
    # line, "required" refuses the run.
    funding: Literal["optional", "required"] = "optional"

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, v: Any) -> str:
        return _bounded_duration(v, "horizon", hi_ms=LIMITS["max_horizon_ms"])

    @field_validator("horizons", mode="before")
    @classmethod
    def _horizons(cls, v: Any) -> tuple[str, ...]:
        if isinstance(v, (str, int, float)):
            v = [v]
        if len(v) > 50:
            raise ValueError(f"at most 50 extra horizons; got {len(v)}")
        return tuple(_bounded_duration(x, "each of horizons", hi_ms=LIMITS["max_horizon_ms"]) for x in v)

    @property
    def horizon_ms(self) -> int:
        return parse_duration_ms(self.horizon)

    @property
    def all_horizons_ms(self) -> list[int]:
        """The primary horizon first, then the extra ones (deduplicated, in given order)."""
        out = [self.horizon_ms]
        for h in self.horizons:
            ms = parse_duration_ms(h)
            if ms not in out:
                out.append(ms)
        return out


class PortfolioConfig(_Frozen):
    max_positions: int = Field(1, ge=1, le=LIMITS["max_positions"])
    init_cash: float = Field(10_000.0, gt=0, le=LIMITS["max_cash"])
    bar: str = "1m"  # equity curve resolution (the span's bar count is bounded in RunConfig)

    @field_validator("bar")
    @classmethod
    def _bar(cls, v: Any) -> str:
        return _bounded_duration(v, "bar", lo_ms=LIMITS["min_bar_ms"], hi_ms=LIMITS["max_horizon_ms"])


class RunConfig(_Frozen):
    name: str
    data: DataConfig
    signal: SignalConfig
    backtest: BacktestConfig = BacktestConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    model: ModelConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        n = LIMITS["name_chars"]
        if len(v) > n:
            raise ValueError(f"name must be at most {n} characters (it names the run folder); got {len(v)}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"name may hold letters, digits, '.', '_' and '-' only; got {v!r}")
        return v

    @model_validator(mode="after")
    def _bars(self) -> "RunConfig":
        span_ms = ((self.data.end - self.data.start).days + 1) * 86_400_000
        bar_ms = parse_duration_ms(self.portfolio.bar)
        cap = LIMITS["max_bars"]
        if span_ms // bar_ms > cap:
            least = format_duration(-(-span_ms // cap // 1000) * 1000)
            raise ValueError(
                f"portfolio.bar {self.portfolio.bar} over {span_ms // 86_400_000} days is {span_ms // bar_ms:,} "
                f"equity bars, more than {cap:,}; use bar: {least} or coarser, or a shorter span"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in, as plain YAML-able data."""
        return self.model_dump(mode="json")

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(canonical_json(self.resolved()).encode()).hexdigest()[:10]
        return f"{self.name}-{digest}"

    def signal_config(self) -> dict[str, Any]:
        """What decides signals, resolved: the whale rule and the model (hashed into ``config_id``)."""
        return signal_config(self.signal.whale, self.model)

    @property
    def config_id(self) -> str:
        return config_id(self.signal_config())

    def for_member(self, exchange: str, symbol: str) -> "RunConfig":
        """The single-symbol config of one universe member (same everything else, same ids as written alone)."""
        data = self.data.model_copy(update={"exchange": exchange, "symbol": symbol, "symbols": None, "universe": None})
        return self.model_copy(update={"data": data})


def signal_config(whale: WhaleParams, model: ModelConfig | None) -> dict[str, Any]:
    """The resolved signal config that ``config_id`` hashes (docs/spec.md §5).

    Both parts are resolved (every default filled in, durations and numbers in one spelling), so
    two spellings of one rule give one id. ``bt signals``, ``live run --config`` and
    ``live run --model`` all hash through here.
    """
    return {"whale": whale.to_dict(), "model": None if model is None else model.model_dump(mode="json")}


def _loc(err: Mapping[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    cur: Any = model
    for part in loc[:-1]:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        cur = field.annotation
        # `ModelConfig | None`: the model class inside the Optional
        cur = next((a for a in typing.get_args(cur) if hasattr(a, "model_fields")), cur)
    return list(getattr(cur, "model_fields", {}))


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else f"{s[:30]}... ({len(s)} characters)"


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number")


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = _loc(err)
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            known = _known_keys(RunConfig, tuple(err["loc"]))
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(f"unknown key {loc!r}; expected one of {known}.{hint}")
        elif err["type"] == "missing":
            lines.append(f"missing key {loc!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] in _BOUND_ERRORS:  # pydantic names the limit; add the value and the fix
                fix = "give a finite number" if err["type"] == "finite_number" else "use a value within that limit"
                msg = f"{msg}; got {_short(err.get('input'))}; {fix}"
            lines.append(f"{loc}: {msg}" if err["loc"] else msg)
    return f"{source}: " + "; ".join(lines)


def parse_config(raw: Any, source: str = "config") -> RunConfig:
    """Validate already-loaded YAML data into a :class:`RunConfig` (raises ConfigError)."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping with keys name, data, signal, backtest; got {type(raw).__name__}"
        )
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping naming the same key twice (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            seen[key] = line
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads `2e6` as a string; a config means the number (as YAML 1.2 and JSON do).
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_override_value(text: str) -> Any:
    """A ``--set`` value read as YAML (``2e6`` → 2000000.0, ``[5m, 1h]`` → a list, ``null`` → None)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError:
        return text  # not YAML on its own (e.g. "a: b: c"): the plain string


def cli_overrides(args: Any) -> list[tuple[str, Any]]:
    """The ``(key, value)`` pairs of ``whalebt.cli.add_config_override_options``' flags, in order:
    ``--start``, ``--end``, ``--symbol``, then each ``--set`` (its value read as YAML)."""
    out: list[tuple[str, Any]] = []
    for flag, key in (("start", "data.start"), ("end", "data.end"), ("symbol", "data.symbol")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append((key, value))
    out.extend((k, parse_override_value(v)) for k, v in getattr(args, "overrides", None) or ())
    return out


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[tuple[str, Any]], source: str = "config") -> dict:
    """``raw`` with each ``(dotted.key, value)`` set, creating the mappings on the way.

    Keys are not checked here: validation names an unknown one with a suggestion, as for the file.
    """
    out: dict[str, Any] = _deep_copy(raw)
    for path, value in overrides:
        parts = path.split(".")
        if not path or any(not part for part in parts):
            raise ConfigError(f"--set {path}=...: expected a dotted key like signal.whale.min_notional_usd")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                here = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"{source}: cannot set {path}: {here} is {str(child)[:40]}, not a mapping; set {here} itself"
                )
            node = child
        node[parts[-1]] = value
        if path == "data.symbol":  # one symbol replaces a universe (data.symbols / data.universe)
            node.pop("symbols", None)
            node.pop("universe", None)
    return out


def _deep_copy(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _deep_copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deep_copy(x) for x in v]
    return v


def load_config(
    path: str | os.PathLike[str],
    *,
    lake: str | None = None,
    overrides: Sequence[tuple[str, Any]] = (),
) -> RunConfig:
    """Load and validate a YAML run config.

    Args:
        path: the YAML file.
        lake: overrides ``data.lake`` (flag or ``WHALEBT_LAKE``).
        overrides: ``(dotted.key, value)`` pairs set before validation, in order (``--start``,
            ``--end``, ``--symbol``, ``--set``; see :func:`apply_overrides`).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    lake = lake or os.environ.get("WHALEBT_LAKE")
    if lake and isinstance(raw, dict) and isinstance(raw.get("data"), dict):
        raw = {**raw, "data": {**raw["data"], "lake": lake}}
    if overrides and isinstance(raw, dict):
        raw = apply_overrides(raw, overrides, str(p))
        return parse_config(raw, f"{p} (with {', '.join(f'{k}={_short(v)}' for k, v in overrides)})")
    return parse_config(raw, str(p))
