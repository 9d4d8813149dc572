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
from typing import Any, Literal, Mapping

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
]


class ConfigError(UserError):
    """A config file is missing, malformed or inconsistent."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    walk_forward: int = Field(0, ge=0, description="folds over train+validation; 0 = one split")
    window: Literal["expanding", "rolling"] = "expanding"

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
    min_signals: int = Field(20, ge=1)  # independent signals (every policy, fixed included)
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
    min_test_signals: int = Field(30, ge=0)  # independent test signals (clusters of overlapping windows)
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
    seed: int = 0
    registry_name: str | None = None  # default whale-<symbol, lower case>
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
        return format_duration(parse_duration_ms(v))

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

    @model_validator(mode="after")
    def _span(self) -> "DataConfig":
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}; swap them")
        if self.symbol and (self.symbols is not None or self.universe is not None):
            raise ValueError("give symbol, or symbols/universe, not both")
        if not self.symbol and self.symbols is None and self.universe is None:
            raise ValueError("data needs symbol (one), symbols (a list) or universe (a rank)")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # A single-symbol config dumps exactly as before universes existed (same run_id).
        out = handler(self)
        for key in ("symbols", "universe"):
            if out.get(key) is None:
                out.pop(key, None)
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
        return v if isinstance(v, WhaleParams) else WhaleParams.from_dict(v)  # ValueError with the reason

    @field_serializer("whale")
    def _dump_whale(self, v: WhaleParams) -> dict[str, Any]:
        return v.to_dict()


class BacktestConfig(_Frozen):
    horizon: str = "1h"
    horizons: tuple[str, ...] = ()  # extra horizons evaluated in the same pass
    entry_latency_ms: int = Field(0, ge=0)
    fee_bps: float = Field(5.0, ge=0)
    slippage_bps: float = Field(0.0, ge=0)
    label_threshold: float = 0.01
    take_profit: float | None = Field(None, gt=0, description="fraction, e.g. 0.02")
    stop_loss: float | None = Field(None, gt=0, lt=1, description="fraction, e.g. 0.01")
    bootstrap: int = Field(2000, ge=0)
    seed: int = 0
    # Funding missing for some holding windows: "optional" charges it as zero with one warning
    # line, "required" refuses the run.
    funding: Literal["optional", "required"] = "optional"

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, v: Any) -> str:
        return format_duration(parse_duration_ms(v))

    @field_validator("horizons", mode="before")
    @classmethod
    def _horizons(cls, v: Any) -> tuple[str, ...]:
        if isinstance(v, (str, int, float)):
            v = [v]
        return tuple(format_duration(parse_duration_ms(x)) for x in v)

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
    max_positions: int = Field(1, ge=1)
    init_cash: float = Field(10_000.0, gt=0)
    bar: str = "1m"  # equity curve resolution

    @field_validator("bar")
    @classmethod
    def _bar(cls, v: Any) -> str:
        return format_duration(parse_duration_ms(v))


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
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"name may hold letters, digits, '.', '_' and '-' only; got {v!r}")
        return v

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
            lines.append(f"{loc}: {msg}")
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


def load_config(path: str | os.PathLike[str], *, lake: str | None = None) -> RunConfig:
    """Load and validate a YAML run config.

    Args:
        path: the YAML file.
        lake: overrides ``data.lake`` (flag or ``WHALEBT_LAKE``).
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
    return parse_config(raw, str(p))
