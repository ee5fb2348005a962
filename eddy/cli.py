"""The ``eddy`` command: one sub-command per lifecycle stage.

Each command is a thin shell around a library function: it parses options, shows
progress, prints a one-line summary of what it wrote where, and turns the library's
expected errors into one clear line and a non-zero exit (never a traceback).
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator

import typer
from rich.console import Console

from eddy import settings

app = typer.Typer(
    name="eddy",
    help="Delivery-date, delay and churn predictions for e-commerce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


@app.callback()
def _root() -> None:
    """Delivery-date, delay and churn predictions for e-commerce."""


#: what a table written with --out may be called: the writers choose the format by it
TABLE_SUFFIXES = (".parquet", ".csv")


def _table_path(path: Path | None) -> Path | None:
    """--out as a table file: .parquet or .csv (no suffix: a folder, for --cluster's parts)."""
    if path is not None and path.suffix and path.suffix.lower() not in TABLE_SUFFIXES:
        fail(f"--out {path}: the file name must end in {' or '.join(TABLE_SUFFIXES)}")
    return path


def _folder_path(path: Path | None) -> Path | None:
    """--out as a data set's folder: anything but an existing file."""
    if path is not None and path.exists() and not path.is_dir():
        fail(f"--out {path}: a file is there; a data set is written as a folder")
    return path


ClusterOption = Annotated[str | None, typer.Option(
    "--cluster", help="Run on Dask: 'local' (a LocalCluster on this machine) or a scheduler address (tcp://host:8786).")]


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@contextmanager
def status(message: str) -> Iterator[None]:
    with console.status(message, spinner="dots"):
        yield


@contextmanager
def progress_bar(description: str) -> Iterator:
    """A progress bar fed with fractions: ``update(stage, fraction)``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=1.0)

        def update(stage: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=f"{description}: {stage}")

        yield update


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Option("--out", callback=_folder_path, help="Folder to write the data set to.")] = None,
    customers: Annotated[int, typer.Option(min=10, help="How many customers to simulate.")] = settings.DEFAULT_DEMO_CUSTOMERS,
    seed: Annotated[int, typer.Option(min=0, help="Random seed; the same seed gives the same data set.")] = settings.DEFAULT_SEED,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    end: Annotated[str, typer.Option(help="Last moment of the simulated history (UTC).")] = "2026-02-28T23:59:59",
    parts: Annotated[int, typer.Option(min=1, max=100_000, help="Write each table as a folder of this many "
                                                                 "Parquet parts (contract 1.1), for Dask.")] = 1,
    shipments_target: Annotated[int | None, typer.Option(min=1000, help="About this many shipments, simulated in "
                                                         "independent slices of customers (one part each, 50k "
                                                         "customers a slice unless --parts says), so memory holds "
                                                         "one slice; replaces --customers.")] = None,
) -> None:
    """Simulate a retailer's deliveries, scans, orders and feedback, with exact truth."""
    import numpy as np

    from data.simulate import SHIPMENTS_PER_CUSTOMER, SimConfig, simulate as run, simulate_in_slices, write_truth
    from data.write import FORMATS, write_data_set

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if parts > 1 and fmt != "parquet":
        fail("--parts writes Parquet parts: leave --format at parquet")
    out_dir = out_dir or settings.default_data_set()
    if shipments_target:
        customers = int(np.ceil(shipments_target / SHIPMENTS_PER_CUSTOMER))
    try:
        cfg = SimConfig(customers=customers, seed=seed, end=end)
    except ValueError as exc:
        fail(str(exc))
    if shipments_target:
        slices = parts if parts > 1 else max(1, int(np.ceil(customers / 50_000)))
        with progress_bar("simulating in slices") as update:
            s = simulate_in_slices(cfg, slices, Path(out_dir), update)
        out.print(f"simulated {int(s['shipments']):,} shipments, {int(s['scans']):,} scans, {int(s['orders']):,} "
                  f"orders of {int(s['customers']):,} customers in {slices} slices into {out_dir} (Parquet parts; "
                  f"truth in {out_dir}/truth)", highlight=False)
        return
    with progress_bar("simulating") as update:
        result = run(cfg, progress=update)
        update("writing", 1.0)
        write_data_set(result.tables, out_dir, fmt, parts)
        write_truth(result.truth, out_dir)
    s = result.summary
    out.print(
        f"simulated {int(s['shipments']):,} shipments, {int(s['scans']):,} scans, {int(s['orders']):,} orders of "
        f"{int(s['customers']):,} customers (late {s['late_share']:.1%}, at peak {s['late_share_peak']:.1%}) "
        f"into {out_dir} ({fmt}{f', {parts} parts per table' if parts > 1 else ''}; truth in {out_dir}/truth)",
        highlight=False,
    )


@app.command("import-olist")
def import_olist(
    src: Annotated[Path, typer.Argument(help="Folder with the original Olist CSV files.")],
    out_dir: Annotated[Path, typer.Option("--out", callback=_folder_path, help="Folder to write the contract data set to.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Import the Olist Brazilian e-commerce tables into the data contract."""
    from data.olist import IMPORT_DIR, OlistError, import_olist as run, write_import
    from data.write import FORMATS

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    try:
        with status(f"importing {src}"):
            result = run(src)
            write_import(result, out_dir, fmt)
    except OlistError as exc:
        fail(str(exc))
    r = result.report
    out.print(
        f"imported {r['orders_read']:,} Olist orders as {r['shipments_written']:,} shipments into {out_dir} "
        f"({r['orders_without_shipment']:,} orders without a shipment, reasons in {out_dir}/{IMPORT_DIR}/excluded.csv)",
        highlight=False,
    )


@app.command()
def features(
    folder: Annotated[Path, typer.Argument(help="Data set folder in the contract's format.")],
    out_file: Annotated[Path, typer.Option("--out", callback=_table_path, help="Parquet (or .csv) file to write.")],
    moment: Annotated[str, typer.Option(help="at-order, in-transit or after-delivery.")] = "at-order",
    as_of: Annotated[str | None, typer.Option(help="In transit: every open shipment at this UTC moment instead of the training snapshots.")] = None,
    holidays: Annotated[str | None, typer.Option(help="Holiday country code (default: guessed from the regions, US or BR).")] = None,
    cluster: ClusterOption = None,
) -> None:
    """Build point-in-time features: one row per shipment (or per snapshot or delivery)."""
    from features.build import FeatureSnapshot, after_delivery, at_order, in_transit, moments_at

    moments = ("at-order", "in-transit", "after-delivery")
    if moment not in moments:
        fail(f"--moment must be one of {', '.join(moments)}, not {moment!r}")
    when = _timestamp(as_of, "--as-of")
    if cluster:
        return _features_on_cluster(folder, out_file, moment, when, holidays, cluster)
    with progress_bar("features") as update:
        update("reading", 0.05)
        ds = _load(folder)  # no shipment accepted: no data end to build history to, said in one line
        update("history", 0.2)
        snapshot = FeatureSnapshot.fit(ds, country=holidays)
        update("at order", 0.4)
        rows = at_order(ds, snapshot)
        if moment == "in-transit":
            update("in transit", 0.6)
            rows = in_transit(ds, snapshot, rows, moments_at(ds, when) if when is not None else None)
        elif moment == "after-delivery":
            update("after delivery", 0.6)
            rows = after_delivery(ds, snapshot, rows)
        update("writing", 0.9)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(out_file, index=False) if out_file.suffix.lower() == ".csv" else rows.to_parquet(out_file, index=False)
    key = {"at-order": "shipment_id", "in-transit": "shipment_id, as_of", "after-delivery": "order_id, as_of"}[moment]
    out.print(f"wrote {len(rows):,} {moment} feature rows ({rows.shape[1]} columns, keyed by {key}) to {out_file}", highlight=False)


def _features_on_cluster(folder: Path, out_dir: Path, moment: str, when, holidays: str | None, address: str) -> None:
    """``eddy features --cluster``: the data set read and checked by partition, the history
    reduced and the rows built on Dask, written by the workers as Parquet parts."""
    from features import distributed

    _require_parts_folder(out_dir)
    with _cluster(address) as client, status("features on the cluster"):
        data = _read_on(client, folder)
        snapshot = distributed.snapshot_on(client, data.parts, data.locations, country=holidays)
        rows = client.persist(distributed.rows_on(client, data.parts, snapshot, moment, when))
        rows.to_parquet(out_dir, write_index=False, overwrite=True)
        n = int(rows.map_partitions(len).sum().compute())
    out.print(f"wrote {n:,} {moment} feature rows in {rows.npartitions} parts to {out_dir}/", highlight=False)


def _require_parts_folder(out_dir: Path) -> None:
    """With ``--cluster`` the workers write Parquet parts: ``--out`` names their folder."""
    if out_dir.suffix:
        fail(f"with --cluster, --out is a folder for the Parquet parts, not a file ({out_dir.name})")


def _read_on(client, folder: Path):
    """The data set read on the cluster (``data.partitioned``); what was set aside is said."""
    from data.load import ContractError
    from data.partitioned import read_on

    try:
        data = read_on(client, folder)
    except ContractError as exc:
        fail(str(exc))
    _say_what_was_set_aside(data)  # its report, quarantine and warnings are a DataSet's
    return data


@contextmanager
def _cluster(address: str):
    from eddy.cluster import connect

    from contextlib import ExitStack

    with ExitStack() as stack:
        try:  # only reaching the cluster is a --cluster error; the work's own errors pass
            client = stack.enter_context(connect(address, say=lambda line: out.print(line, highlight=False)))
        except (ValueError, OSError, TimeoutError) as exc:
            fail(f"--cluster {address}: {exc}")
        yield client


def _load(folder: Path):
    from data.load import ContractError, load_data_set

    try:
        ds = load_data_set(folder)
    except ContractError as exc:
        fail(str(exc))
    if not len(ds["shipments"]):
        fail(_nothing_accepted(ds, folder))
    _say_what_was_set_aside(ds)
    return ds


def _say_what_was_set_aside(ds) -> None:
    """Rows that fail the contract are never dropped silently: every command that reads a
    data set, in process or on the cluster, writes them with their reasons, as ``eddy
    validate`` does, and says where; ignored columns and files are said too."""
    from data.load import write_report

    if ds.total_quarantined:
        per_table = ", ".join(f"{name} {r.quarantined:,}" for name, r in ds.report.items() if r.quarantined)
        try:
            where = f"with each row's reason in {write_report(ds)}"
        except OSError as exc:  # a read-only export: the rows are still named, and how to get them
            where = f"(not written: {exc.strerror}; `eddy validate {ds.folder} --report-dir D` writes them)"
        console.print(f"[yellow]note:[/] {ds.total_quarantined:,} rows failed the data contract and were set aside "
                      f"({per_table}) {where}", highlight=False)
    for name, r in ds.report.items():
        if r.ignored_columns:
            console.print(f"[yellow]note:[/] {name}: extra columns ignored: {', '.join(r.ignored_columns)}",
                          highlight=False)
    for warning in ds.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _nothing_accepted(ds, folder: Path) -> str:
    r = ds.report["shipments"]
    rules = ", ".join(f"{rule} ({n:,})" for rule, n in sorted(r.by_rule.items(), key=lambda kv: -kv[1])[:3])
    return (f"no shipment in {folder} passed the data contract ({r.read:,} read, {r.quarantined:,} quarantined"
            f"{': ' + rules if rules else ''}); `eddy validate {folder}` writes the rows and reasons")


def _timestamp(value: str | None, option: str):
    import pandas as pd

    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        ts = pd.NaT
    if pd.isna(ts):  # "", "NaT", "nan": pandas reads them as no moment at all
        fail(f"{option} {value!r} is not a timestamp")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _terminate_cleanly() -> None:
    """SIGTERM (a CI timeout, `kill`) ends the command through Python, so an open MLflow
    run is closed as failed instead of staying RUNNING; SIGKILL is caught up with by
    the next training (``reap_abandoned_runs``)."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _configure() -> str:
    """The MLflow store opened, or one line saying why it cannot be."""
    from runtime.registry import RegistryError, configure

    try:
        return configure()
    except RegistryError as exc:
        fail(str(exc))


def _champion():
    """The champion's bundle for a batch command (no online tables: its rows are computed point in time)."""
    from runtime.registry import RegistryError, load_bundle

    try:
        return load_bundle(online=False)
    except RegistryError as exc:
        fail(str(exc))


@app.command()
def train(
    folder: Annotated[Path, typer.Argument(help="Data set folder in the contract's format.")],
    tune: Annotated[int, typer.Option(min=0, help="Optuna trials per model before the final fit (0: defaults).")] = 0,
    horizon_days: Annotated[float, typer.Option(min=7, help="Churn: no new order within this many days.")] = 90.0,
    report_dir: Annotated[Path | None, typer.Option(help="Where to write the report (default reports/<time>).")] = None,
    recency_half_life: Annotated[float | None, typer.Option(min=1, help="Recent training rows weigh more: half-life in days (default: the chosen one).")] = None,
    cluster: ClusterOption = None,
) -> None:
    """Build features, train, calibrate, evaluate; log to MLflow and register a new version."""
    import pandas as pd

    from runtime.registry import reap_abandoned_runs

    ds = None if cluster else _load(folder)
    _configure()
    for run_id in reap_abandoned_runs():
        console.print(f"[yellow]marked run {run_id} KILLED:[/] its training process is gone", highlight=False)
    report_dir = report_dir or settings.REPO_ROOT / "reports" / pd.Timestamp.now(tz="UTC").strftime("%Y%m%d-%H%M%S")
    _terminate_cleanly()
    with contextlib.ExitStack() as engine:
        client = engine.enter_context(_cluster(cluster)) if cluster else None
        data = _read_on(client, folder) if cluster else None
        if data is not None and not data.report["shipments"].accepted:
            fail(_nothing_accepted(data, folder))
        result, registered = _train_and_register(ds, folder, tune, horizon_days, report_dir, recency_half_life,
                                                 client, data)
    m = result.metrics
    for name, why in result.bundle.meta["skipped"].items():
        console.print(f"[yellow]skipped {name}:[/] {why}", highlight=False)
    if registered is None:
        fail(f"nothing trained on {folder}: every model was skipped (above), so no version was registered and the "
             f"champion is as it was; the run and its report are on record ({report_dir}/report.md)")
    headline = ", ".join(f"{label} {m[key]:.3f}" for label, key in (
        ("EDD MAE days", "edd_mae_days"), ("coverage", "edd_interval_coverage"), ("delay AUC", "delay_roc_auc"),
        ("churn AUC", "churn_roc_auc")) if key in m)
    out.print(f"trained model version {registered.version} ({', '.join(registered.aliases)}) on {folder}: {headline}; "
              f"report in {report_dir}/report.md, run {registered.run_id} in {settings.tracking_uri()}", highlight=False)


def _train_and_register(ds, folder: Path, tune: int, horizon_days: float, report_dir: Path,
                        recency_half_life: float | None, client, data):
    """One MLflow run: tuning (if asked), training, the report, the registered version
    (None when every model was skipped). A training that fails leaves the registry as it
    was (the run is marked FAILED)."""
    import mlflow

    from runtime.registry import run_tags
    from training.registry import log_run, register
    from training.report import write_report
    from training.train import train as run

    with mlflow.start_run(run_name=f"train {folder.name}", tags=run_tags()) as active:
        with progress_bar("training") as update:
            result = run(ds, horizon_days=horizon_days, progress=update, **_half_life(recency_half_life),
                         client=client, data=data, tune_trials=tune)
            update("report", 1.0)
            write_report(result, report_dir)
            update("logging to MLflow", 1.0)
            log_run(result, report_dir, result.tuning)
        if all(model is None for model in (result.bundle.edd, result.bundle.delay, result.bundle.churn)):
            # a version with no model would answer nothing; as the first version it would be champion
            mlflow.set_tag("eddy.outcome", "nothing trained: not registered")
            return result, None
    return result, register(active.info.run_id)


def _duration(value: str, option: str):
    import pandas as pd

    try:
        d = pd.Timedelta(f"{value}d" if value.strip().isdigit() else value)
    except ValueError:
        d = pd.NaT
    if pd.isna(d):  # "NaT" and "nan" read as no duration at all
        fail(f"{option} {value!r} is not a duration (e.g. 30d, 8w, 12h)")
    if d <= pd.Timedelta(0):
        fail(f"{option} {value!r} must be longer than zero")
    return d


def _half_life(days: float | None) -> dict:
    """The training option for ``--recency-half-life``: only when given, else the chosen default."""
    return {} if days is None else {"recency_half_life_days": days}


def _cutoffs(value: str, ds, every, horizon, churn_horizon_days: float) -> list:
    """``--cutoffs``: a count (the latest ones whose labels are complete) or dates."""
    from training.backtest import default_cutoffs

    if value.strip().lstrip("+-").isdigit():  # a count ("-3" is not the year -3)
        n = int(value)
        if n < 1:
            fail("--cutoffs must be at least 1")
        return default_cutoffs(ds, n, every, horizon, churn_horizon_days)
    return sorted({_timestamp(v.strip(), "--cutoffs") for v in value.split(",") if v.strip()})  # each date once


@app.command()
def backtest(
    folder: Annotated[Path, typer.Argument(help="Data set folder in the contract's format.")],
    cutoffs: Annotated[str, typer.Option(help="How many cutoffs (the latest whose labels are complete), or dates: 2017-09-01,2017-10-01.")] = "6",
    every: Annotated[str, typer.Option(help="Time between cutoffs when --cutoffs is a count (30d, 4w).")] = "30d",
    horizon: Annotated[str, typer.Option(help="Window judged after each cutoff (60d).")] = "60d",
    horizon_days: Annotated[float, typer.Option(min=7, help="Churn: no new order within this many days.")] = 90.0,
    jobs: Annotated[int, typer.Option(min=1, help="Cutoffs trained at once, each in its own process (memory grows with it).")] = 1,
    recency_half_life: Annotated[float | None, typer.Option(min=1, help="Recent training rows weigh more: half-life in days (default: the chosen one).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", callback=_table_path, help="Every figure as one long table (.csv or .parquet).")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="Where to write the report (default reports/backtest-<time>).")] = None,
) -> None:
    """Rolling-origin evaluation: at each cutoff train on what was known then and judge the next window."""
    import sys

    import mlflow
    import pandas as pd

    from runtime.registry import reap_abandoned_runs, run_tags
    from training.backtest import backtest as run, long_table, write_long
    from features.history import data_end
    from training.registry import log_backtest
    from training.report import write_backtest_report

    if out_file is not None and not out_file.suffix:  # any other suffix was refused by _table_path
        fail(f"--out {out_file}: the file name must end in {' or '.join(TABLE_SUFFIXES)}")
    every_d, horizon_d = _duration(every, "--every"), _duration(horizon, "--horizon")
    ds = _load(folder)
    cuts = _cutoffs(cutoffs, ds, every_d, horizon_d, horizon_days)
    first = ds["shipments"].ordered_at.min()
    if not cuts or any(c <= first for c in cuts):
        fail(f"every cutoff must fall after the first order ({first:%Y-%m-%d}); got "
             f"{', '.join(f'{c:%Y-%m-%d}' for c in cuts) or 'none'} (fewer --cutoffs, a shorter --every or --horizon?)")
    end = data_end(ds["shipments"], ds.get("scans"))
    if any(c >= end for c in cuts):
        fail(f"every cutoff must fall before the data's last fact ({end:%Y-%m-%d}): after it there is nothing to "
             f"judge; got {', '.join(f'{c:%Y-%m-%d}' for c in cuts if c >= end)}")
    report_dir = report_dir or settings.REPO_ROOT / "reports" / f"backtest-{pd.Timestamp.now(tz='UTC'):%Y%m%d-%H%M%S}"
    _configure()
    for run_id in reap_abandoned_runs():
        console.print(f"[yellow]marked run {run_id} KILLED:[/] its process is gone", highlight=False)
    _terminate_cleanly()
    console.print(f"backtest of {folder}: {len(cuts)} cutoffs ({', '.join(f'{c:%Y-%m-%d}' for c in cuts)}), "
                  f"windows of {horizon_d.days} days, {jobs} at a time", highlight=False)

    def done(r) -> None:
        f = r.figures.set_index(["moment", "model", "metric"]).value
        pick = lambda *k: f"{f[k]:.3f}" if k in f.index else "-"  # noqa: E731
        console.print(f"cutoff {r.cutoff:%Y-%m-%d}: trained on {r.info['train_shipments']:,} shipments in "
                      f"{r.info['train_seconds']} s; EDD MAE {pick('at_order', 'eddy', 'edd_mae_days')} days "
                      f"(lane median {pick('at_order', 'lane_median', 'edd_mae_days')}), coverage "
                      f"{pick('at_order', 'eddy', 'coverage_80')}, delay AUC {pick('at_order', 'eddy', 'delay_auc')}, "
                      f"churn AUC {pick('after_delivery', 'eddy', 'churn_auc')}", highlight=False)

    command = "eddy backtest " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else f"eddy backtest {folder}"
    with mlflow.start_run(run_name=f"backtest {folder.name}", tags={**run_tags(), "eddy.kind": "backtest"}) as active:
        results = run(ds, cuts, horizon_d, horizon_days, jobs=jobs, done=done, **_half_life(recency_half_life))
        long = long_table(results)
        write_backtest_report(long, [r.info for r in results], command, report_dir)
        if out_file is not None:
            write_long(long, out_file)
        log_backtest(results, long, report_dir, {"data": str(folder), "cutoffs": ",".join(f"{c:%Y-%m-%d}" for c in cuts),
                                                 "horizon": horizon, "churn_horizon_days": horizon_days, "jobs": jobs,
                                                 "recency_half_life_days": recency_half_life},
                     run_tags())
    if not len(long):  # every cutoff's models skipped: an empty table is no backtest
        why = "; ".join(f"{name}: {reason}" for name, reason in results[-1].info["skipped"].items())
        fail(f"backtest of {folder}: no figure at any of {len(results)} cutoffs, since no model could be trained on "
             f"what was known then (at {results[-1].cutoff:%Y-%m-%d}: {why}); the run and its report are on record "
             f"({report_dir}/backtest.md)")
    out.print(f"backtest of {folder} at {len(results)} cutoffs: {len(long):,} figures; report in "
              f"{report_dir}/backtest.md{f', table in {out_file}' if out_file else ''}, run {active.info.run_id} "
              f"in {settings.tracking_uri()}", highlight=False)


@app.command()
def promote(
    force: Annotated[bool, typer.Option(help="Promote even if the challenger is worse (logged).")] = False,
    data: Annotated[Path | None, typer.Option(help="Data set for the comparison (default: the challenger's training data; with --live, the latest export, required).")] = None,
    live: Annotated[bool, typer.Option(help="Compare on the live requests both answered (the challenger in shadow) whose outcomes --data knows.")] = False,
) -> None:
    """Make the challenger the champion if it is measurably better: better on one model's primary metric, worse on none."""
    import mlflow
    from mlflow import MlflowClient

    from runtime.registry import CHALLENGER, CHAMPION, MODEL_NAME, RegistryError, load_bundle
    from training.promote import held_out_metrics
    from training.registry import compare, promotable, verdict_word

    if live and data is None:
        fail("--live judges the logged answers against what happened: give the latest export with --data DIR")
    _configure()
    try:
        challenger, chall_version = load_bundle(CHALLENGER)
        champ_version = MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION).version
    except RegistryError as exc:
        fail(str(exc))
    if champ_version == chall_version:
        out.print(f"version {chall_version} is already the champion; nothing to do", highlight=False)
        return
    try:
        champion, unloadable = load_bundle(CHAMPION)[0], None
    except (ValueError, OSError, KeyError) as exc:  # made by an older Eddy: the service cannot load it either
        if not force:
            fail(f"the champion (version {champ_version}) cannot be loaded by this Eddy, so the two cannot be "
                 f"compared: {exc}. Promote the challenger with --force.")
        champion, unloadable = None, str(exc)
    verdicts, data_used, evidence = {}, None, None
    if live:
        ds = _load(data)
        data_used = str(ds.folder)
        with status("joining the champion's and the shadow challenger's logged answers to outcomes"):
            figures, evidence = _live_figures(ds, champ_version, chall_version)
        verdicts = compare(figures["champion"], figures["challenger"])
        if not verdicts:
            fail(f"no live request answered by both version {champ_version} (champion) and version {chall_version} "
                 f"(challenger, in shadow) has a known outcome yet: run the service with EDDY_SHADOW=challenger")
        out.print("live requests compared: " + ", ".join(f"{k} {v:,}" for k, v in evidence.items()), highlight=False)
    elif champion is not None:
        ds = _load(data or Path(challenger.meta["data"]))
        data_used = str(ds.folder)
        with status("scoring champion and challenger on the latest held-out window"):
            figures = held_out_metrics({"champion": champion, "challenger": challenger}, ds,
                                       challenger.meta["horizon_days"])
        verdicts = compare(figures["champion"], figures["challenger"])
    for model, v in verdicts.items():
        out.print(f"{model:<6} {v['metric']}: champion {_four_places(v['champion'])}, challenger {_four_places(v['challenger'])} -> "
                  f"{verdict_word(v)}", highlight=False)
    ok = champion is not None and promotable(verdicts)
    with mlflow.start_run(run_name=f"promote {chall_version} over {champ_version}"):
        mlflow.log_dict({"verdicts": verdicts, "forced": force and not ok, "data": data_used,
                         "champion_unloadable": unloadable, "live": live, "live_requests": evidence}, "promotion.json")
        mlflow.log_params({"champion": champ_version, "challenger": chall_version, "forced": force and not ok,
                           "promoted": ok or force, "live": live})
    if not ok and not force:
        worse = [m for m, v in verdicts.items() if not v["not_worse"]]
        why = f"worse on {', '.join(worse)}" if worse else "not measurably better on any model (level within the tolerances)"
        out.print(f"kept version {champ_version} as champion: the challenger is {why} (use --force to override)",
                  highlight=False)
        raise typer.Exit(code=1)
    MlflowClient().set_registered_model_alias(MODEL_NAME, CHAMPION, chall_version)
    why = f" (version {champ_version} cannot be loaded)" if unloadable else ""
    out.print(f"promoted version {chall_version} to champion (was {champ_version}){' by --force' if not ok else ''}{why}",
              highlight=False)


def _four_places(v: float | None) -> str:
    return "none" if v is None else f"{v:.4f}"


@app.command()
def predict(
    folder: Annotated[Path, typer.Argument(help="Data set folder (shipments may lack shipped_at and delivered_at).")],
    out_file: Annotated[Path, typer.Option("--out", callback=_table_path, help="Parquet (or .csv) file to write.")],
    as_of: Annotated[str | None, typer.Option(help="Predict every shipment at this UTC moment with the scans seen by then (default: each at its order time).")] = None,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.995, help="Confidence of the promise date.")] = 0.95,
    reasons: Annotated[bool, typer.Option(help="Add the top three reasons (TreeSHAP: in bulk about 0.15 ms a shipment, against 0.02 ms without).")] = True,
    cluster: ClusterOption = None,
) -> None:
    """Predict ETA quantiles, a promise date, late probability and reasons with the champion."""
    from runtime.batch import eta_log_entries, predict_data_set
    from runtime.store import write_table

    when = _timestamp(as_of, "--as-of")
    if cluster:
        return _predict_on_cluster(folder, out_file, when, confidence, reasons, cluster)
    ds = _load(folder)
    if when is not None:
        _note_moment_outside_the_data(ds, when)
    bundle, version = _champion()
    with status(f"predicting with model version {version}"):
        try:
            table = predict_data_set(bundle, ds, when, confidence, explain=reasons)
        except RuntimeError as exc:
            fail(str(exc))
    write_table(table, out_file)
    _log_answers(lambda: eta_log_entries(table, ds["shipments"], str(version), confidence), bundle, version)
    out.print(f"predicted {len(table):,} shipments with model version {version} to {out_file}"
              f"{_lost_note(int(table.likely_lost.sum()))}", highlight=False)


