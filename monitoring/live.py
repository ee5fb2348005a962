"""Live figures: what Eddy answered, joined to what happened, by week, carrier and lane.

``eddy monitor DIR`` reads the prediction log, joins the retailer's latest export (a data
set in the contract's format) to it and computes, per model version and alias:

- ETA answers: ``edd_mae_days``, ``edd_within_1d``, ``coverage_80`` (the 10-90% interval),
  ``promise{c}_on_time`` (the promise date at its confidence ``c``), once delivered;
- the late probability: ``delay_auc``, ``delay_brier``, ``delay_ece``, once the promise is
  judged (delivered, or past it at the end of the data);
- churn risk: ``churn_auc``, ``churn_brier``, once the customer's horizon has passed;
- answers that called a parcel likely lost (no dates): ``likely_lost_delivered``, the share
  whose parcel was delivered after all (so far);

each beside the figure the version had on its test window at training time
(``reference``). Metrics are named as in ``eddy backtest``. The arithmetic is over numpy
columns and pandas group-bys, so a million logged answers take seconds.
"""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd

from data.load import DataSet
from features.history import data_end
from features.pit import NAT, US_PER_DAY, US_PER_HOUR, micros

COLUMNS = ["week", "model", "alias", "carrier", "lane", "metric", "value", "reference", "n", "text"]
#: live metric -> the test-window metric ``eddy train`` recorded for the version
REFERENCE = {"edd_mae_days": "edd_mae_days", "edd_within_1d": "edd_within_1d", "coverage_80": "edd_interval_coverage",
             "promise90_on_time": "edd_promise90_on_time", "promise95_on_time": "edd_promise95_on_time",
             "delay_auc": "delay_roc_auc", "delay_brier": "delay_brier", "delay_ece": "delay_ece",
             "churn_auc": "churn_roc_auc"}
MIN_LANE_ROWS = 20  # lanes with fewer judged answers in a week are left out (their figures are noise)
MOMENTS = ("as_of", "eta_p10", "eta_p50", "eta_p90", "promise_at", "requested_promise")
NUMBERS = ("promise_confidence", "late_probability", "churn_risk")
LOGGED = ["model_version", "alias", "kind", "shipment_id", "customer_id", "carrier", "lane", "as_of", "eta_p10",
          "eta_p50", "eta_p90", "promise_at", "promise_confidence", "late_probability", "churn_risk",
          "requested_promise"]


def read_predictions(engine, since_us: int | None = None, chunk: int = 200_000) -> pd.DataFrame:
    """The logged answers (moments as int64 microseconds), optionally from ``since_us`` on.

    Rows come straight from the driver's cursor in chunks (SQLAlchemy's row objects cost
    30 s a million); the statement is SQLAlchemy's, so any dialect reads the same."""
    from sqlalchemy import select

    t = _table(engine, "predictions")
    query = select(*[t.c[c] for c in LOGGED])
    if since_us is not None:
        query = query.where(t.c.as_of >= int(since_us))
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    columns: list[list] = [[] for _ in LOGGED]
    collecting = gc.isenabled()
    gc.disable()  # millions of fresh tuples would set off full collections over and over (4 s a million)
    try:
        with engine.connect() as conn:
            cursor = conn.exec_driver_sql(sql).cursor
            while rows := cursor.fetchmany(chunk):
                for store, values in zip(columns, zip(*rows)):
                    store.extend(values)
    finally:
        if collecting:
            gc.enable()
    frame = {}
    for c, values in zip(LOGGED, columns):
        if c in MOMENTS:  # microseconds fit a double exactly (2**53 us is 285 years)
            x = np.array(values, dtype=float)
            frame[c] = np.where(np.isnan(x), NAT, x).astype(np.int64)
        elif c in NUMBERS:
            frame[c] = np.array(values, dtype=float)
        else:
            frame[c] = np.array(values, dtype=object)
    return pd.DataFrame(frame)


def read_versions(engine) -> dict[str, dict]:
    import json

    t = _table(engine, "model_versions")
    with engine.connect() as conn:
        return {r.model_version: json.loads(r.meta) for r in conn.execute(t.select())}


def _table(engine, name: str):
    from runtime.predlog import tables

    md, *_ = tables()
    return md.tables[name]


