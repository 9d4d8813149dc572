"""What turns a whale event into a journal decision: the whale rule, its config id, the model.

Built from a run config (docs/spec.md §7) so that `live run` hashes and decides exactly as
`bt signals` does for the same config.
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from signals import FEATURE_NAMES, WhaleParams
from signals.journal import config_id as make_config_id
from signals.journal import decide

__all__ = ["Decider", "ModelUnavailable"]


class ModelUnavailable(WhalebtError, ValueError):
    """A model was asked for but cannot be loaded (no registry module, unknown URI, ...)."""


def _load_bundle(uri: str, tracking_uri: str | None = None):
    try:
        from bt.registry import connect, load_bundle  # the model issue's module
    except ImportError as exc:
        raise ModelUnavailable(
            f"--model {uri}: this build has no model registry (bt.registry: {exc}); the live runner can "
            "only run configs without a model here. Run with --config CONFIG, or install a build that "
            "ships the model issue"
        ) from None
    connect(tracking_uri)
    try:
        return load_bundle(uri)
    except ValueError as exc:
        raise ModelUnavailable(str(exc)) from None


def _predictor(bundle) -> Callable[[np.ndarray], float]:
    """One event's probability from the bundle's flattened trees, as `bt signals` scores them.

    `bt signals` goes through `bundle.predict_matrix` → `predict_proba` → `predict_proba_nb`,
    which scores each row with `predict_proba_row_nb`; here that last function is called on the
    row directly (same trees, same arithmetic, same value) with the model's columns picked once.
    The layers above it cost ~30 µs per call, several times the trees themselves.
    """
    from signals.trees_nb import predict_proba_row_nb

    try:
        cols = bundle.feature_columns(FEATURE_NAMES)
    except ValueError as exc:
        raise ModelUnavailable(str(exc)) from None
    ens = bundle.ensemble
    if len(cols) != ens.n_features:
        raise ModelUnavailable(f"the model's trees use {ens.n_features} features but it names {len(cols)}")
    pick = None if cols == list(range(len(FEATURE_NAMES))) else np.asarray(cols)

    def predict(row: np.ndarray) -> float:
        return float(predict_proba_row_nb(row if pick is None else row[pick], ens))

    return predict


def _trained_on(bundle) -> tuple[str | None, tuple[str, ...]] | None:
    """(exchange, symbols) of the model's lineage.json, or None if it has none."""
    lin = getattr(bundle, "lineage", None)
    if not isinstance(lin, dict):
        return None
    syms = tuple(str(s) for s in lin.get("symbols") or ())
    ex = lin.get("exchange")
    return (str(ex) if ex else None, syms) if (ex or syms) else None


def _rules_from_bundle(sc: dict) -> Any:
    """Paper-trading rules from a model's signal_config.json (None if it has no horizon)."""
    from live.paper import PaperRules

    if not sc.get("horizon"):
        return None
    from bt.config import parse_duration_ms

    return PaperRules(
        parse_duration_ms(sc["horizon"]),
        int(sc.get("entry_latency_ms") or 0),
        float(sc.get("fee_bps", 5.0)) / 1e4,
        float(sc.get("slippage_bps") or 0.0) / 1e4,
        sc.get("take_profit"),
        sc.get("stop_loss"),
        float(sc.get("label_threshold", 0.01)),
    )


