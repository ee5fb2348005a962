"""Write a data set in the contract's format (one Parquet or CSV file per table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from eddy.files import atomic_write

from data.contract import TABLES

FORMATS = ("parquet", "csv")


def write_table(df: pd.DataFrame, folder: Path, name: str, fmt: str = "parquet") -> Path:
    """Write one contract table with exactly the contract's columns, in its order."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    spec = TABLES[name]
    table = pa.Table.from_pandas(df[spec.names], preserve_index=False)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.{fmt}"
    other = folder / f"{name}.{'csv' if fmt == 'parquet' else 'parquet'}"
    if other.exists():
        other.unlink()  # the reader refuses a folder holding both
    if fmt == "parquet":
        return atomic_write(target, lambda p: pq.write_table(table, p, compression="zstd"))
    # Dictionary columns are a storage detail; CSV wants plain text.
    plain = table.cast(pa.schema([_plain(f) for f in table.schema]))
    return atomic_write(target, lambda p: pacsv.write_csv(plain, p))


def _plain(f: pa.Field) -> pa.Field:
    return pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f


def write_data_set(tables: dict[str, pd.DataFrame], folder: str | Path, fmt: str = "parquet") -> list[Path]:
    folder = Path(folder)
    return [write_table(df, folder, name, fmt) for name, df in tables.items() if name in TABLES]