def week_of(us: np.ndarray) -> np.ndarray:
    """The Monday (UTC) starting each moment's week, as ``YYYY-MM-DD``."""
    days = np.asarray(us, dtype=np.int64) // US_PER_DAY
    monday = days - (days + 3) % 7  # 1970-01-01 was a Thursday
    return pd.to_datetime(monday, unit="D").strftime("%Y-%m-%d").to_numpy()


# ------------------------------------------------------------------------- outcomes


def eta_outcomes(logged: pd.DataFrame, ds: DataSet) -> pd.DataFrame:
    """ETA answers whose shipment is in the data set, with per-answer judgements
    (NaN where the outcome is not known yet)."""
    eta = logged[logged.kind == "eta"]
    s = ds["shipments"]
    ids = s.shipment_id.astype("str").to_numpy()
    where = pd.Index(ids).get_indexer(eta.shipment_id.astype("str").to_numpy())
    eta = eta[where >= 0].copy()
    where = where[where >= 0]
    delivered, promised = micros(s.delivered_at)[where], micros(s.promised_at)[where]
    # Lateness is judged against the promise the request carried, the one its late
    # probability was about; the export's where the log has none (a log from before it kept them).
    asked = eta.requested_promise.to_numpy(dtype=np.int64) if "requested_promise" in eta else np.full(len(eta), NAT)
    promised = np.where(asked != NAT, asked, promised)
    end = int(micros(pd.Series([data_end(s, ds.get("scans"))]))[0])
    at = eta.as_of.to_numpy()
    got = (delivered != NAT) & (delivered >= at)
    d = np.where(got, delivered, 0)
    undated = eta.eta_p50.to_numpy() == NAT  # an answer that called the parcel likely lost gave no date
    dated = got & ~undated
    err = np.abs(eta.eta_p50.to_numpy() - d) / US_PER_DAY
    eta["abs_err_days"] = np.where(dated, err, np.nan)
    eta["within_1d"] = np.where(dated, err <= 1.0, np.nan)
    eta["covered"] = np.where(dated, (d >= eta.eta_p10.to_numpy()) & (d <= eta.eta_p90.to_numpy()), np.nan)
    eta["on_time"] = np.where(dated, d <= eta.promise_at.to_numpy(), np.nan)
    # An answer that called the parcel likely lost was wrong if it came after all (a share
    # that can only grow as later exports bring deliveries).
    eta["lost_then_delivered"] = np.where(undated, got, np.nan)
    # An answer given after the parcel's delivery (a caller without the delivered scan)
    # judges nothing: its ETA is not one, and its late probability was not a forecast.
    after_the_fact = (delivered != NAT) & (delivered < at)
    judged = (promised != NAT) & ~after_the_fact & (got | (promised < end))
    eta["late"] = np.where(judged, ~got | (delivered > promised), np.nan)
    eta["late"] = eta["late"].where(eta.late_probability.notna())
    eta["actual_hours"] = np.where(got, (d - at) / US_PER_HOUR, np.nan)
    # when the outcome became known: the delivery, or the promise passing without one
    eta["outcome_at"] = np.where(got, d, np.where(judged, promised, NAT))
    return eta


def churn_outcomes(logged: pd.DataFrame, ds: DataSet) -> pd.DataFrame:
    """Churn answers with their label where matured: 1 if the customer placed no order in
    the version's horizon after the moment."""
    churn = logged[logged.kind == "churn"].copy()
    churn["churned"] = np.nan
    churn["outcome_at"] = NAT
    if churn.empty:
        return churn
    s = ds["shipments"]
    orders = pd.DataFrame({"customer_id": s.customer_id.astype("str").to_numpy(), "t": micros(s.ordered_at)})
    orders = orders.drop_duplicates().sort_values(["customer_id", "t"])
    end = int(micros(pd.Series([data_end(s, ds.get("scans"))]))[0])
    horizon = churn.pop("horizon_us").to_numpy()
    cust = churn.customer_id.astype("str").to_numpy()
    at = churn.as_of.to_numpy()
    # the first order after the moment: per customer, a sorted search in their block
    codes = pd.Index(orders.customer_id.unique())
    block = codes.get_indexer(cust)
    starts = np.searchsorted(orders.customer_id.to_numpy(), codes.to_numpy(), side="left")
    stops = np.searchsorted(orders.customer_id.to_numpy(), codes.to_numpy(), side="right")
    t = orders.t.to_numpy()
    nxt = np.full(len(churn), NAT, dtype=np.int64)
    for i in np.flatnonzero(block >= 0):  # one search per answer: answers are few next to shipments
        lo, hi = starts[block[i]], stops[block[i]]
        k = lo + np.searchsorted(t[lo:hi], at[i], side="right")
        if k < hi:
            nxt[i] = t[k]
    mature = at + horizon <= end
    came_back = (nxt != NAT) & (nxt <= at + horizon)
    churn["churned"] = np.where(mature & (horizon > 0), (~came_back).astype(float), np.nan)
    churn["outcome_at"] = np.where(mature, at + horizon, NAT)
    return churn


