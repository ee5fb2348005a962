"""The monitoring page, ``/review/monitor``: live figures over time, worst carriers and lanes,
drift per feature and the retrain advice, from the latest ``eddy monitor`` run stored in
the prediction log's database. Same sign-in as the review pages; plots are drawn by the
page's own chart script (nothing from the internet).

Also here: the Prometheus gauges of the same run's headline figures, refreshed when
``/metrics`` is read.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd

from features import spec
from runtime.monitor_store import clock_metric, headline, latest_run

#: the live metrics plotted over time, their titles, and whether they are shares
PLOTTED = [("coverage_80", "10-90% interval coverage", True), ("edd_mae_days", "EDD mean absolute error (days)", False),
           ("promise95_on_time", "95% promise kept", True), ("promise90_on_time", "90% promise kept", True),
           ("delay_auc", "Delay ROC-AUC", False), ("delay_brier", "Delay Brier score", False),
           ("churn_auc", "Churn ROC-AUC", False), ("likely_lost_delivered", "Called likely lost, then delivered", True)]
WORST = 10
MIN_WEEK_ROWS = 50  # the tables show the latest week with this many judged answers
MIN_DRIFT_ROWS = 200
MIN_TABLE_ROWS = 20  # a carrier or lane with fewer judged answers is left out of the tables


def _settled_week(rows: pd.DataFrame, min_rows: int) -> str | None:
    """The latest week with ``min_rows`` (the newest weeks have few outcomes yet), else the fullest."""
    if rows.empty:
        return None
    enough = rows[rows.n >= min_rows]
    return enough.week.max() if len(enough) else rows.sort_values("n").week.iloc[-1]


class LatestRun:
    """The latest monitoring run, read again only when a newer one is stored (checked at
    most every few seconds, so a busy page costs the database little)."""

    def __init__(self, every_s: float = 5.0):
        self.every_s, self._checked, self._value, self._engine = every_s, 0.0, None, None
        self._lock = threading.Lock()
        self.error: str | None = None

    def get(self):
        with self._lock:
            if time.monotonic() - self._checked < self.every_s:
                return self._value
            self._checked = time.monotonic()
            try:
                if self._engine is None:
                    from runtime.predlog import engine_for

                    self._engine = engine_for()
                self._value, self.error = latest_run(self._engine), None
            except Exception as exc:  # noqa: BLE001 - the page says the database is away; the service goes on
                self.error = f"{type(exc).__name__}: {str(getattr(exc, 'orig', exc)).splitlines()[0][:200]}"
            return self._value


LATEST = LatestRun()


def _series(frame: pd.DataFrame, metric: str, percent: bool) -> dict | None:
    t = frame[(frame.metric == metric) & (frame.carrier.fillna("") == "") & (frame.lane.fillna("") == "")]
    if t.empty:
        return None
    weeks = sorted(t.week.unique())
    series, refs = [], []
    for (model, alias), s in t.groupby(["model", "alias"]):
        by_week = s.set_index("week").value.reindex(weeks)
        series.append({"label": f"{alias} (v{model})", "y": [None if pd.isna(v) else round(float(v), 4) for v in by_week]})
        ref = s.reference.dropna()
        if len(ref):
            refs.append({"label": f"test window v{model}", "value": round(float(ref.iloc[0]), 4)})
    refs = list({r["label"]: r for r in refs}.values())
    return {"x": weeks, "series": series, "references": refs, "percent": percent}


def _worst(frame: pd.DataFrame, lanes: bool) -> list[dict]:
    """The champion's carriers in the latest week with enough judged answers, or its carrier
    lanes over the last four weeks (a lane has few answers a week), worst coverage first."""
    t = frame[(frame.alias == "champion") & (frame.carrier.fillna("") != "")]
    t = t[(t.lane.fillna("") != "") if lanes else (t.lane.fillna("") == "")]
    t = t[t.metric.isin(["coverage_80", "edd_mae_days", "promise95_on_time"])]
    if t.empty:
        return []
    totals = frame[(frame.alias == "champion") & (frame.carrier.fillna("") == "") & (frame.metric == "edd_mae_days")]
    week = _settled_week(totals, MIN_WEEK_ROWS)
    weeks = sorted(w for w in t.week.unique() if w <= week)[-4:] if lanes else [week]
    t = t[t.week.isin(weeks)]
    if t.empty:
        return []
    # figures over several weeks: means weighted by each week's judged answers
    t = t.assign(weighted=t.value * t.n)
    g = t.groupby(["carrier", "lane", "metric"])
    wide = (g.weighted.sum() / g.n.sum()).unstack("metric")
    n = t[t.metric == "edd_mae_days"].groupby(["carrier", "lane"]).n.sum()
    wide = wide.assign(n=n.reindex(wide.index)).reset_index()
    wide = wide[wide.n >= MIN_TABLE_ROWS].sort_values("coverage_80", na_position="last")
    span = weeks[0] if len(weeks) == 1 else f"{weeks[0]} to {weeks[-1]}"
    return [{**r, "week": span} for r in wide.head(WORST).to_dict("records")]


def _drift(frame: pd.DataFrame) -> list[dict]:
    """Per model and moment, the latest week's features by PSI (top 15), with mean |SHAP| then and now."""
    psi = frame[frame.metric.str.startswith("psi_")]
    if psi.empty:
        return []
    out = []
    champion = psi[psi.alias == "champion"] if (psi.alias == "champion").any() else psi
    for key, p in champion.groupby(champion.metric.str.split(":").str[0].str[4:]):
        latest = p[p.week == _settled_week(p, MIN_DRIFT_ROWS)].assign(feature=lambda d: d.metric.str.split(":").str[1])
        latest = latest.assign(clock=latest.metric.map(clock_metric))
        # what may need acting on first; calendar-bound features (which move by construction) after
        latest = latest.sort_values(["clock", "value"], ascending=[True, False]).head(15)
        shap = frame[frame.metric.str.startswith(f"mean_abs_shap_{key}:") & (frame.week == latest.week.iloc[0])
                     & (frame.alias.isin(latest.alias.unique()))]
        shap = shap.assign(feature=shap.metric.str.split(":").str[1]).drop_duplicates("feature").set_index("feature")
        model, _, moment = key.partition("@")
        rows = [{"feature": r.feature, "psi": float(r.value), "clock": clock_metric(r.metric),
                 "words": _words(model, r.feature),
                 "shap_live": _get(shap.value, r.feature), "shap_ref": _get(shap.reference, r.feature)}
                for r in latest.itertuples()]
        bars = [{"label": f"{r['feature']}{' (calendar)' if r['clock'] else ''}", "value": round(r["psi"], 3)} for r in rows]
        out.append({"model": model, "moment": moment.replace("_", " "), "week": latest.week.iloc[0],
                    "n": int(latest.n.iloc[0]), "rows": rows, "bars": json.dumps(bars)})
    return out