#: an --as-of this many days past the data's last fact is noted: the export is stale for it
STALE_DAYS = 7


def _note_moment_outside_the_data(ds, when) -> None:
    """A moment before the data's first order finds nothing open; one long after its last
    fact finds open every parcel the export has heard nothing of since: both are said."""
    import pandas as pd

    from features.history import data_end

    first, end = ds["shipments"].ordered_at.min(), data_end(ds["shipments"], ds.get("scans"))
    if when < first:
        console.print(f"note: --as-of {when:%Y-%m-%d %H:%M} UTC is before the data's first order "
                      f"({first:%Y-%m-%d}): no parcel was open then", highlight=False)
    elif when > end + pd.Timedelta(days=STALE_DAYS):
        console.print(f"note: --as-of is {(when - end).days:,} days after the data's last fact ({end:%Y-%m-%d %H:%M} "
                      "UTC): a parcel is open then because the data has heard nothing of it since", highlight=False)


def _predict_on_cluster(folder: Path, out_dir: Path, when, confidence: float, reasons: bool, address: str) -> None:
    """``eddy predict --cluster``: partitions read and scored on the workers, written as
    parts (``part-00000.parquet``, ...) and logged one partition at a time."""
    from runtime.batch import eta_log_entries
    from runtime.distributed import predict_on
    from runtime.store import write_table

    _require_parts_folder(out_dir)
    bundle, version = _champion()
    for old in out_dir.glob("part-*.parquet"):  # a previous run's parts would mix in
        old.unlink()
    n = lost = 0
    with _cluster(address) as client, status(f"predicting with model version {version} on the cluster"):
        for k, table, shipments in predict_on(client, _read_on(client, folder).parts, bundle, when, confidence, reasons):
            if not len(table):
                continue  # a partition with no open shipment writes no part
            write_table(table, out_dir / f"part-{k:05d}.parquet")
            _log_answers(lambda: eta_log_entries(table, shipments, str(version), confidence), bundle, version)
            n += len(table)
            lost += int(table.likely_lost.sum())
    out.print(f"predicted {n:,} shipments with model version {version} on the cluster to {out_dir}/{_lost_note(lost)}",
              highlight=False)


