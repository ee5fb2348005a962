"""``eddy monitor``: one monitoring run, from the prediction log and the retailer's latest export
to the long table, the advice, the database and MLflow."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from data.load import DataSet
from features.history import data_end
from features.pit import micros
from monitoring.advice import advice
from monitoring.drift import drift_figures
from monitoring.live import COLUMNS, judged_answers, live_figures, read_predictions, read_versions, week_of


@dataclass
class MonitorRun:
    run_id: str
    table: pd.DataFrame  # COLUMNS: figures, drift and the advice rows (metric "advice")
    advice: list[dict]
    predictions: int
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def answer_counts(logged: pd.DataFrame) -> pd.DataFrame:
    """How many answers each version gave per week (``answers_eta``, ``answers_churn``)."""
    if logged.empty:
        return pd.DataFrame(columns=COLUMNS)
    g = logged.assign(week=week_of(logged.as_of.to_numpy()), model=logged.model_version.astype(str)) \
        .groupby(["week", "model", "alias", "kind"]).size().reset_index(name="value")
    return g.assign(metric="answers_" + g.pop("kind"), carrier="", lane="", reference=np.nan, n=g.value, text="")[COLUMNS]


def advice_rows(rules: list[dict], week: str) -> pd.DataFrame:
    return pd.DataFrame([{"week": week, "model": a["model"], "alias": a["alias"], "carrier": a["carrier"], "lane": "",
                          "metric": "advice", "value": a["value"], "reference": a["limit"], "n": a["n"],
                          "text": a["text"]} for a in rules], columns=COLUMNS)


def run_monitor(ds: DataSet, engine, since_us: int | None = None, load=None) -> MonitorRun:
    """Every live figure of the logged answers from ``since_us`` on; ``load(version)``
    gives a version's bundle for drift (None: no drift)."""
    clock = {}
    t0 = time.perf_counter()
    logged = read_predictions(engine, since_us)
    versions = read_versions(engine)
    clock["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    eta, churn = judged_answers(logged, ds, versions)
    table = live_figures(eta, churn, versions)
    clock["figures_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    notes: list[str] = []
    drift = pd.DataFrame(columns=["week", "model", "alias", "metric", "value", "reference", "n"])
    if load is not None and len(logged):
        answers = pd.concat([eta, churn], ignore_index=True)
        # features can be rebuilt only for moments the export has reached
        answers = answers[answers.as_of <= int(micros(pd.Series([data_end(ds["shipments"], ds.get("scans"))]))[0])]
        answers = answers.assign(week=week_of(answers.as_of.to_numpy()), model_version=answers.model_version.astype(str))
        drift, notes = drift_figures(answers, ds, versions, load)
    clock["drift_s"] = time.perf_counter() - t0
    rules = advice(eta, churn, drift, versions)
    latest = table.week.max() if len(table) else ""
    parts = [table, answer_counts(logged), drift.assign(carrier="", lane="", text="")[COLUMNS] if len(drift) else None,
             advice_rows(rules, latest)]
    full = pd.concat([p for p in parts if p is not None and len(p)], ignore_index=True) if any(
        p is not None and len(p) for p in parts) else pd.DataFrame(columns=COLUMNS)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    return MonitorRun(run_id, full, rules, len(logged), notes, clock)
