"""The training report: Markdown plus PNG plots, written to a folder and logged to MLflow."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen here or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from training.evaluate import calibration_table  # noqa: E402

HEADLINE = [
    ("EDD MAE (days)", "edd_mae_days", "edd_oracle_mae_days", ["edd_baseline_promise_mae_days", "edd_baseline_lane_median_mae_days"]),
    ("EDD within ±1 day", "edd_within_1d", "edd_oracle_within_1d", ["edd_baseline_promise_within_1d", "edd_baseline_lane_median_within_1d"]),
    ("EDD 10-90% coverage", "edd_interval_coverage", None, []),
    ("EDD 10-90% width (days)", "edd_interval_width_days", None, []),
    ("EDD MAE (days), in transit", "edd_in_transit_mae_days", None, []),
    ("EDD 10-90% coverage, in transit", "edd_in_transit_interval_coverage", None, []),
    ("Promise at 90%: on time", "edd_promise90_on_time", None, ["retailer_promise_on_time"]),
    ("Promise at 90%: mean days", "edd_promise90_days", None, ["retailer_promise_days"]),
    ("Promise at 95%: on time", "edd_promise95_on_time", None, ["retailer_promise_on_time"]),
    ("Promise at 95%: mean days", "edd_promise95_days", None, ["retailer_promise_days"]),
    ("Delay ROC-AUC", "delay_roc_auc", "delay_oracle_roc_auc", ["delay_baseline_late_rate_roc_auc"]),
    ("Delay PR-AUC", "delay_pr_auc", "delay_oracle_pr_auc", ["delay_baseline_late_rate_pr_auc"]),
    ("Delay Brier", "delay_brier", "delay_oracle_brier", ["delay_baseline_late_rate_brier"]),
    ("Delay ECE", "delay_ece", "delay_oracle_ece", ["delay_baseline_late_rate_ece"]),
    ("Delay ROC-AUC, in transit", "delay_in_transit_roc_auc", None, []),
    ("Churn ROC-AUC", "churn_roc_auc", "churn_oracle_roc_auc", ["churn_baseline_rfm_roc_auc", "churn_baseline_bgnbd_roc_auc"]),
    ("Churn PR-AUC", "churn_pr_auc", "churn_oracle_pr_auc", ["churn_baseline_rfm_pr_auc", "churn_baseline_bgnbd_pr_auc"]),
    ("Churn top-decile lift", "churn_top_decile_lift", None, []),
]


def _fmt(v) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def write_report(result, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    m, meta = result.metrics, result.bundle.meta
    lines = [f"# Eddy training report", "", f"- data: `{meta['data']}` ({meta['shipments']:,} shipments, end {meta['data_end']})",
             f"- split: train < {meta['split']['calibrate_from']}, calibrate < {meta['split']['test_from']}, "
             f"test ≤ {meta['split']['test_until']}", f"- trained at {meta['trained_at']} in {meta['train_seconds']} s", ""]
    for model, why in meta["skipped"].items():
        lines.append(f"- **{model} skipped**: {why}")
    lines += ["", "| metric | model | oracle | baselines |", "|---|---:|---:|---|"]
    for label, key, oracle, base in HEADLINE:
        if key in m:
            lines.append(f"| {label} | {_fmt(m.get(key))} | {_fmt(m.get(oracle)) if oracle else ''} | "
                         f"{', '.join(f'{_baseline_name(b)}: {_fmt(m[b])}' for b in base if b in m)} |")
    lines.append("")
    for name, table in result.tables.items():
        if not name.startswith("_"):
            lines += [f"## {name.replace('_', ' ')}", "", table.head(25).to_markdown(index=False), ""]
    for png in _plots(result, folder):
        lines += [f"![{png.stem}]({png.name})", ""]
    (folder / "report.md").write_text("\n".join(lines))
    return folder


def _baseline_name(key: str) -> str:
    """'edd_baseline_lane_median_mae_days' -> 'lane_median'; 'retailer_promise_days' ->
    "retailer's promise" (the data's own promised dates)."""
    if key.startswith("retailer_promise"):
        return "retailer's promise"
    name = key.split("_baseline_", 1)[1]
    for suffix in ("_mae_days", "_within_1d", "_roc_auc", "_pr_auc", "_brier", "_ece"):
        name = name.removesuffix(suffix)
    return name


def _plots(result, folder: Path) -> list[Path]:
    out = []
    ev = result.evaluation
    for name in ("delay", "churn"):
        if name in ev:
            t = calibration_table(ev[name]["p"], ev[name]["y"])
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.plot([0, 1], [0, 1], ls="--", c="grey")
            ax.plot(t.predicted, t.observed, marker="o")
            ax.set(xlabel="predicted probability", ylabel="observed share", title=f"{name} calibration (test window)")
            out.append(_save(fig, folder / f"calibration_{name}.png"))
    for key, title in (("coverage_by_carrier", "10-90% coverage by carrier"), ("coverage_by_month", "10-90% coverage by month")):
        if key in result.tables:
            t = result.tables[key]
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.bar(t.segment.astype(str), t.coverage)
            ax.axhline(0.8, c="k", ls="--")
            ax.set(ylim=(0.5, 1.0), ylabel="share inside", title=title)
            ax.tick_params(axis="x", rotation=45)
            out.append(_save(fig, folder / f"{key}.png"))
    if "error_by_lane" in result.tables:
        t = result.tables["error_by_lane"].head(20)
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.barh(t.lane, t.mae_days)
        ax.set(xlabel="MAE (days)", title="EDD error on the 20 busiest lanes")
        out.append(_save(fig, folder / "error_by_lane.png"))
    if "churn" in ev:
        out += _shap_plots(ev["churn"], folder)
    return out


def _shap_plots(churn: dict, folder: Path) -> list[Path]:
    """Which delivery factors drive loyalty: SHAP on the churn model (offline, so shap is fine here)."""
    import warnings

    import shap

    model, rows = churn["model"], churn["rows"]
    X = model._X(rows.head(3000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shap's note that binary LightGBM output became a list
        values = shap.TreeExplainer(model.booster_).shap_values(X)
    values = values[1] if isinstance(values, list) else values
    with warnings.catch_warnings():
        # a feature with no value in the sample (Olist has no contacts) colours no dot
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        shap.summary_plot(values, X, show=False, max_display=15)
    fig = plt.gcf()
    fig.suptitle("Churn risk: what drives it (SHAP, test window)")
    paths = [_save(fig, folder / "shap_churn_summary.png")]
    mean_abs = pd.DataFrame({"feature": X.columns, "mean_abs_shap": np.abs(values).mean(axis=0)}) \
        .sort_values("mean_abs_shap", ascending=False)
    mean_abs.to_csv(folder / "shap_churn_importance.csv", index=False)
    for feature in ("days_late", "exceptions", "contacts"):
        # Contacts are rarely known right after a delivery; a dependence plot needs some spread.
        if feature in X.columns and X[feature].nunique() > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                shap.dependence_plot(feature, values, X, interaction_index=None, show=False)
            paths.append(_save(plt.gcf(), folder / f"shap_dependence_{feature}.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ backtest report

#: (metric, title, moment) shown in the backtest report, in reading order
BACKTEST_TABLES = [
    ("edd_n", "parcels judged at order", "at_order"),
    ("edd_mae_days", "EDD MAE (days)", "at_order"),
    ("edd_within_1d", "EDD within ±1 day", "at_order"),
    ("coverage_80", "10-90% interval coverage", "at_order"),
    ("promise90_on_time", "promise at 90%: share on time", "at_order"),
    ("promise90_days", "promise at 90%: mean days", "at_order"),
    ("promise95_on_time", "promise at 95%: share on time", "at_order"),
    ("promise95_days", "promise at 95%: mean days", "at_order"),
    ("delay_auc", "delay ROC-AUC", "at_order"),
    ("delay_brier", "delay Brier", "at_order"),
    ("delay_ece", "delay ECE", "at_order"),
    ("edd_mae_days", "EDD MAE (days), in transit", "in_transit"),
    ("coverage_80", "10-90% interval coverage, in transit", "in_transit"),
    ("delay_auc", "delay ROC-AUC, in transit", "in_transit"),
    ("churn_n", "customers judged right after a delivery", "after_delivery"),
    ("churn_auc", "churn ROC-AUC (right after delivery)", "after_delivery"),
    ("churn_lift10", "churn top-decile lift", "after_delivery"),
]


def write_backtest_report(long: pd.DataFrame, infos: list[dict], command: str, folder: Path) -> Path:
    """``backtest.md``: what ran, one table per metric (a row per cutoff, mean and spread
    below) and the plots (metric by cutoff; model against baselines)."""
    from training.backtest import by_cutoff

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Eddy backtest", "", f"`{command}`", "",
             "| cutoff | trained on shipments | window shipments | train s | skipped |", "|---|---:|---:|---:|---|"]
    for i in infos:
        skipped = "; ".join(f"{k}: {v}" for k, v in i["skipped"].items())
        lines.append(f"| {i['cutoff'][:10]} | {i['train_shipments']:,} | {i['window_shipments']:,} | "
                     f"{i['train_seconds']} | {skipped} |")
    lines.append("")
    for metric, title, moment in BACKTEST_TABLES:
        table = by_cutoff(long, metric, moment)
        if not table.empty:
            lines += [f"## {title}", "", table.round(3).reset_index(names="cutoff").to_markdown(index=False), ""]
    for png in _backtest_plots(long, folder):
        lines += [f"![{png.stem}]({png.name})", ""]
    (folder / "backtest.md").write_text("\n".join(lines))
    return folder


def _backtest_plots(long: pd.DataFrame, folder: Path) -> list[Path]:
    from training.backtest import by_cutoff

    shown = [(m, t, mo) for m, t, mo in BACKTEST_TABLES
             if not m.endswith("_n") and not by_cutoff(long, m, mo).empty][:9]  # counts: tables only
    if not shown:
        return []
    cols = 3
    fig, axes = plt.subplots((len(shown) + cols - 1) // cols, cols, figsize=(13, 3.3 * ((len(shown) + cols - 1) // cols)),
                             squeeze=False)
    for ax, (metric, title, moment) in zip(axes.flat, shown):
        t = by_cutoff(long, metric, moment).drop(index=["mean", "spread"])
        for model in t.columns:
            ax.plot(t.index, t[model], marker="o", lw=2.5 if model == "eddy" else 1.2, label=model)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    paths = [_save(fig, folder / "metric_by_cutoff.png")]

    fig, axes = plt.subplots(1, len(shown), figsize=(2.2 * len(shown), 3.4), squeeze=False)
    for ax, (metric, title, moment) in zip(axes.flat, shown):
        t = by_cutoff(long, metric, moment)
        ax.bar(t.columns, t.loc["mean"], yerr=t.loc["spread"], color=["C0" if c == "eddy" else "C7" for c in t.columns])
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    paths.append(_save(fig, folder / "model_vs_baselines.png"))
    return paths
