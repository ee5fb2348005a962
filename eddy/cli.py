"""The ``eddy`` command: one sub-command per lifecycle stage.

Each command is a thin shell around a library function: it parses options, shows
progress, prints a one-line summary of what it wrote where, and turns the library's
expected errors into one clear line and a non-zero exit (never a traceback).
"""

from __future__ import annotations

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
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the data set to.")] = None,
    customers: Annotated[int, typer.Option(min=10, help="How many customers to simulate.")] = settings.DEFAULT_DEMO_CUSTOMERS,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data set.")] = settings.DEFAULT_SEED,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    end: Annotated[str, typer.Option(help="Last moment of the simulated history (UTC).")] = "2026-02-28T23:59:59",
) -> None:
    """Simulate a retailer's deliveries, scans, orders and feedback, with exact truth."""
    from data.simulate import SimConfig, simulate as run, write_truth
    from data.write import FORMATS, write_data_set

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out_dir = out_dir or settings.default_data_set()
    try:
        cfg = SimConfig(customers=customers, seed=seed, end=end)
    except ValueError as exc:
        fail(str(exc))
    with progress_bar("simulating") as update:
        result = run(cfg, progress=update)
        update("writing", 1.0)
        write_data_set(result.tables, out_dir, fmt)
        write_truth(result.truth, out_dir)
    s = result.summary
    out.print(
        f"simulated {int(s['shipments']):,} shipments, {int(s['scans']):,} scans, {int(s['orders']):,} orders of "
        f"{int(s['customers']):,} customers (late {s['late_share']:.1%}, at peak {s['late_share_peak']:.1%}) "
        f"into {out_dir} ({fmt}; truth in {out_dir}/truth)",
        highlight=False,
    )


@app.command("import-olist")
def import_olist(
    src: Annotated[Path, typer.Argument(help="Folder with the original Olist CSV files.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the contract data set to.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Import the Olist Brazilian e-commerce tables into the data contract."""
    from data.olist import OlistError, import_olist as run, write_import
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
        f"({r['orders_without_shipment']:,} orders without a shipment, reasons in {out_dir}/import_excluded.csv)",
        highlight=False,
    )


@app.command()
def features(
    folder: Annotated[Path, typer.Argument(help="Data set folder in the contract's format.")],
    out_file: Annotated[Path, typer.Option("--out", help="Parquet (or .csv) file to write.")],
    moment: Annotated[str, typer.Option(help="at-order, in-transit or after-delivery.")] = "at-order",
    as_of: Annotated[str | None, typer.Option(help="In transit: every open shipment at this UTC moment instead of the training snapshots.")] = None,
    holidays: Annotated[str | None, typer.Option(help="Holiday country code (default: guessed from the regions, US or BR).")] = None,
) -> None:
    """Build point-in-time features: one row per shipment (or per snapshot or delivery)."""
    import pandas as pd

    from data.load import ContractError, load_data_set
    from features.build import FeatureSnapshot, after_delivery, at_order, in_transit, moments_at

    moments = ("at-order", "in-transit", "after-delivery")
    if moment not in moments:
        fail(f"--moment must be one of {', '.join(moments)}, not {moment!r}")
    try:
        when = pd.Timestamp(as_of, tz="UTC") if as_of and pd.Timestamp(as_of).tzinfo is None else (pd.Timestamp(as_of) if as_of else None)
    except ValueError:
        fail(f"--as-of {as_of!r} is not a timestamp")
    try:
        with progress_bar("features") as update:
            update("reading", 0.05)
            ds = load_data_set(folder)
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
            rows.to_csv(out_file, index=False) if out_file.suffix == ".csv" else rows.to_parquet(out_file, index=False)
    except ContractError as exc:
        fail(str(exc))
    key = {"at-order": "shipment_id", "in-transit": "shipment_id, as_of", "after-delivery": "order_id, as_of"}[moment]
    out.print(f"wrote {len(rows):,} {moment} feature rows ({rows.shape[1]} columns, keyed by {key}) to {out_file}", highlight=False)


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


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
