"""Run configs: frozen models that reject unknown keys, loaded from YAML (docs/spec.md §7).

A config's ``run_id`` is its name plus a hash of the canonical resolved config, so the same
config always writes to the same ``results/<run_id>/`` and any change gets a new one.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datasets._cli import UserError
from datasets.durations import format_duration, parse_duration_ms
from signals.journal import canonical_json, config_id

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    "SignalConfig",
    "BacktestConfig",
    "PortfolioConfig",
    "load_config",
    "parse_config",
    "parse_duration_ms",
    "format_duration",
]

DEFAULT_LAKE = "results/lake"


class ConfigError(UserError):
    """A config file is missing, malformed or inconsistent."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    lake: str = DEFAULT_LAKE
    exchange: str
    symbol: str
    start: dt.date
    end: dt.date
    price_exchange: str | None = None  # evaluate entries/exits on another venue's trades

    @field_validator("symbol")
    @classmethod
    def _upper(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z0-9]+", v):
            raise ValueError(f"symbol must be upper case with no separators (like BTCUSDT); got {v!r}")
        return v

    @model_validator(mode="after")
    def _span(self) -> "DataConfig":
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}; swap them")
        return self


class SignalConfig(_Frozen):
    whale: dict[str, Any]

    @field_validator("whale")
    @classmethod
    def _whale(cls, v: dict[str, Any]) -> dict[str, Any]:
        from signals import WhaleParams

        WhaleParams.from_dict(v)  # raises ValueError with the reason
        return v


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
    model: dict[str, Any] | None = None  # the model section, validated by bt.model

    @field_validator("model")
    @classmethod
    def _model(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            from bt.model import parse_model_config

            parse_model_config(v)  # ValueError naming the bad key, e.g. unknown key 'model.treshold'
        return v

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
        """What decides signals: the whale rule and the model (hashed into ``config_id``)."""
        return {"whale": dict(self.signal.whale), "model": self.model}

    @property
    def config_id(self) -> str:
        return config_id(self.signal_config())


def _loc(err: Mapping[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    cur: Any = model
    for part in loc[:-1]:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        cur = field.annotation
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
