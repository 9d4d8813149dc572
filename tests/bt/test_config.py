"""The run config is one typed tree: ids come from the resolved config, not from its spelling."""

from __future__ import annotations

import datetime as dt

import pytest

from bt.config import ConfigError, ModelConfig, parse_config, signal_config
from bt.space import SearchSpace, parse_space
from datasets.build import gold_variant
from signals import WhaleParams
from signals.journal import config_id


def _cfg(whale: dict, model: dict | None = None) -> dict:
    raw = {
        "name": "spell",
        "data": {"exchange": "binance_usdm", "symbol": "BTCUSDT", "start": "2024-08-08", "end": "2024-08-08"},
        "signal": {"whale": whale},
    }
    if model is not None:
        raw["model"] = model
    return raw


def test_two_spellings_of_one_rule_give_one_config_id_run_id_and_gold_cache():
    a = parse_config(_cfg({"min_notional_usd": 1000000}, {"period": "60m", "seed": 0}))
    b = parse_config(_cfg({"min_notional_usd": 1e6, "cooldown_s": 0}, {"period": "1h"}))
    assert a.config_id == b.config_id
    assert a.run_id == b.run_id
    start = dt.date(2024, 8, 8)
    va = gold_variant(a.signal.whale.to_dict(), [3_600_000], 0, start)
    assert va == gold_variant({"min_notional_usd": 1e6, "cooldown_s": 0.0}, [3_600_000], 0, start)
    assert va == gold_variant({"min_notional_usd": 1000000}, [3_600_000], 0, start)
    # a real difference still changes them
    c = parse_config(_cfg({"min_notional_usd": 2e6}))
    assert c.config_id != a.config_id and c.run_id != a.run_id


def test_the_tree_is_typed_below_the_top():
    cfg = parse_config(
        _cfg(
            {"window_s": 5},
            {"threshold": {"policy": "fixed", "value": 0.6}, "sweep": {"lgbm": {"num_leaves": [7, 15]}}},
        )
    )
    assert isinstance(cfg.signal.whale, WhaleParams) and cfg.signal.whale.q == 0.99
    assert isinstance(cfg.model, ModelConfig) and cfg.model.threshold.value == 0.6
    assert isinstance(cfg.model.sweep, SearchSpace) and cfg.model.sweep.lgbm["num_leaves"].choices == (7, 15)
    # the resolved form (what config.yaml holds) loads back into an equal config
    again = parse_config(cfg.resolved())
    assert again == cfg and again.run_id == cfg.run_id


def test_config_id_is_the_hash_of_the_resolved_signal_config():
    cfg = parse_config(_cfg({"min_notional_usd": 5e5}, {"uri": "models:/whale-btcusdt@live"}))
    expected = config_id(
        {
            "whale": {"min_notional_usd": 500000.0, "cooldown_s": 0.0},
            "model": ModelConfig(uri="models:/whale-btcusdt@live").model_dump(mode="json"),
        }
    )
    assert cfg.config_id == expected
    assert signal_config(cfg.signal.whale, cfg.model)["model"]["split"]["train"] == 0.6


def test_search_space_round_trips():
    raw = {
        "whale": {"min_notional_usd": {"low": 1e5, "high": 1e6, "log": True}},
        "horizon": ["30m", "1h"],
        "threshold": {"value": [0.5]},
        "sampler": "random",
    }
    space = parse_space(raw)
    assert parse_space(space.to_dict()) == space


@pytest.mark.parametrize(
    "model, needle",
    [
        ({"treshold": {}}, "unknown key 'model.treshold'"),
        ({"threshold": {"polcy": "fixed"}}, "unknown key 'model.threshold.polcy'"),
        ({"sweep": {"lgbm": {"num_leaves": []}}}, "empty list of choices"),
    ],
)
def test_errors_name_the_nested_key(model, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse_config(_cfg({"min_notional_usd": 1e6}, model))


def test_unknown_nested_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match="Did you mean 'threshold'"):
        parse_config(_cfg({"min_notional_usd": 1e6}, {"treshold": {}}))
