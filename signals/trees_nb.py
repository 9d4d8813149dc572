"""LightGBM tree ensembles evaluated in numba, so backtest and live score events in one compiled path.

A booster's ``dump_model()`` is flattened into a few flat arrays (:class:`TreeEnsemble`); the
``*_nb`` kernels walk them exactly as LightGBM's ``Tree::Predict`` does for numerical splits:

* a value with ``|x| <= 1e-35`` counts as 0 (LightGBM drops such entries from dense rows);
* NaN is replaced by 0 unless the split's missing type is ``NaN``;
* missing type ``Zero`` sends a zero, and ``NaN`` sends a NaN, the node's default way;
* otherwise ``x <= threshold`` goes left.

Raw scores are summed tree by tree in the booster's order, then mapped through
``1 / (1 + exp(-sigmoid * raw))`` for binary objectives, so the result equals
``Booster.predict`` to within rounding (the tests pin 1e-12). Categorical splits and linear
trees are refused when flattening, never inside a kernel.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, NamedTuple

import numpy as np
from signals.jit import njit

__all__ = [
    "TreeEnsemble",
    "ensemble_from_dump",
    "ensemble_from_booster",
    "ensemble_from_model_string",
    "predict_proba",
    "predict_raw_row_nb",
    "predict_proba_row_nb",
    "predict_proba_nb",
    "MISSING_NONE",
    "MISSING_ZERO",
    "MISSING_NAN",
    "ensemble_summary",
]

MISSING_NONE = 0
MISSING_ZERO = 1
MISSING_NAN = 2
_MISSING_CODES = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}
# Bits of the code column (see TreeEnsemble.nodes).
_NAN_LEFT = 1
_ZERO_MISSING = 2
_DEFAULT_LEFT = 4
#: LightGBM's kZeroThreshold is the float 1e-35f; as a double it is this value.
_ZERO_THRESHOLD = float(np.float32(1e-35))

# Columns of TreeEnsemble.nodes.
_FEATURE, _RIGHT, _LEFT, _CODE = 0, 1, 2, 3


class TreeEnsemble(NamedTuple):
    """A flattened LightGBM ensemble (binary or raw regression output).

    Attributes:
        nodes: int32 ``(n_nodes, 4)``: split feature, right child, left child, code. A child
            ``>= 0`` is a node index; ``< 0`` is ``~leaf_index``. The code's bit 0 says where a
            NaN goes (left if set), bit 1 that zero counts as missing, bit 2 default-left;
            both derived once from LightGBM's missing type when flattening.
        thresholds: float64 ``(n_nodes,)`` split thresholds.
        leaf_values: float64 ``(n_leaves,)`` leaf outputs (shrinkage already applied).
        roots: int32 ``(n_trees,)`` each tree's root, same encoding as a child.
        sigmoid: ``> 0`` for a binary objective (probability output), 0 for raw output.
        divisor: 1.0, or the number of trees for random-forest boosting (average_output).
        n_features: the booster's feature count (``max_feature_idx + 1``).
    """

    nodes: np.ndarray
    thresholds: np.ndarray
    leaf_values: np.ndarray
    roots: np.ndarray
    sigmoid: float
    divisor: float
    n_features: int


def _parse_sigmoid(objective: str) -> float:
    parts = objective.split()
    name = parts[0] if parts else ""
    if name == "binary":
        for p in parts[1:]:
            if p.startswith("sigmoid:"):
                return float(p.split(":", 1)[1])
        return 1.0
    if name in ("cross_entropy", "xentropy"):
        return 1.0
    if name in ("regression", "regression_l2", "l2", "mean_squared_error", "mse"):
        return 0.0
    raise ValueError(
        f"unsupported LightGBM objective {objective!r}; expected a binary classifier "
        "('binary') or a plain regression; train with objective='binary'"
    )


def ensemble_from_dump(dump: Mapping[str, Any]) -> TreeEnsemble:
    """Flatten the dict returned by ``Booster.dump_model()``.

    Args:
        dump: the model dump (its ``tree_info`` lists the trees in prediction order).

    Raises:
        ValueError: multiclass models, categorical splits or linear trees (not used by whalebt).
    """
    if int(dump.get("num_class", 1)) != 1 or int(dump.get("num_tree_per_iteration", 1)) != 1:
        raise ValueError(
            f"expected a single-output model (num_class 1); got num_class={dump.get('num_class')}; "
            "train a binary classifier"
        )
    sigmoid = _parse_sigmoid(str(dump.get("objective", "")))
    trees = dump.get("tree_info", [])
    feats: list[int] = []
    thrs: list[float] = []
    lefts: list[int] = []
    rights: list[int] = []
    flags: list[int] = []
    leaves: list[float] = []
    roots: list[int] = []

    for tree in trees:
        if tree.get("is_linear"):
            raise ValueError("linear trees are not supported; train with linear_tree=false")
        # Iterative pre-order walk; each pending entry is (json node, parent index, is_left).
        stack: list[tuple[Mapping[str, Any], int, bool]] = [(tree["tree_structure"], -1, False)]
        while stack:
            node, parent, is_left = stack.pop()
            if "leaf_value" in node and "split_feature" not in node:
                ref = ~len(leaves)
                leaves.append(float(node["leaf_value"]))
            else:
                if node.get("decision_type", "<=") != "<=":
                    raise ValueError(
                        f"categorical split (decision_type {node.get('decision_type')!r}) is not "
                        "supported; pass categorical features as numbers"
                    )
                ref = len(feats)
                feats.append(int(node["split_feature"]))
                thrs.append(float(node["threshold"]))
                missing = _MISSING_CODES.get(str(node.get("missing_type", "None")))
                if missing is None:
                    raise ValueError(f"unknown missing_type {node.get('missing_type')!r} in model dump")
                default_left = bool(node.get("default_left"))
                # A NaN takes the default way under missing types NaN and Zero (NaN becomes 0,
                # which is "missing" under Zero); under None it is compared as 0.
                if missing == MISSING_NONE:
                    nan_left = 0.0 <= thrs[-1]
                else:
                    nan_left = default_left
                flags.append(
                    (_NAN_LEFT if nan_left else 0)
                    | (_ZERO_MISSING if missing == MISSING_ZERO else 0)
                    | (_DEFAULT_LEFT if default_left else 0)
                )
                lefts.append(0)
                rights.append(0)
                # Right pushed first so the left subtree is laid out next (better locality).
                stack.append((node["right_child"], ref, False))
                stack.append((node["left_child"], ref, True))
            if parent < 0:
                roots.append(ref)
            elif is_left:
                lefts[parent] = ref
            else:
                rights[parent] = ref

    n_nodes = len(feats)
    nodes = np.zeros((n_nodes, 4), dtype=np.int32)
    if n_nodes:
        nodes[:, _FEATURE] = feats
        nodes[:, _LEFT] = lefts
        nodes[:, _RIGHT] = rights
        nodes[:, _CODE] = flags
    n_trees = len(roots)
    divisor = float(n_trees) if dump.get("average_output") and n_trees else 1.0
    return TreeEnsemble(
        nodes=nodes,
        thresholds=np.asarray(thrs, dtype=np.float64),
        leaf_values=np.asarray(leaves, dtype=np.float64),
        roots=np.asarray(roots, dtype=np.int32),
        sigmoid=float(sigmoid),
        divisor=divisor,
        n_features=int(dump.get("max_feature_idx", -1)) + 1,
    )


def ensemble_from_booster(booster: Any) -> TreeEnsemble:
    """Flatten a ``lightgbm.Booster`` (its best iteration if early stopping set one)."""
    return ensemble_from_dump(booster.dump_model())


def ensemble_from_model_string(model_str: str) -> TreeEnsemble:
    """Flatten a booster saved with ``Booster.model_to_string()`` (imports lightgbm)."""
    import lightgbm as lgb

    return ensemble_from_booster(lgb.Booster(model_str=model_str))


@njit(cache=True, nogil=True)
def _leaf_nb(x, nodes, thresholds, ref):
    while ref >= 0:
        fval = x[nodes[ref, 0]]
        code = nodes[ref, 3]
        if math.isnan(fval):
            go_left = code & _NAN_LEFT
        elif -1.0000000180025095e-35 <= fval <= 1.0000000180025095e-35:
            # LightGBM drops |x| <= kZeroThreshold from dense rows, so these are exact zeros.
            go_left = (code >> 2) & 1 if code & _ZERO_MISSING else (1 if 0.0 <= thresholds[ref] else 0)
        else:
            go_left = 1 if fval <= thresholds[ref] else 0
        # Columns 1 and 2 hold the right and left child: index 1 + go_left, no branch.
        ref = nodes[ref, 1 + go_left]
    return ~ref


@njit(cache=True, nogil=True)
def predict_raw_row_nb(x, ens):
    """Raw score of one feature row; same as ``booster.predict(x[None], raw_score=True)[0]``
    (a plain sum of the trees, not averaged even for random-forest boosting)."""
    total = 0.0
    for t in range(ens.roots.shape[0]):
        total += ens.leaf_values[_leaf_nb(x, ens.nodes, ens.thresholds, ens.roots[t])]
    return total


@njit(cache=True, nogil=True)
def predict_proba_row_nb(x, ens):
    """Probability of one feature row; same as ``booster.predict(x[None])[0]``."""
    raw = predict_raw_row_nb(x, ens) / ens.divisor
    if ens.sigmoid > 0.0:
        return 1.0 / (1.0 + math.exp(-ens.sigmoid * raw))
    return raw


@njit(cache=True, nogil=True)
def predict_proba_nb(X, ens):
    """Probabilities of the rows of ``X``; same as ``booster.predict(X)``."""
    n = X.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = predict_proba_row_nb(X[i], ens)
    return out


def predict_proba(ens: TreeEnsemble, X: Any) -> np.ndarray:
    """Score a 2-D feature matrix (or one row) with a flattened ensemble.

    Args:
        ens: from :func:`ensemble_from_booster`.
        X: ``(n, n_features)`` or ``(n_features,)`` numbers; NaN means missing.

    Returns:
        float64 ``(n,)`` probabilities (raw scores for a regression model).

    Raises:
        ValueError: the column count differs from the one the model was trained on.
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != ens.n_features:
        raise ValueError(
            f"expected a feature matrix with {ens.n_features} columns (the model's features); "
            f"got shape {arr.shape}; pass the rows in the order of signals.FEATURE_NAMES"
        )
    return predict_proba_nb(np.ascontiguousarray(arr), ens)


def ensemble_summary(ens: TreeEnsemble) -> str:
    """One-line description for logs, e.g. ``'120 trees, 3410 splits, 33 features, binary'``."""
    kind = "binary" if ens.sigmoid > 0 else "raw"
    return json.dumps(
        {
            "trees": int(ens.roots.shape[0]),
            "splits": int(ens.nodes.shape[0]),
            "features": ens.n_features,
            "output": kind,
        }
    )