def _lost_note(lost: int) -> str:
    """What a batch of answers says of parcels likely lost, which get no dates (column likely_lost)."""
    return f"; {lost:,} likely lost, without dates (column likely_lost)" if lost else ""


@app.command("score-customers")
def score_customers(
    folder: Annotated[Path, typer.Argument(help="Data set folder in the contract's format.")],
    out_file: Annotated[Path | None, typer.Option("--out", callback=_table_path, help="Parquet (or .csv) file (with --cluster, a folder for Parquet parts); without it the scoring is stored for the review page.")] = None,
    as_of: Annotated[str | None, typer.Option(help="Score as of this UTC moment (default: the end of the data).")] = None,
    window_days: Annotated[float, typer.Option(min=1, help="Customers whose latest delivery (or unmet promise) is this recent.")] = 60.0,
    cluster: ClusterOption = None,
) -> None:
    """Churn risk for every customer whose latest delivery falls in the window before the moment."""
    from runtime.batch import churn_log_entries, score_data_set
    from runtime.store import write_scoring, write_table

    when = _timestamp(as_of, "--as-of")
    if cluster:
        return _score_on_cluster(folder, out_file, when, window_days, cluster)
    ds = _load(folder)
    bundle, version = _champion()
    with status(f"scoring customers with model version {version}"):
        try:
            scoring = score_data_set(bundle, ds, when, window_days)
        except RuntimeError as exc:
            fail(str(exc))
    if not len(scoring.table) and out_file is None:
        _nothing_scored(when, window_days)
    target = write_table(scoring.table, out_file) if out_file else write_scoring(scoring, settings.scores_dir())
    _log_answers(lambda: churn_log_entries(scoring.table, ds["shipments"], str(version)), bundle, version)
    out.print(f"scored {len(scoring.table):,} customers with model version {version} to {target}", highlight=False)


