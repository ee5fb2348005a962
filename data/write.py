"""Write a data set in the contract's format: one Parquet or CSV file per table, or a
folder of Parquet parts per table (contract 1.1) for tables too large for one file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
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
    if (folder / name).is_dir():
        shutil.rmtree(folder / name)
    if fmt == "parquet":
        return atomic_write(target, lambda p: pq.write_table(table, p, compression="zstd"))
    # Dictionary columns are a storage detail; CSV wants plain text.
    plain = table.cast(pa.schema([_plain(f) for f in table.schema]))
    return atomic_write(target, lambda p: pacsv.write_csv(plain, p))


def _plain(f: pa.Field) -> pa.Field:
    return pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f


def write_parts(df: pd.DataFrame, folder: Path, name: str, parts: int) -> Path:
    """Write one contract table as ``folder/name/part-00000.parquet``, ... (``parts`` slices
    of its rows); a single file of the same name is removed, as the reader refuses both."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    for old in [*target.glob("part-*.parquet"), folder / f"{name}.parquet", folder / f"{name}.csv"]:
        old.unlink(missing_ok=True)
    bounds = np.linspace(0, len(df), parts + 1).astype(int)
    for i in range(parts):
        write_part(df.iloc[bounds[i]:bounds[i + 1]], target, name, i)
    return target


def write_part(df: pd.DataFrame, target: Path, name: str, number: int) -> Path:
    """Part ``number`` of a table kept as a folder of parts (one slice of a data set
    written at a time); the contract's columns, in its order."""
    table = pa.Table.from_pandas(df[TABLES[name].names], preserve_index=False)
    return atomic_write(target / f"part-{number:05d}.parquet", lambda p: pq.write_table(table, p, compression="zstd"))


def write_data_set(tables: dict[str, pd.DataFrame], folder: str | Path, fmt: str = "parquet",
                   parts: int = 1) -> list[Path]:
    """Every contract table in ``tables``; with ``parts`` > 1, each as a folder of parts."""
    folder = Path(folder)
    if parts > 1 and fmt != "parquet":
        raise ValueError("parts are Parquet files: use format parquet with parts")
    return [write_parts(df, folder, name, parts) if parts > 1 else write_table(df, folder, name, fmt)
            for name, df in tables.items() if name in TABLES]
