"""The compiled tree walks give LightGBM's own numbers, row for row: TreeSHAP tables
(``runtime.treeshap``) its pred_contrib, the packed forest (``runtime.forest``) its predict.

Boosters are trained here on data made to exercise every way a row decides at a split:
categorical splits (unseen, negative and missing codes go right), NaN learned as its
own side, "zero as missing" splits, a feature split on several times along one path.
Hypothesis draws the rows, with missing values, zeros and codes the booster never saw.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.forest import Forest
from runtime.model_text import dumped
from runtime.compiled import BLOCK_ROWS, SHAP_BLOCK_ROWS
from runtime.models import ONE_THREAD_ROWS, EddModel, ProbabilityModel
from runtime.treeshap import MAX_PATH_FEATURES, ContributionTables

N_FEATURES = 6


def training_data(seed: int = 0, rows: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, N_FEATURES))
    X[:, 0] = rng.integers(0, 12, rows)  # a categorical code
    X[rng.random(rows) < 0.1, 0] = np.nan  # missing codes: a categorical split that knows NaN
    X[rng.random(rows) < 0.15, 1] = np.nan  # missing: a side learned for NaN
    X[rng.random(rows) < 0.3, 2] = 0.0  # zeros: "zero as missing" splits
    y = np.sin(X[:, 3] * 2) + (np.nan_to_num(X[:, 0], nan=1.0) % 3) - np.nan_to_num(X[:, 1]) ** 2 + 0.5 * (X[:, 2] == 0) + X[:, 4] * X[:, 5]
    return X, y + rng.normal(scale=0.3, size=rows)


def booster(objective: str, **params) -> lgb.Booster:
    X, y = training_data()
    if objective == "binary":
        y = (y > np.median(y)).astype(float)
    data = lgb.Dataset(X, y, categorical_feature=[0], params={"verbose": -1})
    return lgb.train({"objective": objective, "num_leaves": 15, "max_depth": 6, "learning_rate": 0.2,
                      "min_data_in_leaf": 20, "verbose": -1, "seed": 1, "num_threads": 1, **params}, data, 40)


BOOSTERS = {
    "quantile": booster("quantile", alpha=0.5),
    "binary": booster("binary"),
    "zero as missing": booster("regression", zero_as_missing=True),
}
TABLES = {name: ContributionTables.of(b) for name, b in BOOSTERS.items()}


def lightgbm_contributions(b: lgb.Booster, X: np.ndarray) -> np.ndarray:
    return b.predict(X, pred_contrib=True, num_threads=1)[:, :-1]


def odd_rows(seed: int, n: int = 300) -> np.ndarray:
    """Rows a booster may meet in service: missing values, exact zeros, unseen codes."""
    X, _ = training_data(seed, n)
    rng = np.random.default_rng(seed + 1)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[rng.random(X.shape) < 0.1] = 0.0
    X[rng.random(X.shape) < 0.03] = np.inf  # a ratio over zero; LightGBM's text keeps an inf threshold
    X[rng.random(X.shape) < 0.03] = -np.inf
    X[rng.random(n) < 0.1, 0] = 99  # a code the booster never saw
    X[rng.random(n) < 0.05, 0] = -1
    X[rng.random(n) < 0.05, 0] = -0.5  # LightGBM truncates it to code 0
    X[rng.random(n) < 0.05, 0] = 1e12  # past any int32 code: goes right
    return X


@pytest.mark.parametrize("name", list(BOOSTERS))
def test_tables_equal_lightgbm_pred_contrib(name):
    b, tables = BOOSTERS[name], TABLES[name]
    assert tables is not None
    X = odd_rows(7)
    expected = lightgbm_contributions(b, X)
    assert np.abs(expected).max() > 0.1  # the features matter: the comparison is not of zeros
    np.testing.assert_allclose(tables.contributions(X), expected, rtol=0, atol=1e-12)
    # rows split over threads add up to the same numbers
    np.testing.assert_array_equal(tables.contributions(X, threads=2), tables.contributions(X))


@pytest.mark.parametrize("name", list(BOOSTERS))
def test_rows_in_blocks_give_each_row_its_numbers_alone(name):
    """Bulk TreeSHAP walks SHAP_BLOCK_ROWS rows at a time (a part block at the end), a
    request one row: the same sums in the same order, bit for bit."""
    tables = TABLES[name]
    X = odd_rows(11, n=2 * SHAP_BLOCK_ROWS + 5)
    alone = np.vstack([tables.contributions(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_array_equal(tables.contributions(X), alone)
    np.testing.assert_array_equal(tables.contributions(X[:SHAP_BLOCK_ROWS - 1]), alone[:SHAP_BLOCK_ROWS - 1])


def test_the_data_exercises_every_kind_of_split():
    """Otherwise the equality above would prove less than it says."""
    paths = [path for b in BOOSTERS.values() for path in _paths(b)]
    kinds = {(split["decision_type"], split["missing_type"]) for path in paths for split in path}
    assert {("==", "NaN"), ("<=", "NaN"), ("<=", "None"), ("<=", "Zero")} <= kinds
    assert any(len(_features(path)) < len(path) for path in paths)  # a feature split on twice on one path


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=False, width=32), st.just(0.0),
                          st.integers(-2, 14).map(float)), min_size=N_FEATURES, max_size=N_FEATURES))
def test_any_single_row_equals_lightgbm(values):
    X = np.array([values], dtype=np.float64)
    for name, b in BOOSTERS.items():
        np.testing.assert_allclose(TABLES[name].contributions(X), lightgbm_contributions(b, X),
                                   rtol=1e-9, atol=1e-12)


def deep_booster() -> tuple[lgb.Booster, np.ndarray]:
    X = np.random.default_rng(3).normal(size=(4000, 20))
    return lgb.train({"objective": "regression", "num_leaves": 512, "max_depth": 16, "min_data_in_leaf": 2,
                      "verbose": -1, "num_threads": 1}, lgb.Dataset(X, np.sign(X).sum(axis=1)), 3), X


def test_deep_trees_are_left_to_lightgbm():
    """A leaf with more distinct path features than the tables hold: no tables, and a
    model's contributions still come (from LightGBM), the same numbers."""
    deep, X = deep_booster()
    depth = max(len(_features(path)) for path in _paths(deep))
    assert depth > MAX_PATH_FEATURES
    assert ContributionTables.of(deep) is None
    model = EddModel([f"f{j}" for j in range(X.shape[1])], ())
    np.testing.assert_array_equal(model.contributions(None, deep, X[:50]), lightgbm_contributions(deep, X[:50]))