def _nothing_scored(when, window_days: float) -> None:
    """An empty scoring would blank the review page's list: refused, saying why."""
    moment = "the end of the data" if when is None else f"{when:%Y-%m-%d %H:%M} UTC"
    fail(f"no customer's latest delivery falls in the {window_days:g} days before {moment}: nothing scored, "
         "and the review page keeps the list it has (try an earlier --as-of or a longer --window-days)")


#: rows per part of ``score-customers --cluster --out``, riskiest customers in the first
SCORED_PER_PART = 250_000


def _score_on_cluster(folder: Path, out_dir: Path | None, when, window_days: float, address: str) -> None:
    """``eddy score-customers --cluster``: each partition scores its own customers on the
    workers; the table comes back riskiest first, stored for the review page or written
    as Parquet parts, and logged."""
    from runtime.batch import churn_log_entries
    from runtime.distributed import score_on
    from runtime.store import write_scoring, write_table

    if out_dir is not None:
        _require_parts_folder(out_dir)
    bundle, version = _champion()
    with _cluster(address) as client, status(f"scoring customers with model version {version} on the cluster"):
        data = _read_on(client, folder)
        try:
            scoring, shipment_of = score_on(client, data.parts, bundle, when, window_days)
        except RuntimeError as exc:
            fail(str(exc))
    if out_dir is None:
        if not len(scoring.table):
            _nothing_scored(when, window_days)
        target = write_scoring(scoring, settings.scores_dir())
    else:
        for old in out_dir.glob("part-*.parquet"):  # a previous run's parts would mix in
            old.unlink()
        for k, start in enumerate(range(0, max(len(scoring.table), 1), SCORED_PER_PART)):
            write_table(scoring.table.iloc[start:start + SCORED_PER_PART], out_dir / f"part-{k:05d}.parquet")
        target = f"{out_dir}/"
    _log_answers(lambda: churn_log_entries(scoring.table, shipment_of, str(version)), bundle, version)
    out.print(f"scored {len(scoring.table):,} customers with model version {version} on the cluster to {target}",
              highlight=False)