def _get(series: pd.Series, key: str):
    v = series.get(key)
    return None if v is None or pd.isna(v) else float(v)


def _words(model: str, name: str) -> str:
    try:
        return spec.feature(model, name).words[0]
    except KeyError:
        return ""


def page_context() -> dict | None:
    got = LATEST.get()
    if got is None:
        return None
    run, frame = got
    charts = []
    for metric, title, percent in PLOTTED:
        s = _series(frame, metric, percent)
        if s is not None:
            charts.append({"metric": metric, "title": title, "data": json.dumps(s)})
    computed = pd.Timestamp(run["computed_at"], unit="us", tz="UTC").strftime("%Y-%m-%d %H:%M")
    return {"run": run, "computed": computed, "charts": charts, "advice": run["advice"],
            "carriers": _worst(frame, lanes=False), "lanes": _worst(frame, lanes=True), "drift": _drift(frame)}


def refresh_gauges(metrics) -> None:
    """Set the live-figure gauges from the latest run (nothing when there is none or the
    database is away: /metrics answers regardless)."""
    try:
        got = LATEST.get()
    except Exception:  # noqa: BLE001
        return
    if got is None:
        return
    for alias, figs in headline(got[1]).items():
        for k, v in figs.items():
            if k.startswith("psi_max_"):
                metrics.drift.labels(alias=alias, model=k[len("psi_max_"):]).set(v)
            elif not np.isnan(v):
                metrics.live.labels(alias=alias, metric=k).set(v)
