"""What a sweep searches: the ``model.sweep`` section of a config, parsed into a :class:`SearchSpace`.

Pure (no Optuna import until a trial asks for a value, no I/O), so the config can be validated
where it is loaded (:class:`bt.config.ModelConfig`) without importing the sweep machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dist", "SearchSpace", "parse_space"]


@dataclass(frozen=True)
class Dist:
    """One searched parameter: ``choices``, or a range ``low..high`` (int when both are ints)."""

    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    is_int: bool = False

    @classmethod
    def parse(cls, key: str, raw: Any) -> "Dist":
        if isinstance(raw, list):
            if not raw:
                raise ValueError(f"sweep {key}: empty list of choices")
            return cls(choices=tuple(raw))
        if isinstance(raw, dict):
            unknown = set(raw) - {"low", "high", "log"}
            if unknown or "low" not in raw or "high" not in raw:
                raise ValueError(f"sweep {key}: expected a list of choices or {{low, high, log}}; got {raw!r}")
            lo, hi = raw["low"], raw["high"]
            if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo < hi):
                raise ValueError(f"sweep {key}: need numbers with low < high; got {lo!r}..{hi!r}")
            is_int = isinstance(lo, int) and isinstance(hi, int)
            return cls(low=lo, high=hi, log=bool(raw.get("log", False)), is_int=is_int)
        return cls(choices=(raw,))  # a fixed value

    def to_raw(self) -> Any:
        """The YAML form :meth:`parse` reads back into an equal ``Dist``."""
        if self.choices is not None:
            return list(self.choices)
        return {"low": self.low, "high": self.high, "log": self.log}

    def sample(self, trial, name: str):
        if self.choices is not None:
            if len(self.choices) == 1:
                return self.choices[0]
            return trial.suggest_categorical(name, list(self.choices))
        assert self.low is not None and self.high is not None  # a range (parse sets both)
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)


_SECTIONS = ("whale", "lgbm", "threshold", "imbalance")
_SETTINGS = {"horizon", "sampler", "pruner", "seed", "cscv_blocks", "min_train_events"}


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep searches; sections map parameter names to :class:`Dist`."""

    whale: dict[str, Dist] = field(default_factory=dict)
    horizon: Dist | None = None
    lgbm: dict[str, Dist] = field(default_factory=dict)
    threshold: dict[str, Dist] = field(default_factory=dict)
    imbalance: dict[str, Dist] = field(default_factory=dict)
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    cscv_blocks: int = 16
    min_train_events: int = 50

    def to_dict(self) -> dict[str, Any]:
        """The resolved ``model.sweep`` mapping; ``parse_space(s.to_dict()) == s``."""
        out: dict[str, Any] = {sec: {k: d.to_raw() for k, d in getattr(self, sec).items()} for sec in _SECTIONS}
        if self.horizon is not None:
            out["horizon"] = self.horizon.to_raw()
        out.update(
            sampler=self.sampler,
            pruner=self.pruner,
            seed=self.seed,
            cscv_blocks=self.cscv_blocks,
            min_train_events=self.min_train_events,
        )
        return out


def parse_space(raw: dict | None) -> SearchSpace:
    """Parse ``model.sweep``; a list is a set of choices, ``{low, high, log}`` a range."""
    raw = dict(raw or {})
    unknown = set(raw) - set(_SECTIONS) - _SETTINGS
    if unknown:
        raise ValueError(f"unknown model.sweep key(s) {sorted(unknown)}; expected {sorted(set(_SECTIONS) | _SETTINGS)}")
    kw: dict[str, Any] = {}
    for sec in _SECTIONS:
        block = raw.get(sec) or {}
        if not isinstance(block, dict):
            raise ValueError(f"model.sweep.{sec} must be a mapping of parameter -> choices or range")
        kw[sec] = {k: Dist.parse(f"{sec}.{k}", v) for k, v in block.items()}
    if "horizon" in raw:
        h = raw["horizon"]
        kw["horizon"] = Dist.parse("horizon", h if isinstance(h, list) else [h])
    for k in ("sampler", "pruner"):
        if k in raw:
            kw[k] = str(raw[k])
    for k in ("seed", "cscv_blocks", "min_train_events"):
        if k in raw:
            kw[k] = int(raw[k])
    if kw.get("sampler", "tpe") not in ("tpe", "random"):
        raise ValueError(f"model.sweep.sampler must be 'tpe' or 'random'; got {kw['sampler']!r}")
    if kw.get("pruner", "median") not in ("median", "none"):
        raise ValueError(f"model.sweep.pruner must be 'median' or 'none'; got {kw['pruner']!r}")
    return SearchSpace(**kw)