def _live_figures(ds, champion_version, challenger_version):
    from monitoring.live import judged_answers, paired_figures, read_predictions, read_versions
    from runtime.predlog import engine_for, masked, short_error

    try:
        engine = engine_for()
        logged, versions = read_predictions(engine), read_versions(engine)
    except Exception as exc:  # noqa: BLE001
        fail(f"cannot read the prediction log at {masked(settings.database_url())}: {short_error(exc)}")
    eta, churn = judged_answers(logged, ds, versions)
    return paired_figures(eta, churn, {"champion": str(champion_version), "challenger": str(challenger_version)})


def _log_answers(entries, bundle, version) -> None:
    """Record a batch command's answers in the prediction log; a database that cannot take
    them is reported, and the command's own output stands."""
    from runtime.predlog import open_log

    predlog = open_log()
    if not settings.prediction_log_enabled():
        return
    predlog.note_model(str(version), bundle.meta)
    rows = entries()
    kept = predlog.put_all(rows, timeout=120)
    if not predlog.close(timeout=120) or not kept or predlog.dropped:
        console.print(f"[yellow]warning:[/] the prediction log kept {predlog.written:,} of {len(rows):,} answers "
                      f"({predlog.status()['last_error'] or 'queue full'})", highlight=False)


@app.command()
def monitor(
    folder: Annotated[Path, typer.Argument(help="The retailer's latest export, in the contract's format.")],
    since: Annotated[str | None, typer.Option(help="Judge answers given from this UTC moment on (default: all logged).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", callback=_table_path, help="Also write the long table (CSV or Parquet).")] = None,
    drift: Annotated[bool, typer.Option(help="Rebuild a sample of each week's features and measure drift.")] = True,
) -> None:
    """Live figures: logged answers joined to what happened, by week, carrier and lane; drift; retrain advice."""
    import time

    import mlflow

    from monitoring.monitor import run_monitor
    from runtime.monitor_store import write_run
    from runtime.predlog import engine_for, masked, short_error
    from runtime.registry import load_version
    from runtime.store import write_table

    ds = _load(folder)
    when = _timestamp(since, "--since")
    since_us = None if when is None else int(when.value // 1000)
    started = time.perf_counter()
    try:
        engine = engine_for()
    except Exception as exc:  # noqa: BLE001 - a database that cannot be reached is said plainly
        fail(f"cannot open the prediction log at {masked(settings.database_url())}: {short_error(exc)}")
    _configure()
    with status("joining logged answers to outcomes"):
        result = run_monitor(ds, engine, since_us, load=_cached(load_version) if drift else None)
    write_run(engine, result.run_id, result.table, result.advice, str(folder), since_us, result.predictions)
    if out_file:
        write_table(result.table, out_file)
    with mlflow.start_run(run_name=f"monitor {result.run_id[:15]}"):
        mlflow.set_tags({"eddy.kind": "monitor", "eddy.data": str(folder)})
        mlflow.log_params({"since": since or "all", "predictions": result.predictions})
        mlflow.log_metrics(_monitor_headline(result.table))
        mlflow.log_dict({"advice": result.advice, "notes": result.notes}, "advice.json")
        mlflow.log_text(result.table.to_csv(index=False), "monitor.csv")
    _print_monitor(result, time.perf_counter() - started, out_file)


def _cached(load):
    seen = {}

    def get(version):
        if version not in seen:
            seen[version] = load(version)
        return seen[version]
    return get


def _monitor_headline(table) -> dict[str, float]:
    from runtime.monitor_store import headline

    return {f"{alias}_{k}": v for alias, figs in headline(table).items() for k, v in figs.items()}


#: the figures `eddy monitor` prints per week (all of them are in --out and on /review/monitor)
MONITOR_HEADLINE = ("edd_mae_days", "coverage_80", "promise95_on_time", "delay_auc", "delay_brier", "churn_auc",
                    "likely_lost_delivered")


def _print_monitor(result, seconds: float, out_file) -> None:
    t = result.table
    totals = t[(t.carrier == "") & (t.lane == "") & t.metric.isin(MONITOR_HEADLINE) & t.value.notna()]
    if len(totals):
        wide = totals.pivot_table(index=["week", "model", "alias"], columns="metric", values="value", aggfunc="first")
        out.print(wide[[m for m in MONITOR_HEADLINE if m in wide]].round(3).tail(12).to_string(), highlight=False)
    else:  # answers for parcels still on their way, or for shipments the export does not hold
        out.print(f"no headline figure yet: the export knows no outcome of the {result.predictions:,} logged answers "
                  f"to judge {', '.join(MONITOR_HEADLINE)} by", highlight=False)
    for a in result.advice:
        out.print(a["text"], highlight=False)
    if not result.advice:
        out.print("no retrain advice: every rule holds", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    out.print(f"judged {result.predictions:,} logged answers in {seconds:.1f} s (run {result.run_id})"
              + (f"; table in {out_file}" if out_file else ""), highlight=False)


def _require_free_port(host: str, port: int) -> None:
    """A port already taken is one line, not BentoML's traceback from deep in its sockets."""
    import errno
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
            probe.bind((host, port))
    except OSError as exc:
        hint = "another `eddy serve`? choose a port with --port" if exc.errno == errno.EADDRINUSE else \
            "is --host an address of this machine?"
        fail(f"cannot listen on {host}:{port}: {exc.strerror} ({hint})")


@app.command()
def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 3000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the champion over HTTP (BentoML): /eta, /eta/batch, /churn, /models, /readyz, /metrics."""
    import os
    import sys

    bentoml = Path(sys.executable).parent / "bentoml"
    _require_free_port(host, port)
    out.print(f"serving the champion on http://{host}:{port} (API docs at /docs); Ctrl-C stops", highlight=False)
    sys.stdout.flush()
    env = {**os.environ, "PYTHONPATH": str(settings.REPO_ROOT)}
    os.chdir(settings.REPO_ROOT)
    # BentoML takes this process's place: a SIGTERM sent to `eddy serve` (kill, systemd,
    # a supervisor) reaches the server itself. As a child it lived on after eddy was
    # killed, still holding the port and serving the old code.
    os.execve(str(bentoml), [str(bentoml), "serve", "serving.service:Eddy", "--host", host, "--port", str(port)], env)


@app.command()
def bento(
    bundle: Annotated[Path | None, typer.Option(help="A bundle folder to package instead of the champion.")] = None,
    version: Annotated[str | None, typer.Option(help="Version label for --bundle (default: its folder name).")] = None,
) -> None:
    """Build a Bento carrying the champion; serve it with `bentoml serve eddy-service:latest`."""
    import shutil

    from runtime.registry import RegistryError, download_bundle
    from serving.bento import build_bento

    downloaded = None
    if bundle is None:
        try:
            with status("fetching the champion"):
                bundle, version = download_bundle()
            downloaded = bundle.parent
        except RegistryError as exc:
            fail(str(exc))
    elif not (bundle / "meta.json").exists():
        fail(f"{bundle} is not a model bundle (no meta.json)")
    try:
        with status("building the Bento"):
            tag = build_bento(bundle, version or bundle.name)
    except RuntimeError as exc:
        fail(str(exc))
    finally:
        if downloaded is not None:  # the Bento holds its own copy
            shutil.rmtree(downloaded, ignore_errors=True)
    out.print(f"built Bento {tag} with model version {version or bundle.name}; "
              f"serve it with: bentoml serve {tag}", highlight=False)


@app.command()
def validate(
    folder: Annotated[Path, typer.Argument(help="Data set folder in the contract's format.")],
    report_dir: Annotated[Path | None, typer.Option(help="Where to write the report and quarantined rows (default FOLDER/_quarantine).")] = None,
) -> None:
    """Check a data set against the data contract; set bad rows aside with their reasons."""
    from data.load import ContractError, load_data_set, write_report

    try:
        with status(f"reading {folder}"):
            ds = load_data_set(folder)
    except ContractError as exc:
        fail(str(exc))
    target = write_report(ds, report_dir)
    for name, r in ds.report.items():
        line = f"{name:<10} read {r.read:>10,}  accepted {r.accepted:>10,}  quarantined {r.quarantined:>8,}"
        out.print(line, highlight=False)
        for rule, n in sorted(r.by_rule.items(), key=lambda kv: -kv[1]):
            out.print(f"{'':<12}{n:>8,}  {rule}", highlight=False)
        if r.ignored_columns:
            out.print(f"{'':<12}ignored extra columns: {', '.join(r.ignored_columns)}", highlight=False)
    for w in ds.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    out.print(f"validated {folder}: {ds.total_quarantined:,} rows quarantined; report in {target}/report.json", highlight=False)
    if not len(ds["shipments"]):
        fail(_nothing_accepted(ds, folder))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