# ------------------------------------------------------------------------- figures


def _auc_by(frame: pd.DataFrame, keys: list[str], p: str, y: str) -> pd.Series:
    """ROC-AUC per group from ranks (ties averaged): the same number scikit-learn gives."""
    f = frame[keys + [p, y]].dropna(subset=[p, y])
    if f.empty:
        return pd.Series(dtype=float)
    f = f.assign(_r=f.groupby(keys, dropna=False)[p].rank(method="average"))
    g = f.groupby(keys, dropna=False)
    pos = g[y].sum()
    neg = g[y].count() - pos
    rank_pos = f[f[y] == 1].groupby(keys, dropna=False)._r.sum().reindex(pos.index, fill_value=0.0)
    auc = (rank_pos - pos * (pos + 1) / 2) / (pos * neg)
    return auc.where((pos > 0) & (neg > 0))


def _ece_by(frame: pd.DataFrame, keys: list[str], p: str, y: str, bins: int = 10) -> pd.Series:
    f = frame[keys + [p, y]].dropna(subset=[p, y])
    if f.empty:
        return pd.Series(dtype=float)
    # the bins of training.evaluate.expected_calibration_error, edges included
    f = f.assign(_b=np.clip(np.digitize(f[p].to_numpy(), np.linspace(0, 1, bins + 1)) - 1, 0, bins - 1))
    cell = f.groupby(keys + ["_b"], dropna=False).agg(pm=(p, "mean"), ym=(y, "mean"), k=(y, "size")).reset_index()
    cell["gap"] = (cell.pm - cell.ym).abs() * cell.k
    g = cell.groupby(keys, dropna=False)
    return g.gap.sum() / g.k.sum()


def _long(stat: pd.Series, n: pd.Series, metric: str, keys: list[str]) -> pd.DataFrame:
    out = pd.DataFrame({"value": stat, "n": n.reindex(stat.index)}).reset_index()
    out["metric"] = metric
    return out.rename(columns=dict(zip(keys, keys)))


def figures_at(frame: pd.DataFrame, keys: list[str]) -> list[pd.DataFrame]:
    """Every metric for one grouping of the judged answers."""
    parts = []
    eta = frame[frame.kind == "eta"]
    if len(eta):
        judged = eta[eta.abs_err_days.notna()]
        g = judged.groupby(keys, dropna=False)
        n = g.size()
        parts += [_long(g.abs_err_days.mean(), n, "edd_mae_days", keys), _long(g.within_1d.mean(), n, "edd_within_1d", keys),
                  _long(g.covered.mean(), n, "coverage_80", keys)]
        for c, sub in judged.groupby((judged.promise_confidence * 100).round().astype(int)):
            gs = sub.groupby(keys, dropna=False)
            parts.append(_long(gs.on_time.mean(), gs.size(), f"promise{c}_on_time", keys))
        lost = eta[eta.lost_then_delivered.notna()] if "lost_then_delivered" in eta else eta.iloc[:0]
        if len(lost):
            gx = lost.groupby(keys, dropna=False)
            parts.append(_long(gx.lost_then_delivered.mean(), gx.size(), "likely_lost_delivered", keys))
        late = eta[eta.late.notna()]
        gl = late.groupby(keys, dropna=False)
        nl = gl.size()
        parts += [_long(_auc_by(late, keys, "late_probability", "late"), nl, "delay_auc", keys),
                  _long(gl.late.sum(), nl, "delay_positives", keys),
                  _long(((late.late_probability - late.late) ** 2).groupby([late[k] for k in keys], dropna=False).mean(),
                        nl, "delay_brier", keys),
                  _long(_ece_by(late, keys, "late_probability", "late"), nl, "delay_ece", keys)]
    churn = frame[(frame.kind == "churn") & frame.churned.notna()] if "churned" in frame else frame.iloc[:0]
    if len(churn):
        gc = churn.groupby(keys, dropna=False)
        nc = gc.size()
        parts += [_long(_auc_by(churn, keys, "churn_risk", "churned"), nc, "churn_auc", keys),
                  _long(gc.churned.sum(), nc, "churn_positives", keys),
                  _long(((churn.churn_risk - churn.churned) ** 2).groupby([churn[k] for k in keys], dropna=False).mean(),
                        nc, "churn_brier", keys)]
    return [p for p in parts if len(p)]