# -- the packed forest: predictions


@pytest.mark.parametrize("name", list(BOOSTERS))
def test_forest_predicts_lightgbms_numbers_bit_for_bit(name):
    b = BOOSTERS[name]
    X = odd_rows(11)
    expected = b.predict(X, num_threads=1)  # for binary, LightGBM's probability
    assert expected.std() > 0.1
    np.testing.assert_array_equal(Forest.of([b]).predict(X)[:, 0], expected)


def test_forest_gives_raw_scores_as_lightgbm_does():
    """A model with a base adds the booster's raw score to it: the sums before the sigmoid."""
    b = BOOSTERS["binary"]
    X = odd_rows(12)
    np.testing.assert_array_equal(Forest.of([b]).predict(X, raw=True)[:, 0], b.predict(X, num_threads=1, raw_score=True))


def test_one_forest_holds_several_boosters_each_its_own_column():
    boosters = list(BOOSTERS.values())
    X = odd_rows(12)
    got = Forest.of(boosters).predict(X)
    assert got.shape == (len(X), len(boosters))
    np.testing.assert_array_equal(got, np.column_stack([b.predict(X, num_threads=1) for b in boosters]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.just(0.0), st.just(-0.0),
                          st.floats(-1e-30, 1e-30), st.integers(-2, 14).map(float)),
                min_size=N_FEATURES, max_size=N_FEATURES))
def test_forest_any_single_row_equals_lightgbm(values):
    X = np.array([values], dtype=np.float64)
    forest = Forest.of(list(BOOSTERS.values()))
    np.testing.assert_array_equal(forest.predict(X)[0], [b.predict(X, num_threads=1)[0] for b in BOOSTERS.values()])


def test_forest_walks_trees_of_any_depth():
    deep, X = deep_booster()
    np.testing.assert_array_equal(Forest.of([deep]).predict(X[:300])[:, 0], deep.predict(X[:300], num_threads=1))


def test_what_the_forest_does_not_cover_stays_with_lightgbm():
    """Several outputs per iteration and linear trees: no forest and no TreeSHAP tables;
    a model still predicts through LightGBM, and explaining a linear tree is LightGBM's
    refusal rather than the tables' wrong numbers (they would read its leaves as constants)."""
    X, y = training_data()
    multiclass = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
                           lgb.Dataset(X, np.digitize(y, np.quantile(y, [0.33, 0.66]))), 5)
    linear = lgb.train({"objective": "regression", "linear_tree": True, "verbose": -1, "num_threads": 1},
                       lgb.Dataset(np.nan_to_num(X), y), 5)
    assert Forest.of([multiclass]) is None and Forest.of([BOOSTERS["quantile"], linear]) is None
    assert ContributionTables.of(multiclass) is None and ContributionTables.of(linear) is None
    model = ProbabilityModel("delay", [f"f{j}" for j in range(N_FEATURES)], ())
    model.booster_ = linear
    assert model.forest() is None
    np.testing.assert_array_equal(model.predicted(np.nan_to_num(X[:3]))[:, 0],
                                  linear.predict(np.nan_to_num(X[:3]), num_threads=1))
    with pytest.raises(lgb.basic.LightGBMError, match="not implemented for linear trees"):
        model.contributions(None, linear, np.nan_to_num(X[:3]))


