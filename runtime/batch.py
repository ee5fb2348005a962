"""Batch predictions for other systems and the CX page: ``eddy predict``, ``eddy score-customers``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data.load import DataSet
from features.build import moments_at
from features.history import data_end
from features.customer import CustomerHistory
from features.pit import NAT, US_PER_DAY, concat, micros, size, take, timestamps_of
from features.rows import order_moments
from runtime.bundle import ModelBundle
from runtime.predlog import churn_records, eta_records
from runtime.reasons import actionable_share
from runtime.store import Scoring


def predict_data_set(bundle: ModelBundle, ds: DataSet, as_of: pd.Timestamp | None = None,
                     confidence: float = 0.95, explain: bool = True) -> pd.DataFrame:
    """Every shipment at its order time, or every open shipment at ``as_of`` with its scans so far."""
    shipments, scans = ds["shipments"], ds.get("scans")
    moments = order_moments(shipments) if as_of is None else moments_at(ds, as_of)
    rows = bundle.shipment_rows(shipments, scans, moments)
    table = bundle.predict_rows(rows, confidence, explain=explain)
    table = table.rename(columns={"promise_at": f"promise_at_{int(round(confidence * 100))}"})
    return table


#: delivery factors whose effect on churn risk the review page plots against their value
DEPENDENCE = ("days_late", "exceptions", "contacts", "failed_attempts", "rating")


def score_data_set(bundle: ModelBundle, ds: DataSet, as_of: pd.Timestamp | None = None,
                   window_days: float = 60.0) -> Scoring:
    """One row per customer whose latest delivery (or unmet promise) falls in the window before the moment."""
    return scoring_of(bundle, [scored_customers(bundle, ds, scoring_moment(ds, as_of), window_days)])


@dataclass
class Scored:
    """Some customers scored: their table, their model rows (columns) and their orders."""

    table: pd.DataFrame
    rows: dict
    orders: pd.DataFrame


def scoring_moment(ds: DataSet, as_of: pd.Timestamp | None) -> pd.Timestamp:
    """``as_of``, or just after the data's latest fact."""
    return as_of if as_of is not None else data_end(ds["shipments"], ds.get("scans")) + pd.Timedelta(seconds=1)


def scored_customers(bundle: ModelBundle, ds: DataSet, moment: pd.Timestamp, window_days: float,
                     customers: CustomerHistory | None = None) -> Scored:
    """The customers of ``customers`` (default: the bundle's, every customer it knows) and
    of ``ds`` whose latest delivery falls in the window, scored at ``moment``. A customer's
    score reads only that customer's rows, so scoring a data set a part at a time (whole
    customers in each) gives every customer the same answer."""
    bundle.require_churn()
    shipments, scans = ds["shipments"], ds.get("scans")
    history = (customers if customers is not None else bundle.snapshot.customers).with_orders(shipments, scans)
    t = int(micros(pd.Series([moment]))[0])
    latest = latest_judged(history.experience, t, window_days)
    moments = {"order_id": latest["order_id"], "as_of": np.full(size(latest), t, dtype=np.int64)}
    rows = bundle.churn_rows(shipments, scans, moments, history=history)
    table = bundle.score_churn_rows(rows)
    table.insert(3, "delivery_judged_at", timestamps_of(latest["ref"]).array)
    return Scored(table, rows, customer_orders(history, table.customer_id, t))