def live_figures(eta: pd.DataFrame, churn: pd.DataFrame, versions: dict[str, dict]) -> pd.DataFrame:
    """The long table: per week and version, totals, then per carrier, then per carrier and lane."""
    both = pd.concat([eta, churn], ignore_index=True) if len(churn) else eta
    if both.empty:
        return pd.DataFrame(columns=COLUMNS)
    both = both.assign(week=week_of(both.as_of.to_numpy()), model=both.model_version.astype(str))
    base = ["week", "model", "alias"]
    parts = figures_at(both.assign(carrier="", lane=""), base + ["carrier", "lane"])
    parts += figures_at(both.assign(lane=""), base + ["carrier", "lane"])
    lanes = figures_at(both[both.kind == "eta"], base + ["carrier", "lane"])
    parts += [p[p.n >= MIN_LANE_ROWS] for p in lanes]
    out = pd.concat(parts, ignore_index=True)
    out["reference"] = [versions.get(m, {}).get("metrics", {}).get(REFERENCE.get(k, ""), np.nan)
                        for m, k in zip(out.model, out.metric)]
    out["text"] = ""
    out = out[COLUMNS].sort_values(["week", "model", "alias", "carrier", "lane", "metric"], kind="stable")
    return out.reset_index(drop=True)


def judged_answers(logged: pd.DataFrame, ds: DataSet, versions: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ETA and churn answers with their outcomes (the churn horizon from each version's meta)."""
    horizon = {v: float(m.get("horizon_days") or 0) * US_PER_DAY for v, m in versions.items()}
    logged = logged.assign(horizon_us=logged.model_version.map(horizon).fillna(0).astype(np.int64))
    return eta_outcomes(logged.drop(columns="horizon_us"), ds), churn_outcomes(logged, ds)


def paired_figures(eta: pd.DataFrame, churn: pd.DataFrame, versions: dict[str, str]) -> tuple[dict, dict]:
    """The primary metrics (as ``eddy train`` names them) of each alias in ``versions``
    (alias -> model version) on the same live requests, those both answered and whose
    outcome is known; and the number of requests behind each."""
    from training.evaluate import probability_metrics

    figures = {alias: {} for alias in versions}
    counts = {}
    for kind, frame, judged, key in (("edd", eta, "abs_err_days", "shipment_id"), ("delay", eta, "late", "shipment_id"),
                                     ("churn", churn, "churned", "customer_id")):
        if frame.empty or judged not in frame:
            continue
        f = frame[frame[judged].notna()]
        mine = {a: f[(f.alias == a) & (f.model_version.astype(str) == str(v))].drop_duplicates([key, "as_of"])
                .set_index([key, "as_of"]) for a, v in versions.items()}
        common = None
        for m in mine.values():
            common = m.index if common is None else common.intersection(m.index)
        counts[kind] = 0 if common is None else len(common)
        if not counts[kind]:
            continue
        for alias, m in mine.items():
            m = m.loc[common]
            if kind == "edd":
                figures[alias]["edd_mae_days"] = float(m.abs_err_days.mean())
            elif kind == "delay":
                ok = m.late_probability.notna()
                figures[alias]["delay_brier"] = float(((m.late_probability[ok] - m.late[ok]) ** 2).mean())
            elif m.churned.nunique() == 2:
                figures[alias]["churn_roc_auc"] = probability_metrics(m.churn_risk.to_numpy(), m.churned.to_numpy())["roc_auc"]
    return figures, counts
