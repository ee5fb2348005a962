"""Monitoring runs in the prediction log's database: written by ``eddy monitor``, read by
the monitoring page and the Prometheus gauges (which never import the monitoring code)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from features import spec
from runtime.predlog import now_us, tables

FIGURE_COLUMNS = ["week", "model", "alias", "carrier", "lane", "metric", "value", "reference", "n"]


def write_run(engine, run_id: str, table: pd.DataFrame, advice: list[dict], data: str, since_us: int | None,
              predictions: int) -> None:
    """One monitoring run: its figures (the long table) and its advice, in one transaction."""
    _, _, _, runs, figures = tables()
    rows = table[FIGURE_COLUMNS].astype(object).where(table[FIGURE_COLUMNS].notna(), None).to_dict("records")
    for r in rows:
        r["run_id"] = run_id
        r["n"] = None if r["n"] is None else int(r["n"])
        for k in ("value", "reference"):
            r[k] = None if r[k] is None else float(r[k])
    with engine.begin() as conn:
        conn.execute(runs.insert(), [{"run_id": run_id, "computed_at": now_us(), "data": data, "since": since_us,
                                      "predictions": predictions, "advice": json.dumps(advice, default=float)}])
        for start in range(0, len(rows), 5000):
            conn.execute(figures.insert(), rows[start:start + 5000])


def latest_run(engine) -> tuple[dict, pd.DataFrame] | None:
    """The latest monitoring run and its figures, or None before the first."""
    from sqlalchemy import select

    _, _, _, runs, figures = tables()
    with engine.connect() as conn:
        run = conn.execute(select(runs).order_by(runs.c.computed_at.desc()).limit(1)).mappings().first()
        if run is None:
            return None
        rows = conn.execute(select(*[figures.c[c] for c in FIGURE_COLUMNS]).where(figures.c.run_id == run["run_id"]))
        frame = pd.DataFrame(rows.fetchall(), columns=FIGURE_COLUMNS)
    frame["value"] = pd.to_numeric(frame.value).astype(float)
    frame["reference"] = pd.to_numeric(frame.reference).astype(float)
    out = dict(run)
    out["advice"] = json.loads(out["advice"] or "[]")
    return out, frame


def clock_metric(metric: str) -> bool:
    """A drift figure of a calendar-bound feature (``psi_edd@at_order:order_month``)."""
    head, _, name = metric.partition(":")
    try:
        return spec.feature(head[4:].split("@")[0], name).clock
    except KeyError:
        return False


def headline(frame: pd.DataFrame, min_rows: int = 50, min_drift_rows: int = 200) -> dict[str, dict[str, float]]:
    """Per alias, the totals of the gauges' metrics in the latest week with ``min_rows``
    judged answers, and the largest PSI per model (calendar features aside) in the latest
    week with ``min_drift_rows`` rebuilt rows."""
    out: dict[str, dict[str, float]] = {}
    totals = frame[(frame.carrier.fillna("") == "") & (frame.lane.fillna("") == "") & frame.value.notna()]
    for alias, t in totals.groupby("alias"):
        figs = {}
        for metric in ("coverage_80", "edd_mae_days", "delay_auc", "churn_auc"):
            m = t[(t.metric == metric) & (t.n >= min_rows)]
            if len(m):
                figs[metric] = float(m.sort_values("week").value.iloc[-1])
        psi = t[t.metric.str.startswith("psi_") & (t.n >= min_drift_rows)]
        psi = psi[~psi.metric.map(clock_metric)] if len(psi) else psi
        if len(psi):
            model = psi.metric.str.split(":").str[0].str[4:].str.split("@").str[0]
            for name, p in psi.groupby(model):
                figs[f"psi_max_{name}"] = float(np.max(p[p.week == p.week.max()].value))
        out[str(alias)] = figs
    return out
