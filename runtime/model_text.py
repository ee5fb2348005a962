"""A booster's trees read from LightGBM's model text, shaped as ``dump_model()`` gives them.

The packed forest and the TreeSHAP tables are built from every tree's nodes when a
bundle loads. ``Booster.dump_model()`` writes and parses JSON (0.66 s for the default
champion's four boosters); the model text (``model_to_string``, the format of the saved
files) holds the same numbers as arrays per tree and is read in half the time (0.34 s).
It is also faithful where the JSON is not: ``dump_model`` writes an infinite threshold
as 1e300, so a value of +inf went the wrong way there (the TreeSHAP tables built from it
were off for such rows), while the text keeps inf as ``predict`` has it. Only the fields
the runtime reads are kept (tested equal to ``dump_model``'s, inf aside); linear trees
are left to ``dump_model``.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

#: LightGBM's decision_type bits: categorical, default left; bits 2-3 the missing type
_CATEGORICAL, _DEFAULT_LEFT = 1, 2
_MISSING_TYPES = ("None", "Zero", "NaN")


def dumped(booster: lgb.Booster) -> dict:
    """``booster.dump_model()``'s header fields and trees (split and leaf fields the runtime reads)."""
    head, *trees = booster.model_to_string().split("\nTree=")
    lines = head.splitlines()
    header = dict(line.split("=", 1) for line in lines if "=" in line)
    fields = [_fields(tree.split("\nend of trees")[0]) for tree in trees]
    if any(f.get("is_linear", "0") != "0" for f in fields):
        return booster.dump_model()  # a linear tree's leaves: its own format
    return {"num_tree_per_iteration": int(header["num_tree_per_iteration"]),
            "max_feature_idx": int(header["max_feature_idx"]), "objective": header.get("objective", ""),
            "average_output": "average_output" in lines,
            "tree_info": [{"tree_structure": _structure(f)} for f in fields]}


def _fields(block: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line)


def _numbers(f: dict[str, str], name: str, kind=float) -> list:
    return np.array(f.get(name, "").split(), dtype=kind).tolist()


def _structure(f: dict[str, str]) -> dict:
    """The tree's nodes nested as ``dump_model`` nests them, from its per-node arrays."""
    leaf_value, leaf_count = _numbers(f, "leaf_value"), _numbers(f, "leaf_count", np.int64)
    if int(f["num_leaves"]) == 1:
        return {"leaf_value": leaf_value[0]}
    feature, threshold = _numbers(f, "split_feature", np.int64), _numbers(f, "threshold")
    decision, count = _numbers(f, "decision_type", np.int64), _numbers(f, "internal_count", np.int64)
    left, right = _numbers(f, "left_child", np.int64), _numbers(f, "right_child", np.int64)
    bounds, words = _numbers(f, "cat_boundaries", np.int64), _numbers(f, "cat_threshold", np.int64)

    def node(i: int) -> dict:
        if i < 0:
            return {"leaf_index": ~i, "leaf_value": leaf_value[~i], "leaf_count": leaf_count[~i]}
        categorical = bool(decision[i] & _CATEGORICAL)
        if categorical:  # the threshold names the split's bitset of codes that go left
            c = int(threshold[i])
            bits = words[bounds[c]:bounds[c + 1]]
            split = "||".join(str(32 * w + b) for w, word in enumerate(bits) for b in range(32) if word >> b & 1)
        else:
            split = threshold[i]
        return {"split_index": i, "split_feature": feature[i], "threshold": split,
                "decision_type": "==" if categorical else "<=", "default_left": bool(decision[i] & _DEFAULT_LEFT),
                "missing_type": _MISSING_TYPES[(decision[i] >> 2) & 3], "internal_count": count[i],
                "left_child": node(left[i]), "right_child": node(right[i])}

    return node(0)