def test_a_model_answers_one_row_a_batch_and_bulk_alike():
    """One row, a batch of several row blocks and bulk on every core (rows split over
    threads) all give LightGBM's numbers, and the forest is made once per set of boosters."""
    model = EddModel([f"f{j}" for j in range(N_FEATURES)], ())
    model.boosters_ = [BOOSTERS["quantile"], BOOSTERS["zero as missing"], BOOSTERS["quantile"]]
    X = odd_rows(13, ONE_THREAD_ROWS * 3 + 7)
    forest = model.forest()
    assert forest is not None and model.forest() is forest
    expected = np.column_stack([b.predict(X, num_threads=1) for b in model.boosters_])
    np.testing.assert_array_equal(model.predicted(X), expected)  # bulk: threads
    np.testing.assert_array_equal(model.predicted(X[:BLOCK_ROWS * 2 + 3]), expected[:BLOCK_ROWS * 2 + 3])
    np.testing.assert_array_equal(np.vstack([model.predicted(X[i:i + 1]) for i in range(0, len(X), 97)]), expected[::97])
    for threads in (2, 3, 5):
        np.testing.assert_array_equal(forest.predict(X, threads=threads), expected)
    model.boosters_ = model.boosters_[:2] + [BOOSTERS["binary"]]  # new boosters: a new forest
    assert model.forest() is not forest
    np.testing.assert_array_equal(model.predicted(X[:5])[:, 2], BOOSTERS["binary"].predict(X[:5], num_threads=1))


def _paths(b: lgb.Booster):
    """Each root-to-leaf path of the booster, as its list of split nodes."""
    def walk(node, path):
        if "split_index" not in node:
            yield path
            return
        for child in (node["left_child"], node["right_child"]):
            yield from walk(child, path + [node])

    for tree in b.dump_model()["tree_info"]:
        yield from walk(tree["tree_structure"], [])


def _features(path: list[dict]) -> set[int]:
    return {split["split_feature"] for split in path}


# -- the trees as the runtime reads them


def _used(node: dict) -> dict:
    """The fields of a dumped node that the forest and the tables read."""
    if "split_index" not in node:
        return {"leaf_value": node["leaf_value"], "leaf_count": node.get("leaf_count")}
    return {**{k: node[k] for k in ("split_feature", "decision_type", "default_left", "missing_type", "internal_count")},
            # dump_model writes an infinite threshold as 1e300 (the model text, and predict, keep inf)
            "threshold": [t if node["decision_type"] == "==" else float(t) if float(t) != 1e300 else np.inf
                          for t in str(node["threshold"]).split("||")],
            "left_child": _used(node["left_child"]), "right_child": _used(node["right_child"])}


def test_model_text_reads_what_dump_model_says():
    deep, _ = deep_booster()
    X, y = training_data()
    one_leaf = lgb.train({"objective": "regression", "min_data_in_leaf": 5000, "verbose": -1}, lgb.Dataset(X, y), 2)
    for b in [*BOOSTERS.values(), deep, one_leaf]:
        expected, got = b.dump_model(), dumped(b)
        assert {k: got[k] for k in ("num_tree_per_iteration", "max_feature_idx", "objective", "average_output")} == \
            {k: expected[k] for k in ("num_tree_per_iteration", "max_feature_idx", "objective", "average_output")}
        assert len(got["tree_info"]) == len(expected["tree_info"]) > 0
        for g, e in zip(got["tree_info"], expected["tree_info"]):
            if "split_index" in e["tree_structure"]:
                assert _used(g["tree_structure"]) == _used(e["tree_structure"])
            else:
                assert g["tree_structure"]["leaf_value"] == e["tree_structure"]["leaf_value"]
    assert any(_used(t["tree_structure"]).get("decision_type") == "==" for t in dumped(BOOSTERS["binary"])["tree_info"])


def test_a_bulk_answer_pauses_the_collector_and_always_turns_it_back_on():
    import gc

    from runtime.bundle import _collector_paused

    assert gc.isenabled()
    with _collector_paused(True):
        assert not gc.isenabled()
        with _collector_paused(True):  # an overlapping answer found it off: leaves it to the first
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with _collector_paused(True):
            raise ValueError("a failed answer")
    assert gc.isenabled()
    with _collector_paused(False):  # a small answer changes nothing
        assert gc.isenabled()