@dataclass
class Decider:
    """The signal side of one live run.

    Attributes:
        params: the whale rules for the kernel.
        config_id: docs/spec.md §5 `config_id` (same hash as `bt signals` for the same config).
        model_uri: docs/spec.md §5 `model`, or None.
        threshold: the model's decision threshold, or None without a model.
        predict: feature row (order `FEATURE_NAMES`) → probability, or None without a model.
    """

    params: WhaleParams
    config_id: str
    model_uri: str | None = None
    threshold: float | None = None
    predict: Callable[[np.ndarray], float] | None = None
    name: str = ""
    paper_rules: Any = None  # live.paper.PaperRules, from the config's backtest section
    trained_on: tuple[str | None, tuple[str, ...]] | None = None  # the model's (exchange, symbols), if it says

    def symbol_warning(self, exchange: str, symbols: list[str]) -> str | None:
        """A warning if the model was trained on another exchange or other symbols than these."""
        if self.trained_on is None:
            return None
        ex, syms = self.trained_on
        other = [s for s in symbols if syms and s not in syms]
        if (ex and ex != exchange) or other:
            return (
                f"model {self.model_uri} was trained on {ex or '?'} {','.join(syms) or '?'}; running it on "
                f"{exchange} {','.join(symbols)}: its probabilities may not mean there what they did in training"
            )
        return None

    @classmethod
    def from_config(cls, config: Any, model_uri: str | None = None, tracking_uri: str | None = None) -> "Decider":
        """From a `bt.config.RunConfig`, hashed as `bt signals` hashes it.

        Args:
            config: the run config; `signal.whale` is the rule, `model.uri` the model if any.
            model_uri: overrides `model.uri` (the `--model` flag next to `--config`).
            tracking_uri: MLflow tracking URI (default: env MLFLOW_TRACKING_URI, then
                sqlite:///results/mlflow.db).
        """
        from bt.config import ModelConfig, signal_config

        params = config.signal.whale
        whale = params.to_dict()
        model = config.model
        if model_uri:
            model = model.model_copy(update={"uri": model_uri}) if model is not None else ModelConfig(uri=model_uri)
        cid = make_config_id(signal_config(params, model))
        from live.paper import PaperRules

        rules = PaperRules.from_config(config)
        if model is None:
            return cls(params, cid, name=config.name, paper_rules=rules)
        uri = model.uri
        if not uri:
            raise ModelUnavailable(
                f"{config.name}: the config's model section trains a model inside `bt run`; a live run needs a "
                "registered one: add model.uri (e.g. models:/whale-btcusdt@live) or pass --model URI"
            )
        bundle = _load_bundle(uri, tracking_uri)
        trained = bundle.signal_config.get("whale")
        if trained is not None and WhaleParams.from_dict(trained) != params:
            raise ModelUnavailable(
                f"model {uri} was trained on whale events of {trained}, but the config's signal.whale is "
                f"{whale}; use the model's rule (see its signal_config.json) or run with --model alone"
            )
        return cls(
            params,
            cid,
            uri,
            float(bundle.threshold),
            _predictor(bundle),
            name=config.name,
            paper_rules=rules,
            trained_on=_trained_on(bundle),
        )

    @classmethod
    def from_model(cls, uri: str, tracking_uri: str | None = None) -> "Decider":
        """From a registered model alone: its bundled whale rule, threshold and scorer.

        The config id is that of a run config with the model's `signal.whale` and
        `model: {uri: <uri>}`, so `bt signals` on such a config writes the same journal.
        """
        bundle = _load_bundle(uri, tracking_uri)
        whale = bundle.signal_config.get("whale")
        if not whale:
            raise ModelUnavailable(
                f"model {uri} carries no whale rule in its signal_config.json; run it with "
                "--config CONFIG (model.uri set) instead"
            )
        from bt.config import ModelConfig, signal_config

        params = WhaleParams.from_dict(whale)
        cid = make_config_id(signal_config(params, ModelConfig(uri=uri)))
        return cls(
            params,
            cid,
            uri,
            float(bundle.threshold),
            _predictor(bundle),
            name=uri,
            paper_rules=_rules_from_bundle(bundle.signal_config),
            trained_on=_trained_on(bundle),
        )

    def decide(self, features: np.ndarray | None) -> tuple[float | None, str]:
        """(prob, decision) for an event's feature row."""
        if self.predict is None or features is None:
            return None, "long"
        prob = self.predict(features)
        if math.isnan(prob):  # as `bt signals` does: no probability, no veto
            return None, decide(None, self.threshold)
        return prob, decide(prob, self.threshold)