def scoring_of(bundle: ModelBundle, parts: list[Scored]) -> Scoring:
    """The scoring of every customer in ``parts``: riskiest first, with the loyalty drivers
    of all of them together."""
    version = str(bundle.meta.get("version", ""))
    table = pd.concat([p.table for p in parts], ignore_index=True)
    table["scored_at"] = pd.Timestamp.now(tz="UTC")
    table["model_version"] = version
    table = table.sort_values(["churn_risk", "customer_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
    drivers = loyalty_drivers(bundle, concat([p.rows for p in parts]))
    drivers.update(model_version=version, trained_at=bundle.meta.get("trained_at"),
                   scored_at=table.scored_at.iloc[0].isoformat() if len(table) else None, customers=len(table))
    orders = pd.concat([p.orders for p in parts], ignore_index=True)
    return Scoring(table, orders.sort_values(["customer_id", "ordered_at"], kind="stable").reset_index(drop=True), drivers)


def latest_judged(experience, before_us: int, window_days: float) -> dict:
    """Each customer's latest order judged in the window before the moment, oldest first."""
    ref = experience["ref"]
    judged = np.flatnonzero((ref != NAT) & (ref < before_us) & (ref >= before_us - int(window_days * US_PER_DAY)))
    judged = judged[np.argsort(ref[judged], kind="stable")]
    last = {c: i for c, i in zip(experience["customer_id"][judged].tolist(), judged.tolist())}  # later wins
    return take(experience, np.array(sorted(last.values(), key=lambda i: ref[i]), dtype=np.int64))


def loyalty_drivers(bundle: ModelBundle, rows: pd.DataFrame, sample: int = 1500, top: int = 12) -> dict:
    """The churn model's global picture on the scored rows: mean |SHAP value| per feature
    (and for the customer's own rhythm, the base it starts from), and (value, SHAP value) pairs for the delivery factors in ``DEPENDENCE`` (a sample,
    values above the 99th percentile left out so the plot stays readable).

    SHAP values come from LightGBM's ``pred_contrib``, which computes TreeSHAP: the
    numbers shap's TreeExplainer gives, without loading shap in the scoring run."""
    names = bundle.churn.explained_names
    if not len(np.asarray(rows["customer_id"])):
        return {"importance": [], "dependence": {}, "base_rate": None, "actionable_share": None}
    contrib = bundle.churn.explanation(rows)
    importance = np.abs(contrib).mean(axis=0) if len(rows) else np.zeros(len(names))
    order = np.argsort(-importance)[:top]
    pick = np.random.default_rng(0).permutation(len(rows))[:sample]
    dependence = {}
    for f in DEPENDENCE:
        if f in names and f in rows:
            x = np.asarray(rows[f], dtype=float)[pick]
            y = contrib[pick, names.index(f)]
            keep = ~np.isnan(x)
            if keep.any():  # a few lost parcels (hundreds of days late) would flatten the plot
                keep &= x <= np.quantile(x[keep], 0.99)
            dependence[f] = {"x": np.round(x[keep], 3).tolist(), "y": np.round(y[keep], 4).tolist()}
    return {"importance": [{"feature": names[j], "mean_abs_shap": round(float(importance[j]), 4)} for j in order],
            "dependence": dependence, "base_rate": float(np.mean(bundle.churn.predict_proba(rows))) if len(rows) else None,
            "actionable_share": round(float(actionable_share(contrib, names).mean()), 3)}


def customer_orders(history, customer_ids: pd.Series, before_us: int) -> pd.DataFrame:
    """Every order of the given customers placed before the moment, with how its delivery went."""
    wanted = set(customer_ids.astype("str"))
    orders = history.frame("orders")
    orders = orders[orders.customer_id.astype("str").isin(wanted) & (micros(orders.ordered_at) < before_us)]
    exp = history.frame("experience").drop(columns="customer_id").rename(columns={"ref": "judged_at"})
    out = orders.merge(exp, on="order_id", how="left")
    return out.sort_values(["customer_id", "ordered_at"]).reset_index(drop=True)


def eta_log_entries(table: pd.DataFrame, shipments: pd.DataFrame, version: str, confidence: float,
                    source: str = "predict") -> list[dict]:
    """``predict_data_set``'s table as prediction-log entries (carrier and lane from the shipments)."""
    ship = shipments.drop_duplicates("shipment_id").set_index(shipments.shipment_id.drop_duplicates().astype("str"))
    ship = ship.reindex(table.shipment_id.astype("str"))
    promise = next(c for c in table.columns if c.startswith("promise_at"))
    out = {"as_of": micros(table.as_of), "late_probability": table.late_probability.to_numpy(dtype=float),
           **{k: micros(table[k]) for k in ("eta_p10", "eta_p50", "eta_p90")}, "promise_at": micros(table[promise])}
    if "reasons" in table:
        out["reasons"] = table.reasons.tolist()
    cols = {c: ship[c].astype("str").to_numpy(dtype=object) for c in ("carrier", "service_level", "origin_region",
                                                                      "destination_region", "customer_id")}
    cols["shipment_id"] = table.shipment_id.astype("str").to_numpy(dtype=object)
    cols["promised_at"] = micros(ship["promised_at"])
    return eta_records(out, cols, source, "champion", version, confidence)


def shipment_of_orders(shipments: pd.DataFrame) -> pd.Series:
    """Each order's first shipment id, by order id (the delivery a churn answer names)."""
    first = shipments.drop_duplicates("order_id")
    return pd.Series(first.shipment_id.astype("str").to_numpy(), index=first.order_id.astype("str").to_numpy())


def churn_log_entries(table: pd.DataFrame, shipments: pd.DataFrame | pd.Series, version: str,
                      source: str = "score-customers") -> list[dict]:
    """A scoring's table as prediction-log entries (the delivery named by its order's
    shipment; ``shipments`` is the table, or ``shipment_of_orders`` of it)."""
    shipment_of = shipments if isinstance(shipments, pd.Series) else shipment_of_orders(shipments)
    out = {c: table[c].to_numpy() for c in ("customer_id", "carrier", "service_level", "origin_region",
                                            "destination_region", "churn_risk")}
    out["as_of"] = micros(table.as_of)
    if "reasons" in table:
        out["reasons"] = table.reasons.tolist()
    return churn_records(out, shipment_of.reindex(table.order_id.astype("str")).to_numpy(dtype=object), source,
                         "champion", version)
