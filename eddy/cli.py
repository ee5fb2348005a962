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
