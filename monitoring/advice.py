"""When to retrain: plain rules over the outcomes of the last two weeks (and a clear collapse in one).

Each rule names the model, who it is about (a carrier, or all traffic), the live figure
and the limit it crossed, e.g. "coverage for ups 68% over the last 2 weeks, below 77%".
The limits are the backtest's goal bands and the version's own test-window figures.
"""

from __future__ import annotations

import pandas as pd

from features import spec
from features.pit import US_PER_DAY
from features.profile import DRIFTED
from monitoring.live import REFERENCE, figures_at

WINDOW_DAYS = 14
EARLY_DAYS = 7  # a collapse is named after a week of outcomes when it is clear beyond sampling noise
MIN_ROWS = 50  # judged answers a figure needs before a rule reads it
MIN_EARLY_ROWS = 30
MIN_DRIFT_ROWS = 200  # rebuilt rows a week's PSI needs (and the limit grows with its sampling noise)
COVERAGE_FLOOR = 0.77  # the 80% interval's band in the backtest goals (77-83%)
MAE_RATIO = 1.25  # live EDD error this many times the test window's
AUC_DROP = 0.05
TOP_FEATURES = 15  # drift counts on the features a model leans on most


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of a ROC-AUC from its class counts."""
    if positives < 1 or negatives < 1:
        return float("inf")
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc ** 2) + (negatives - 1) * (q2 - auc ** 2)) / (positives * negatives)
    return float(max(var, 0.0) ** 0.5)


def recent(answers: pd.DataFrame, column: str, days: float) -> pd.DataFrame:
    """Judged answers whose outcome came in the last ``days`` before the latest outcome:
    monitoring reads what happened lately, whenever the answer was given."""
    judged = answers[answers[column].notna()]
    if judged.empty:
        return judged
    return judged[judged.outcome_at >= judged.outcome_at.max() - int(days * US_PER_DAY)]


def wilson_upper(share: float, n: int, z: float = 1.96) -> float:
    """The upper end of the Wilson score interval of a share seen in ``n`` trials."""
    if n <= 0:
        return 1.0
    centre = share + z * z / (2 * n)
    spread = z * ((share * (1 - share) + z * z / (4 * n)) / n) ** 0.5
    return (centre + spread) / (1 + z * z / n)


def _rule_rows(figs: pd.DataFrame, versions: dict) -> list[dict]:
    out = []
    for r in figs.itertuples():
        if r.n < MIN_ROWS or pd.isna(r.value):
            continue
        who = r.carrier if r.carrier else "all traffic"
        ref = versions.get(r.model, {}).get("metrics", {}).get(REFERENCE.get(r.metric, ""))
        if r.metric == "coverage_80" and wilson_upper(r.value, int(r.n)) < COVERAGE_FLOOR:
            # below the band beyond sampling noise: a season the model reads slightly wrong
            # (76% one fortnight) is not a reason to retrain, a carrier falling apart is
            out.append(dict(model=r.model, alias=r.alias, carrier=r.carrier, metric=r.metric, value=r.value,
                            limit=COVERAGE_FLOOR, n=r.n, text=f"retrain: coverage for {who} {r.value:.0%} over the last "
                                                             f"2 weeks, below {COVERAGE_FLOOR:.0%}"))
        elif r.metric == "edd_mae_days" and ref and r.value > MAE_RATIO * ref:
            out.append(dict(model=r.model, alias=r.alias, carrier=r.carrier, metric=r.metric, value=r.value,
                            limit=MAE_RATIO * ref, n=r.n,
                            text=f"retrain: EDD error for {who} {r.value:.2f} days over the last 2 weeks, above "
                                 f"{MAE_RATIO:g} x the test window's {ref:.2f}"))
        elif r.metric in ("delay_auc", "churn_auc") and ref and r.value < ref - max(
                AUC_DROP, 2 * auc_standard_error(r.value, int(r.positives), int(r.n - r.positives))):
            what = "delay" if r.metric == "delay_auc" else "churn"
            out.append(dict(model=r.model, alias=r.alias, carrier=r.carrier, metric=r.metric, value=r.value,
                            limit=ref - AUC_DROP, n=r.n,
                            text=f"retrain: {what} ROC-AUC for {who} {r.value:.3f} over the last 2 weeks, below the "
                                 f"test window's {ref:.3f} by more than {AUC_DROP} and twice its standard error"))
    return out


def _drift_rows(drift: pd.DataFrame, versions: dict) -> list[dict]:
    """Features a model leans on whose latest well-sampled week moved past ``DRIFTED``
    (calendar-bound features, which move by construction, are left to the page)."""
    enough = drift[drift.n >= MIN_DRIFT_ROWS] if len(drift) else drift
    if enough.empty:
        return []
    out = []
    for (version, alias), d in enough.groupby(["model", "alias"]):
        profile = versions.get(version, {}).get("profile") or {}
        for name, moments in profile.items():
            for moment, ref in moments.items():
                key = f"psi_{name}@{moment}:"
                mine = d[d.metric.str.startswith(key)]
                if mine.empty:
                    continue
                latest = mine[mine.week == mine.week.max()]
                top = [f for f, _ in sorted(ref.get("mean_abs_shap", {}).items(), key=lambda kv: -kv[1])
                       if not _clock(name, f)][:TOP_FEATURES]
                for feature in top:
                    hit = latest[latest.metric == key + feature]
                    bins = len(ref.get("profile", {}).get(feature, {}).get("p", []))
                    if len(hit) and hit.value.iloc[0] > DRIFTED + noise_psi(bins, int(hit.n.iloc[0]), ref.get("rows", 0)):
                        v = float(hit.value.iloc[0])
                        out.append(dict(model=version, alias=alias, carrier="", metric=key + feature, value=v,
                                        limit=DRIFTED, n=int(hit.n.iloc[0]),
                                        text=f"check: feature {feature} of the {name} model ({moment.replace('_', ' ')}) "
                                             f"has drifted in the week of {hit.week.iloc[0]} (PSI {v:.2f}, above {DRIFTED})"))
    return out


def noise_psi(bins: int, live_rows: int, reference_rows: int) -> float:
    """The PSI two samples of the same distribution show on average: (bins - 1) x (1/n + 1/m).
    A week of 200 answers over 30 levels reads about 0.15 from sampling alone."""
    if bins < 2 or live_rows < 1:
        return float("inf")
    return (bins - 1) * (1 / live_rows + (1 / reference_rows if reference_rows else 0.0))


def _clock(model: str, name: str) -> bool:
    try:
        return spec.feature(model, name).clock
    except KeyError:
        return False


def _with_positives(figs: pd.DataFrame) -> pd.DataFrame:
    """AUC rows with their count of positives beside (for the standard error)."""
    keys = ["model", "alias", "carrier"]
    pos = figs[figs.metric.str.endswith("_positives")]
    pos = pos.assign(metric=pos.metric.str.replace("_positives", "_auc"))[keys + ["metric", "value"]]
    out = figs[~figs.metric.str.endswith("_positives")].merge(pos.rename(columns={"value": "positives"}),
                                                              on=keys + ["metric"], how="left")
    return out.assign(positives=out.positives.fillna(0))


def _figures(eta: pd.DataFrame, churn: pd.DataFrame, days: float) -> pd.DataFrame:
    """Totals and per-carrier figures over the outcomes of the last ``days``."""
    parts = []
    for frame, column in ((eta, "abs_err_days"), (eta, "late"), (churn, "churned")):
        r = recent(frame, column, days) if len(frame) and column in frame else frame.iloc[:0]
        if len(r):
            r = r.assign(model=r.model_version.astype(str))
            keys = ["model", "alias", "carrier", "lane"]
            parts += figures_at(r.assign(carrier="", lane=""), keys) + figures_at(r.assign(lane=""), keys)
    if not parts:
        return pd.DataFrame(columns=["model", "alias", "carrier", "metric", "value", "n", "positives"])
    figs = pd.concat(parts, ignore_index=True)
    figs = figs[figs.metric.isin(["coverage_80", "edd_mae_days", "delay_auc", "churn_auc", "delay_positives",
                                  "churn_positives"])].drop_duplicates(["model", "alias", "carrier", "metric"])
    return _with_positives(figs)


def _early_rows(figs: pd.DataFrame) -> list[dict]:
    """Coverage that collapsed over the last week's outcomes, beyond doubt (the Wilson
    interval's upper end below the floor)."""
    out = []
    for r in figs[figs.metric == "coverage_80"].itertuples():
        upper = wilson_upper(r.value, int(r.n))
        if r.n >= MIN_EARLY_ROWS and upper < COVERAGE_FLOOR:
            who = r.carrier if r.carrier else "all traffic"
            out.append(dict(model=r.model, alias=r.alias, carrier=r.carrier, metric=r.metric, value=r.value,
                            limit=COVERAGE_FLOOR, n=int(r.n),
                            text=f"retrain: coverage for {who} {r.value:.0%} over the outcomes of the last "
                                 f"{EARLY_DAYS} days (at most {upper:.0%} at 95% confidence), below {COVERAGE_FLOOR:.0%}"))
    return out


def advice(eta: pd.DataFrame, churn: pd.DataFrame, drift: pd.DataFrame, versions: dict) -> list[dict]:
    """The rules that fire: the last two weeks' outcomes, a clear collapse in the last
    week's, and drift; the champion first."""
    rules = _rule_rows(_figures(eta, churn, WINDOW_DAYS), versions)
    named = {(a["model"], a["alias"], a["carrier"], a["metric"]) for a in rules}
    rules += [a for a in _early_rows(_figures(eta, churn, EARLY_DAYS))
              if (a["model"], a["alias"], a["carrier"], a["metric"]) not in named]
    rules += _drift_rows(drift, versions)
    return sorted(rules, key=lambda a: (a["alias"] != "champion", a["metric"], a["carrier"]))
