"""Drift of live requests: their features, rebuilt with the version's own feature code, against
the version's training reference (``runtime.drift``), week by week.

The prediction log keeps answers, not feature values; the features of a sample of each
week's answers are rebuilt from the retailer's data at each answer's ``as_of`` with the
version's snapshot, which is what the service computed for it (a request later than the
snapshot reads the same materialized statistics).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data.load import DataSet
from features.pit import NAT, micros, take
from runtime import drift as pictures

PER_WEEK = 2000  # answers per week and version whose features are rebuilt
WEEKS = 8  # the latest weeks measured (earlier weeks were measured by earlier runs)
SHAP_WEEKS = 2  # the latest weeks whose mean |SHAP| is measured too (TreeSHAP is the cost)


def _sample(frame: pd.DataFrame, size: int) -> pd.DataFrame:
    return frame if len(frame) <= size else frame.sample(size, random_state=0)


def _shipment_rows(bundle, ds: DataSet, answers: pd.DataFrame):
    s = ds["shipments"]
    wanted = s[s.shipment_id.astype("str").isin(set(answers.shipment_id.astype("str")))]
    scans = ds.get("scans")
    if scans is not None:
        scans = scans[scans.shipment_id.astype("str").isin(set(wanted.shipment_id.astype("str")))]
    moments = {"shipment_id": answers.shipment_id.astype("str").to_numpy(dtype=object),
               "as_of": answers.as_of.to_numpy(dtype=np.int64)}
    return bundle.shipment_rows(wanted, scans, moments)


def _churn_rows(bundle, ds: DataSet, answers: pd.DataFrame, history):
    """Churn rows of the answers whose delivery the export knows by their moment (an export
    that has not heard of the delivery yet would rebuild a different row)."""
    s = ds["shipments"]
    ids = s.shipment_id.astype("str").to_numpy()
    first = ~pd.Index(ids).duplicated()
    order_of = pd.Series(s.order_id.astype("str").to_numpy()[first], index=ids[first])
    delivered = pd.Series(micros(s.delivered_at)[first], index=ids[first])
    asked = answers.shipment_id.astype("str").to_numpy()
    orders = order_of.reindex(asked).to_numpy()
    known = delivered.reindex(asked).fillna(NAT).to_numpy(dtype=np.int64)
    keep = pd.notna(orders) & (known != NAT) & (known <= answers.as_of.to_numpy())
    if not keep.any():
        return None
    moments = {"order_id": orders[keep].astype(object), "as_of": answers.as_of.to_numpy(dtype=np.int64)[keep]}
    rows = bundle.churn_rows(s, ds.get("scans"), moments, history=history)
    # The export rebuilds the whole order; where another of its parcels came after the
    # moment, the request spoke of a different delivery than the export's: left out.
    return take(rows, np.flatnonzero(np.asarray(rows["days_since_delivery"], dtype=float) >= 0))


def _by_moment(model: str, rows) -> list[tuple[str, dict]]:
    """The rows apart by the moment they were asked at, as the references are kept."""
    if model == "churn":
        return [("after_delivery", rows)]
    at_order = np.asarray(rows["hours_since_order"], dtype=float) == 0
    return [("at_order", take(rows, np.flatnonzero(at_order))), ("in_transit", take(rows, np.flatnonzero(~at_order)))]


def drift_figures(answers: pd.DataFrame, ds: DataSet, versions: dict[str, dict], load) -> tuple[pd.DataFrame, list[str]]:
    """Rows ``week, model, alias, metric, value, reference, n`` (metric ``psi_<model>@<moment>:<feature>``
    and ``mean_abs_shap_<model>@<moment>:<feature>``, moment ``at_order``, ``in_transit`` or
    ``after_delivery``) and notes on what could not be measured.
    ``load(version)`` gives a version's bundle."""
    out, notes = [], []
    for (version, alias), mine in answers.groupby(["model_version", "alias"]):
        profile = (versions.get(version) or {}).get("profile")
        if not profile:
            notes.append(f"version {version}: no drift reference (trained before monitoring); retrain to get one")
            continue
        try:
            bundle = load(version)
        except Exception as exc:  # noqa: BLE001 - drift is one part of the report; the rest goes on
            notes.append(f"version {version}: cannot be loaded for drift ({type(exc).__name__}: {exc})")
            continue
        history = None
        weeks = sorted(mine.week.unique())
        for week, rows in mine[mine.week.isin(weeks[-WEEKS:])].groupby("week"):
            for kind, frame in rows.groupby("kind"):
                sample = _sample(frame, PER_WEEK)
                if kind == "eta":
                    built = _shipment_rows(bundle, ds, sample)
                    models = [("edd", bundle.edd), ("delay", bundle.delay)]
                else:
                    if bundle.churn is None:
                        continue
                    history = history or bundle.snapshot.customers.with_orders(ds["shipments"], ds.get("scans"))
                    built = _churn_rows(bundle, ds, sample, history)
                    models = [("churn", bundle.churn)]
                if built is None:
                    continue
                for name, model in models:
                    if model is None or name not in profile:
                        continue
                    for moment, part in _by_moment(name, built):
                        ref = profile[name].get(moment)
                        if ref is None or not len(np.asarray(part["as_of"])):
                            continue
                        live = pictures.live(model, ref, part, shap=week in weeks[-SHAP_WEEKS:])
                        key = f"{name}@{moment}"
                        out += [(week, version, alias, f"psi_{key}:{f}", v, np.nan, live["rows"])
                                for f, v in live["psi"].items()]
                        out += [(week, version, alias, f"mean_abs_shap_{key}:{f}", v,
                                 ref["mean_abs_shap"].get(f, np.nan), live["rows"]) for f, v in live["mean_abs_shap"].items()]
    return pd.DataFrame(out, columns=["week", "model", "alias", "metric", "value", "reference", "n"]), notes
