"""The Dask path computes what the in-process path computes, on a real ``LocalCluster``.

History tables, rows at order, in transit (at a moment and the training snapshots) and
after delivery, and batch predictions are compared value for value; a worker killed in
the middle of a build changes nothing; the CLI writes parts and names a bad address.
Each test has its own cluster on fresh ports, and they run one after another.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data.load import load_data_set
from data.partitioned import read_on
from eddy.cli import app
from eddy.cluster import connect
from features import distributed
from features.build import FeatureSnapshot, after_delivery, at_order, in_transit, moments_at

pytestmark = pytest.mark.slow
WHEN = pd.Timestamp("2026-02-20T12:00:00Z")


@pytest.fixture(scope="module")
def client():
    """One cluster for the module's tests (they run one after another); the killed-worker
    test starts its own."""
    with connect("local", say=lambda _: None, n_workers=2, memory_limit="3GiB") as c:
        yield c


@pytest.fixture()
def own_client():
    with connect("local", say=lambda _: None, n_workers=2, memory_limit="3GiB") as c:
        yield c


@pytest.fixture(scope="module")
def ds(sim_dir):
    return load_data_set(sim_dir)


def same_rows(a: pd.DataFrame, b: pd.DataFrame, key: list[str]) -> None:
    """Equal row for row, whatever order the partitions came back in."""
    assert len(a) == len(b)
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)[a.columns]
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_features_on_dask_equal_the_in_process_build(client, ds, tmp_path):
    local = FeatureSnapshot.fit(ds)
    parts = read_on(client, ds.folder, n=5).parts
    remote = distributed.snapshot_on(client, parts, ds.get("locations"))
    assert remote.end == local.end and remote.history.last_day == local.history.last_day
    for level, table in {**local.history.tables, "volume": local.history.volume}.items():
        other = remote.history.volume if level == "volume" else remote.history.tables[level]
        assert list(other.groups) == list(table.groups), level
        for name in ("group", "day", "hist"):
            assert np.array_equal(getattr(other, name), getattr(table, name)), (level, name)
        assert all(np.array_equal(other.sums[k], v) for k, v in table.sums.items()), level
    assert len(local.history.lanes) > 100  # the recent combinations live rows start with
    pd.testing.assert_frame_equal(remote.history.lanes, local.history.lanes)

    rows = at_order(ds, local)
    same_rows(rows, distributed.rows_on(client, parts, remote).compute(), ["shipment_id"])
    at_moment = in_transit(ds, local, rows, moments_at(ds, WHEN))
    assert len(at_moment) > 20
    same_rows(at_moment, distributed.rows_on(client, parts, remote, "in-transit", WHEN).compute(), ["shipment_id"])
    # the training snapshots are keyed draws: each shipment's are the same on any partition
    snapshots = in_transit(ds, local, rows)
    same_rows(snapshots, distributed.rows_on(client, parts, remote, "in-transit").compute(), ["shipment_id", "as_of"])
    churn = after_delivery(ds, local, rows)
    same_rows(churn, distributed.rows_on(client, parts, remote, "after-delivery").compute(), ["order_id", "as_of"])


def test_partitions_hold_whole_customers_with_their_scans(client, ds):
    parts = client.gather(read_on(client, ds.folder, n=4).parts)
    assert sum(len(p["shipments"]) for p in parts) == len(ds["shipments"])
    assert sum(len(p["scans"]) for p in parts) == len(ds["scans"])
    owners = [set(p["customers"].customer_id) | set(p["shipments"].customer_id.dropna()) for p in parts]
    assert all(not (owners[i] & owners[j]) for i in range(4) for j in range(i + 1, 4))
    for p in parts:
        assert set(p["scans"].shipment_id) <= set(p["shipments"].shipment_id)
        assert set(p["orders"].customer_id) <= set(p["customers"].customer_id) | set(p["shipments"].customer_id)


def test_a_worker_killed_in_the_middle_of_the_build_changes_nothing(own_client, ds, tmp_path):
    client = own_client
    local = FeatureSnapshot.fit(ds)
    expected = in_transit(ds, local, at_order(ds, local))
    parts = read_on(client, ds.folder, n=8).parts
    rows = distributed.rows_on(client, parts, distributed.snapshot_on(client, parts, ds.get("locations")), "in-transit")
    victim, pid = next(iter(client.run(os.getpid).items()))
    future = client.compute(rows)
    deadline = time.time() + 60
    while not any(client.processing().values()) and time.time() < deadline:
        time.sleep(0.01)
    assert not future.done()  # killed in the middle, not after
    os.kill(pid, signal.SIGKILL)  # the worker process dies at once; its nanny starts a new one
    result = future.result(timeout=300)
    assert victim not in client.scheduler_info()["workers"]  # its nanny started a new one
    same_rows(expected, result, ["shipment_id", "as_of"])
    # Built once, the rows can be built again after a worker is lost: the snapshot is a task
    # of the graph (``shared_on``), which the scheduler makes again with the lost pieces.
    # Scattered, its last copy could go with the worker, and the rebuild was cancelled.
    client.wait_for_workers(2, timeout=60)
    victim, pid = next(iter(client.run(os.getpid).items()))
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 60
    while victim in client.scheduler_info()["workers"] and time.time() < deadline:
        time.sleep(0.05)
    same_rows(expected, rows.compute(), ["shipment_id", "as_of"])


def test_predictions_on_dask_equal_eddy_predict_in_process(client, trained, tmp_path):
    from runtime.batch import predict_data_set
    from runtime.distributed import predict_on

    result, ds = trained
    expected = predict_data_set(result.bundle, ds, WHEN)
    # as `eddy predict --cluster` does: the folder read by partition on the cluster
    got = list(predict_on(client, read_on(client, ds.folder).parts, result.bundle, WHEN))
    assert sorted(k for k, _, _ in got) == list(range(len(got))) and len(got) >= 2
    tables = pd.concat([t for _, t, _ in got], ignore_index=True)
    tables["reasons"] = tables.reasons.map(str)
    expected["reasons"] = expected.reasons.map(str)
    same_rows(expected, tables, ["shipment_id"])


def test_predictions_on_dask_survive_a_worker_lost_midway(own_client, trained):
    """A worker killed after the first partition's answers changes no answer: the partitions
    it held or was answering are made again on the other and its replacement."""
    from runtime.batch import predict_data_set
    from runtime.distributed import predict_on

    client = own_client
    result, ds = trained
    expected = predict_data_set(result.bundle, ds, WHEN, explain=False)
    answers = predict_on(client, read_on(client, ds.folder, n=8).parts, result.bundle, WHEN, explain=False)
    got = [next(answers)]
    victim, pid = next(iter(client.run(os.getpid).items()))
    os.kill(pid, signal.SIGKILL)
    got += list(answers)
    assert sorted(k for k, _, _ in got) == list(range(8))
    same_rows(expected, pd.concat([t for _, t, _ in got], ignore_index=True), ["shipment_id"])


def _half_the_customers(ds, folder):
    """``ds`` with every other customer (with their shipments, scans, orders, feedback)."""
    from data.write import write_data_set

    keep = set(ds["customers"].customer_id.astype("str").iloc[::2])
    t = {name: ds[name] for name in ds.tables}
    ships = t["shipments"][t["shipments"].customer_id.astype("str").isin(keep)]
    orders = t["orders"][t["orders"].customer_id.astype("str").isin(keep)]
    write_data_set({"shipments": ships, "scans": t["scans"][t["scans"].shipment_id.isin(ships.shipment_id)],
                    "orders": orders, "customers": t["customers"][t["customers"].customer_id.astype("str").isin(keep)],
                    "feedback": t["feedback"][t["feedback"].order_id.isin(orders.order_id)],
                    "locations": t["locations"]}, folder, parts=3)
    return load_data_set(folder)


def test_customer_scores_on_dask_equal_score_customers_in_process(client, trained, tmp_path):
    """Each partition scores its own customers against the bundle's history cut to them;
    the customers only the bundle knows (half of them here) are scored in one more task.
    Every customer gets the in-process answer, and the drivers are the same."""
    from runtime.batch import score_data_set
    from runtime.distributed import score_on

    result, ds = trained
    half = _half_the_customers(ds, tmp_path / "half")
    expected = score_data_set(result.bundle, half)
    got, shipment_of = score_on(client, read_on(client, half.folder).parts, result.bundle)
    in_data = set(half["shipments"].customer_id.astype("str"))
    scored = set(got.table.customer_id.astype("str"))
    assert scored - in_data and scored & in_data  # both kinds of customer were scored
    for table in (expected.table, got.table):
        table["reasons"] = table.reasons.map(str)
    drop = ["scored_at"]
    same_rows(expected.table.drop(columns=drop), got.table.drop(columns=drop), ["customer_id"])
    assert (np.diff(got.table.churn_risk.to_numpy()) <= 0).all()  # riskiest first
    same_rows(expected.history, got.history, ["customer_id", "order_id"])
    imp = lambda s: {d["feature"]: d["mean_abs_shap"] for d in s.drivers["importance"]}  # noqa: E731
    assert imp(got) == pytest.approx(imp(expected), abs=1e-4) and got.drivers["customers"] == len(expected.table)
    assert got.drivers["base_rate"] == pytest.approx(expected.drivers["base_rate"])
    assert set(shipment_of.index) == set(got.table.order_id[got.table.customer_id.astype("str").isin(in_data)].astype("str"))


def test_eddy_features_on_a_running_scheduler_writes_parts(client, sim_dir, tmp_path):
    out = tmp_path / "rows"
    address = client.scheduler.address  # a scheduler started elsewhere, as in production
    r = CliRunner().invoke(app, ["features", str(sim_dir), "--out", str(out), "--cluster", address])
    assert r.exit_code == 0, r.output
    assert f"Dask: scheduler {address}, 2 workers" in r.output and "dashboard http://" in r.output
    rows = pd.read_parquet(out)
    assert len(rows) == len(load_data_set(sim_dir)["shipments"]) and len(list(out.glob("*.parquet"))) >= 2
    bad = CliRunner().invoke(app, ["features", str(sim_dir), "--out", str(out), "--cluster", "nowhere:8786"])
    assert bad.exit_code == 2 and "--cluster must be 'local' or a scheduler address" in bad.output
    file = CliRunner().invoke(app, ["features", str(sim_dir), "--out", str(tmp_path / "x.parquet"), "--cluster", "local"])
    assert file.exit_code == 2 and "--out is a folder" in file.output


def test_training_windows_on_dask_equal_the_in_process_ones(client, trained, monkeypatch):
    """What `train --cluster` learns from: every model's fit, early-stopping, calibration
    and test rows, built by partition and sent back, equal the in-process windows row for
    row (labels and judged moments included), with the same counts and splits. The caps on
    training and evaluation rows are lowered so that choosing the newest training rows and
    sampling the calibration and test windows are tested too."""
    from training import rows as training_rows
    from training.distributed import labelled_on
    from training.rows import LABEL, REF
    from training.train import labelled_rows

    monkeypatch.setattr(training_rows, "MAX_TRAIN_ROWS", 3000)
    monkeypatch.setattr(training_rows, "MAX_EVAL_ROWS", 400)
    _, ds = trained
    local_snapshot = FeatureSnapshot.fit(ds)
    local = labelled_rows(ds, local_snapshot, 90.0, seed=3)
    snapshot, remote = labelled_on(client, read_on(client, ds.folder, n=3), 90.0, seed=3)
    assert snapshot.end == local_snapshot.end and remote.split == local.split and remote.churn_split == local.churn_split
    assert remote.shipments == local.shipments
    for name, key in (("edd", ["shipment_id", "as_of"]), ("delay", ["shipment_id", "as_of"]), ("churn", ["order_id", "as_of"])):
        a, b = getattr(local, name), getattr(remote, name)
        assert a.n_train == b.n_train and a.positives == pytest.approx(b.positives, rel=1e-12), name
        for window in ("fit", "val", "calibrate", "test"):
            x, y = getattr(a, window), getattr(b, window)
            assert len(x) > 10, (name, window)
            same_rows(x[sorted(x.columns)], y[sorted(x.columns)], key)
    assert {LABEL, REF} <= set(remote.churn.fit.columns)
    assert len(remote.edd.fit) + len(remote.edd.val) <= 3000 + 5 < remote.edd.n_train  # the cap held (ties aside)
    for name in ("edd", "churn"):  # a sample of about the cap's size (binomial: 4 sd either side)
        assert all(320 <= len(getattr(getattr(remote, name), w)) <= 480 for w in ("calibrate", "test")), name
    # the gathered customer tables are the in-process ones, customer by customer
    for table in ("orders", "experience"):
        same_rows(local_snapshot.customers.frame(table), snapshot.customers.frame(table), ["order_id"])


def test_the_nowcasts_parcels_on_dask_are_the_in_process_ones(client, trained):
    """`train --cluster` reads the nowcast's parcels (the orders of the last days before
    the end) from the partitions: the same rows and hours to delivery as in process, and
    past the cap the same keyed sample of them, shipment for shipment."""
    from training.distributed import recent_shipments_on
    from training.rows import recent_rows, recent_shipments

    _, ds = trained
    snap = FeatureSnapshot.fit(ds)
    data = read_on(client, ds.folder, n=3)

    def both(cap: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        frames = []
        for recent in (recent_shipments(ds["shipments"], snap.end, cap), recent_shipments_on(client, data, snap.end, cap)):
            rows, hours = recent_rows(recent, snap)
            frames.append(rows.assign(_hours=hours).sort_values("shipment_id").reset_index(drop=True))
        return frames[0], frames[1]

    local, remote = both(10**9)
    assert len(local) > 60 and local._hours.isna().any() and not local._hours.isna().all()
    pd.testing.assert_frame_equal(local, remote)
    cap = len(local) // 3  # a third of them: a keyed sample, the same one either way
    local_few, remote_few = both(cap)
    assert cap / 2 < len(local_few) < cap * 1.5 and set(local_few.shipment_id) < set(local.shipment_id)
    pd.testing.assert_frame_equal(local_few, remote_few)


def test_boosters_trained_on_dask_match_the_in_process_fit(client, trained):
    """lightgbm.dask has no early stopping: the rounds come from an in-process fit (on the
    whole training window here, below the sample size), and the Dask booster, trained on
    shuffled rows across both workers, predicts as well on later rows (the median EDD
    booster, the one the reasons explain)."""
    from features import spec
    from runtime.models import booster_predict
    from training.models import EXPLAINED_PARAMS, EddEstimator, train_booster
    from training.rows import edd_training_rows
    from training.train import feature_columns

    result, ds = trained
    rows, labels = edd_training_rows(ds, result.bundle.snapshot)
    known = labels.hours_left.notna().to_numpy()
    rows, hours = rows[known].reset_index(drop=True), np.log1p(labels.hours_left.to_numpy()[known])
    order = np.argsort(rows.as_of.to_numpy(), kind="stable")
    fit, val, test = np.split(order, [int(len(order) * 0.7), int(len(order) * 0.8)])
    model = EddEstimator(feature_columns(rows, spec.EDD), spec.categorical(spec.EDD), {})
    model.encoder_ = result.bundle.edd.encoder_
    X = model._X(rows)
    params = {**EXPLAINED_PARAMS, "objective": "quantile", "alpha": 0.5}
    local = train_booster(params, X.iloc[fit], hours[fit], X.iloc[val], hours[val])
    remote = train_booster(params, X.iloc[fit], hours[fit], X.iloc[val], hours[val], client=client)
    assert remote.num_trees() == local.best_iteration > 10
    # read through the runtime's own matrix (categories as codes), as the service reads it
    later = model._matrix(rows.iloc[test])
    a, b = booster_predict(local, later), booster_predict(remote, later)
    mae = [np.mean(np.abs(np.expm1(p) - np.expm1(hours[test]))) for p in (a, b)]
    assert mae[1] <= mae[0] * 1.03, mae
    assert np.corrcoef(a, b)[0, 1] > 0.95  # they agree shipment by shipment, not just on average
    # a frame of categoricals (the report's SHAP plots) reads the same codes as the matrix
    assert np.allclose(remote.predict(X.iloc[test]), b)


def test_a_booster_with_a_base_trains_on_dask_from_that_base(client):
    """A model with a base (churn: the customer's rhythm) hands each row's starting
    log-odds to lightgbm.dask as it does in process: the Dask booster learns only what the
    base leaves, as the in-process one does, and ranks later rows as well."""
    from sklearn.metrics import log_loss, roc_auc_score

    from training.models import train_booster

    rng = np.random.default_rng(5)
    n = 12_000
    X = pd.DataFrame({"late": rng.exponential(1.0, n), "noise": rng.normal(size=n)})
    base = rng.normal(1.0, 1.5, n)  # off centre: a booster trained without it adds its level again
    y = (rng.random(n) < 1 / (1 + np.exp(-(base + 0.8 * X.late.to_numpy() - 0.8)))).astype(float)
    fit, val, test = np.split(np.arange(n), [8000, 10_000])
    params = {"objective": "binary", "num_leaves": 7, "learning_rate": 0.05}
    init = (base[fit], base[val])
    local = train_booster(params, X.iloc[fit], y[fit], X.iloc[val], y[val], init=init)
    remote = train_booster(params, X.iloc[fit], y[fit], X.iloc[val], y[val], client=client, init=init)
    assert remote.num_trees() == local.best_iteration > 10
    a, b = (m.predict(X.iloc[test], raw_score=True) for m in (local, remote))
    assert np.corrcoef(a, b)[0, 1] > 0.95
    loss = [log_loss(y[test], 1 / (1 + np.exp(-(base[test] + p)))) for p in (a, b)]
    assert loss[1] <= loss[0] + 0.01, loss
    auc = [roc_auc_score(y[test], base[test] + p) for p in (a, b)]
    assert auc[1] >= auc[0] - 0.01 and auc[1] > roc_auc_score(y[test], base[test]) + 0.02, auc


def _planted(sim_small, folder):
    """The simulated set as parts, with rule-breaking rows spread over them."""
    from data.write import write_data_set

    write_data_set(sim_small.tables, folder, parts=3)
    ships = pd.read_parquet(folder / "shipments" / "part-00002.parquet")
    first = pd.read_parquet(folder / "shipments" / "part-00000.parquet")
    copy = first.iloc[[4]].assign(customer_id="someone-else")  # a repeated id, another customer
    ships = pd.concat([ships.astype({"customer_id": "str"}), copy.astype({"customer_id": "str"})], ignore_index=True)
    ships.loc[7, "delivered_at"] = ships.loc[7, "ordered_at"] - pd.Timedelta(days=1)  # its scans: quarantined shipment
    ships.to_parquet(folder / "shipments" / "part-00002.parquet", index=False)
    scans = pd.read_parquet(folder / "scans" / "part-00001.parquet")
    scans = scans.astype({"event": "str", "shipment_id": "str"})
    scans.loc[3, "event"] = "teleported"
    scans.loc[9, "shipment_id"] = "no-such-parcel"
    scans.to_parquet(folder / "scans" / "part-00001.parquet", index=False)
    feedback = pd.read_parquet(folder / "feedback" / "part-00000.parquet").astype({"order_id": "str"})
    feedback.loc[2, "order_id"] = "no-such-order"
    feedback.to_parquet(folder / "feedback" / "part-00000.parquet", index=False)


def test_reading_on_dask_accepts_and_quarantines_what_the_reader_does(client, sim_small, tmp_path):
    """Per-partition validation: the same accepted rows, the same quarantined rows with
    their part, row, column and rule, and counts that add up, table by table."""
    _planted(sim_small, tmp_path)
    whole = load_data_set(tmp_path)
    assert whole.total_quarantined >= 5
    spread = read_on(client, tmp_path, n=5)
    assert {k: vars(r) for k, r in spread.report.items()} == {k: vars(r) for k, r in whole.report.items()}
    for name, q in whole.quarantine.items():
        cols = [c for c in ("_part", "_row", "_column", "_rule") if c in q]
        got = spread.quarantine.get(name, q.iloc[:0])
        assert sorted(map(tuple, got[cols].astype(str).values)) == sorted(map(tuple, q[cols].astype(str).values)), name
    parts = client.gather(spread.parts)
    for name, table in whole.tables.items():
        if name == "locations":
            continue
        together = pd.concat([p[name] for p in parts], ignore_index=True)
        key = [c for c in table.columns if c.endswith("_id")] + [c for c in table.columns if c.endswith("_at")][:1]
        same_rows(table, together, key)


def test_a_part_that_is_not_parquet_is_one_line_on_dask_as_in_process(client, sim_small, tmp_path):
    """A truncated or foreign part: the cluster reader names it in the same one line as
    the in-process reader (it was pyarrow's traceback from the client)."""
    from data.load import ContractError
    from data.write import write_data_set

    write_data_set(sim_small.tables, tmp_path, parts=3)
    (tmp_path / "shipments" / "part-00001.parquet").write_bytes(b"PAR1 not really PAR1")
    with pytest.raises(ContractError, match=r"shipments: unreadable \(.*part-00001.parquet"):
        load_data_set(tmp_path)
    with pytest.raises(ContractError, match=r"shipments/part-00001.parquet: unreadable \("):
        read_on(client, tmp_path, n=2)
