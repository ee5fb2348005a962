"""Read a data set in the contract's format, normalise its types and check every rule.

``load_data_set(folder)`` returns a :class:`DataSet`: the accepted rows of each table
with normalised types (string identifiers, tz-aware UTC timestamps in microseconds, a
bare ``promised_at`` date meaning 23:59:59 that day, floats and nullable integers), the
rejected rows with their reasons, and a report whose counts add up
(read = accepted + quarantined) for every table.

Problems that make a whole table unusable (missing required table or column, an
unreadable file, an empty folder) raise :class:`ContractError` with one clear line. A
CSV line with the wrong number of fields or a cell that is not UTF-8 is one bad row,
quarantined with its line number like any other.

Why hand-written masks rather than a validation library: most rules here are
cross-table (a scan's shipment, a scan before its order, feedback for an unknown
order) and each rejected row must carry its row number, column and rule in our own
report format; vectorised boolean masks do that directly and check ten million scans
in seconds.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data.contract import EVENTS, LOCATION_KINDS, TABLES, TRUTH_DIR, Table
from eddy.files import atomic_folder
from eddy.settings import TIMESTAMP_DTYPE

QUARANTINE_DIR = "_quarantine"
_BARE_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")


class ContractError(Exception):
    """A data set cannot be read at all; the message names the file and the problem."""


@dataclass
class TableReport:
    file: str
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)


@dataclass
class DataSet:
    """The accepted rows of each present table, the rejected ones, and the report."""

    folder: Path
    tables: dict[str, pd.DataFrame]
    quarantine: dict[str, pd.DataFrame]
    report: dict[str, TableReport]
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def get(self, name: str) -> pd.DataFrame | None:
        return self.tables.get(name)

    @property
    def total_quarantined(self) -> int:
        return sum(r.quarantined for r in self.report.values())


# --------------------------------------------------------------------------- reading


def table_files(folder: Path) -> dict[str, Path]:
    """The contract tables present in ``folder``, by name."""
    if not folder.exists():
        raise ContractError(f"{folder}: folder does not exist")
    if not folder.is_dir():
        raise ContractError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for name in TABLES:
        candidates = [folder / f"{name}.{ext}" for ext in ("parquet", "csv") if (folder / f"{name}.{ext}").exists()]
        if (folder / name).is_dir():
            candidates.append(folder / name)
        if len(candidates) > 1:
            raise ContractError(f"{folder}: {' and '.join(c.name for c in candidates)} both hold {name}; keep one")
        if candidates:
            found[name] = candidates[0]
    if not found:
        raise ContractError(f"{folder}: no contract tables found (expected shipments.parquet or shipments.csv)")
    return found


@dataclass
class Raw:
    """A table file as read: its cells, the file line of each row (CSV) and what could
    not be read as a row: cells that are not UTF-8 (by column, a mask) and lines with
    the wrong number of fields (line, text, fields expected, fields found)."""

    frame: pd.DataFrame
    lines: np.ndarray | None = None
    parts: np.ndarray | None = None  # a folder of parts: each row's part file (lines: its row there)
    undecodable: dict[str, np.ndarray] = field(default_factory=dict)
    malformed: list[tuple[int, str, int, int]] = field(default_factory=list)


def _read_raw(path: Path) -> Raw:
    """Read a table file as-is: every CSV cell a string (so "00123" stays "00123")."""
    try:
        if path.is_dir():
            return _read_parts(path)
        if path.suffix != ".csv":
            return Raw(pq.read_table(path).to_pandas(types_mapper=_arrow_types_for_pandas))
        if path.stat().st_size == 0:
            raise ContractError(f"{path}: file is empty (expected a header row)")
        return _read_csv(path)
    except ContractError:
        raise
    except UNREADABLE as exc:
        raise unreadable(path, exc) from None


#: what reading a file that is not what its name says raises
UNREADABLE = (pa.ArrowInvalid, OSError, UnicodeDecodeError)


def unreadable(path: Path, exc: Exception) -> ContractError:
    """The one-line error for a file that cannot be read, with the reader's first line."""
    return ContractError(unreadable_text(path, exc))


def unreadable_text(path: Path, exc: Exception) -> str:
    """"FILE: unreadable (the reader's first line)", for every reader of files (the
    contract's, the Olist import's)."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{path}: unreadable ({first_line})"


def part_files(folder: Path) -> list[Path]:
    """A table's Parquet parts, in name order (contract 1.1: ``scans/part-00000.parquet``, ...)."""
    parts = sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))
    if not parts:
        raise ContractError(f"{folder}: a table folder must hold Parquet parts (part-00000.parquet, ...); none found")
    return parts


def _read_parts(folder: Path) -> Raw:
    """A folder of parts as one table; each row remembers its part and its row there."""
    files = part_files(folder)
    frames, names, rows = [], [], []
    for part in files:
        frame = pq.read_table(part).to_pandas(types_mapper=_arrow_types_for_pandas)
        frames.append(frame)
        names.append(np.full(len(frame), part.name, dtype=object))
        rows.append(np.arange(len(frame), dtype=np.int64))
    odd = next((p for p, f in zip(files, frames) if set(f.columns) != set(frames[0].columns)), None)
    if odd is not None:
        raise ContractError(f"{odd}: its columns differ from those of {files[0].name} (every part has the same columns)")
    return Raw(pd.concat(frames, ignore_index=True), lines=np.concatenate(rows), parts=np.concatenate(names))


def _read_csv(path: Path) -> Raw:
    """Every column as text; parsing happens in one place (``_normalise``) so a bad cell
    becomes a quarantined row, not a failed read. A line with the wrong number of fields
    or a cell that is not UTF-8 is one bad row too: the fast threaded read is tried
    first, and only a file with such rows is read again line by line, as bytes."""
    header = _csv_header(path)
    malformed: list = []

    def skip(row) -> str:
        malformed.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    try:
        tbl = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
                             convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                                  strings_can_be_null=True))
        if not malformed:
            frame = tbl.to_pandas(types_mapper=_arrow_types_for_pandas)
            return Raw(frame, lines=np.arange(len(frame), dtype=np.int64) + 2)
    except pa.ArrowInvalid as exc:
        if "UTF8" not in str(exc):
            raise
    malformed.clear()
    tbl = pacsv.read_csv(path, read_options=pacsv.ReadOptions(use_threads=False),
                         parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
                         convert_options=pacsv.ConvertOptions(column_types={c: pa.binary() for c in header},
                                                              strings_can_be_null=True))
    columns, undecodable = [], {}
    for name in tbl.column_names:
        column, bad = _decoded(tbl.column(name))
        columns.append(column)
        if bad is not None:
            undecodable[name] = bad
    frame = pa.table(columns, names=tbl.column_names).to_pandas(types_mapper=_arrow_types_for_pandas)
    return Raw(frame, lines=_kept_lines(len(frame), [m[0] for m in malformed]), undecodable=undecodable,
               malformed=malformed)


def _decoded(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray | None]:
    """A column of bytes as text, and a mask of the cells that were not UTF-8 (kept with
    U+FFFD for the report; None when every cell was). Cell by cell only for a column
    that fails the one vectorised cast."""
    try:
        return column.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    cells = column.to_pylist()
    bad = np.zeros(len(cells), dtype=bool)
    out = []
    for i, cell in enumerate(cells):
        try:
            out.append(None if cell is None else cell.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(cell.decode("utf-8", "replace"))
            bad[i] = True
    return pa.array(out, pa.string()), bad


def _kept_lines(n: int, skipped: list[int]) -> np.ndarray:
    """The file line of each of ``n`` rows read, around the ``skipped`` lines (header is line 1)."""
    lines = np.arange(n, dtype=np.int64) + 2
    skipped = np.sort(np.asarray(skipped, dtype=np.int64))
    # A skipped line moves every later row down one: the k-th skipped line (sorted) sits
    # before the rows whose unshifted line is at or after (line - k).
    return lines + np.searchsorted(skipped - np.arange(len(skipped)), lines, side="right")


def _csv_header(path: Path) -> list[str]:
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's
    # name; with it, that column would escape the text-only read and lose leading zeros.
    # Only the start is decoded: a bad byte further down is that row's problem.
    with open(path, "rb") as fh:
        start = fh.read(1 << 16)
    return next(csv.reader(io.StringIO(start.decode("utf-8-sig", "replace"), newline="")), [])


def _arrow_types_for_pandas(arrow_type: pa.DataType):
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype(na_value=np.nan)
    return None


# ------------------------------------------------------------------- normalising


def _as_text(s: pd.Series) -> pd.Series:
    """Identifiers and labels as strings; empty cells are missing."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if pd.api.types.is_float_dtype(s.dtype):
        # A numeric identifier in Parquet: write 123.0 as "123".
        out = s.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
    else:
        out = s
    out = out.astype("str")
    out = out.str.strip()
    return out.mask(out == "")


as_text = _as_text  # the reader's text normalisation, for code that routes rows by key


def _as_timestamp(s: pd.Series, bare_date_end_of_day: bool = False) -> pd.Series:
    """Tz-aware UTC microsecond timestamps; offset-less values are UTC."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        out = s if getattr(s.dtype, "tz", None) is not None else s.dt.tz_localize("UTC")
        return out.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
    if s.dtype == object and len(s) and any(hasattr(v, "isoformat") and not isinstance(v, str) for v in s.dropna().head(5)):
        s = s.map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)  # Parquet date32 columns
    text = _as_text(s)
    out = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    if bare_date_end_of_day:
        bare = text.str.match(_BARE_DATE).fillna(False).astype(bool)
        if bare.any():
            out = out.where(~bare, out + pd.Timedelta(hours=23, minutes=59, seconds=59))
    return out.astype(TIMESTAMP_DTYPE)


def _as_float(s: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("float64")
    return pd.to_numeric(_as_text(s), errors="coerce").astype("float64")


def _as_int(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Nullable integers, and a mask of values that are numbers but not whole."""
    f = _as_float(s)
    not_whole = f.notna() & (f != np.floor(f))
    return f.where(~not_whole).round().astype("Int64"), not_whole


# ------------------------------------------------------------------ rule checking


class _Problems:
    """Collects (row, column, rule) per table; a row may break several rules."""

    def __init__(self, n: int, duplicates: np.ndarray | None = None):
        self.n = n
        self.duplicates = duplicates  # the duplicate-key rule's answer, when found elsewhere
        self.bad = np.zeros(n, dtype=bool)
        self.items: list[tuple[np.ndarray, str, str]] = []

    def add(self, mask, column: str, rule: str) -> None:
        m = np.asarray(mask, dtype=bool)
        if m.any():
            self.bad |= m
            self.items.append((np.flatnonzero(m), column, rule))

    def per_rule(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for idx, column, rule in self.items:
            key = f"{column}: {rule}"
            counts[key] = counts.get(key, 0) + len(idx)
        return counts

    def reasons(self) -> tuple[np.ndarray, list[str], list[str]]:
        """Bad row positions with their columns and rules, ';'-joined per row."""
        cols: dict[int, list[str]] = {}
        rules: dict[int, list[str]] = {}
        for idx, column, rule in self.items:
            for i in idx.tolist():
                cols.setdefault(i, []).append(column)
                rules.setdefault(i, []).append(rule)
        rows = np.array(sorted(cols), dtype=np.int64)
        return rows, ["; ".join(cols[i]) for i in rows], ["; ".join(rules[i]) for i in rows]


def _normalise(raw: pd.DataFrame, spec: Table, problems: _Problems) -> pd.DataFrame:
    out = pd.DataFrame(index=raw.index)
    for col in spec.columns:
        if col.name not in raw.columns:
            out[col.name] = _empty_column(col.kind, len(raw))
            continue
        s = raw[col.name]
        if col.kind in ("id", "str"):
            v = _as_text(s)
            given = v.notna().to_numpy()  # _as_text already turned blank cells into missing
        else:
            given = _given(s)
        if col.kind == "timestamp":
            v = _as_timestamp(s, bare_date_end_of_day=(col.name == "promised_at"))
            problems.add(given & v.isna(), col.name, "unparseable timestamp")
        elif col.kind == "float":
            v = _as_float(s)
            problems.add(given & v.isna(), col.name, "unparseable number")
        elif col.kind == "int":
            v, not_whole = _as_int(s)
            problems.add((given & v.isna() & ~not_whole) | not_whole, col.name, "not a whole number")
        if col.required:
            problems.add(~given, col.name, "required value missing")
        out[col.name] = v
    return out


def _given(s: pd.Series) -> np.ndarray:
    """Cells that hold something (not null, not blank text)."""
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        t = s.astype("str").str.strip()
        return (t.notna() & (t != "")).to_numpy(dtype=bool, na_value=False)
    return s.notna().to_numpy()


def _empty_column(kind: str, n: int) -> pd.Series:
    if kind == "timestamp":
        return pd.Series(pd.NaT, index=range(n), dtype=TIMESTAMP_DTYPE)
    if kind == "float":
        return pd.Series(np.nan, index=range(n), dtype="float64")
    if kind == "int":
        return pd.Series(pd.NA, index=range(n), dtype="Int64")
    return pd.Series(np.nan, index=range(n), dtype="str")


def isin(s: pd.Series, values) -> np.ndarray:
    """Vectorised membership for text columns (pandas' Arrow-string isin loops in Python)."""
    import pyarrow.compute as pc

    arr = pa.array(s.astype("str").to_numpy(dtype=object, na_value=None), type=pa.string()) \
        if not isinstance(s.dtype, pd.StringDtype) else pa.array(s.array)
    value_set = pa.array(pd.Series(list(values) if not isinstance(values, pd.Series) else values, dtype="str")
                         .dropna().unique().tolist(), type=pa.string())
    return pc.is_in(arr, value_set=value_set).to_numpy(zero_copy_only=False).astype(bool) & s.notna().to_numpy()


def _later(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Rows where both are known and ``a`` is strictly after ``b``."""
    return (a.notna() & b.notna() & (a > b)).to_numpy()


def _duplicates(df: pd.DataFrame, key: tuple[str, ...], p: "_Problems | None" = None) -> np.ndarray:
    """Every row but the first of each key (in file order; parts in name order)."""
    if p is not None and p.duplicates is not None:
        return p.duplicates
    known = df[list(key)].notna().all(axis=1)
    return (df.duplicated(list(key), keep="first") & known).to_numpy()


def _check_shipments(df: pd.DataFrame, p: _Problems) -> None:
    p.add(_duplicates(df, ("shipment_id",), p), "shipment_id", "duplicate shipment_id")
    p.add(_later(df.ordered_at, df.shipped_at), "shipped_at", "shipped_at before ordered_at")
    p.add(_later(df.shipped_at, df.delivered_at), "delivered_at", "delivered_at before shipped_at")
    p.add(_later(df.ordered_at, df.delivered_at), "delivered_at", "delivered_at before ordered_at")
    p.add(_later(df.ordered_at, df.promised_at), "promised_at", "promised_at before ordered_at")
    p.add((df.weight_kg < 0).to_numpy(), "weight_kg", "negative weight")
    p.add((df.value < 0).to_numpy(), "value", "negative value")


def _check_scans(df: pd.DataFrame, p: _Problems, all_shipment_ids: pd.Series, shipments_ok: pd.DataFrame) -> None:
    p.add(df.event.notna().to_numpy() & ~isin(df.event, EVENTS), "event", "unknown event")
    # "unknown" (no such shipment in the file) and "quarantined" (its shipment row was
    # rejected) are different fixes for the person reading the report.
    has_id = df.shipment_id.notna().to_numpy()
    position = pd.Index(shipments_ok.shipment_id).get_indexer(df.shipment_id)
    accepted = position >= 0
    known_anywhere = accepted | isin(df.shipment_id, all_shipment_ids)
    p.add(has_id & ~known_anywhere, "shipment_id", "scan for an unknown shipment")
    p.add(has_id & known_anywhere & ~accepted, "shipment_id", "scan for a quarantined shipment")
    if not len(shipments_ok):  # every shipment was set aside, and so is every scan (above)
        return
    ordered = shipments_ok.ordered_at.iloc[np.maximum(position, 0)].reset_index(drop=True).where(accepted)
    p.add(_later(ordered, df.scanned_at.reset_index(drop=True)), "scanned_at", "scanned_at before the shipment's ordered_at")


def _check_orders(df: pd.DataFrame, p: _Problems) -> None:
    p.add(_duplicates(df, ("order_id",), p), "order_id", "duplicate order_id")
    p.add((df.value < 0).to_numpy(), "value", "negative value")


def _check_feedback(df: pd.DataFrame, p: _Problems, known_orders: pd.Series) -> None:
    p.add((df.rating.notna() & ((df.rating < 1) | (df.rating > 5))).to_numpy(dtype=bool, na_value=False),
          "rating", "rating outside 1..5")
    p.add((df.contacts.notna() & (df.contacts < 0)).to_numpy(dtype=bool, na_value=False),
          "contacts", "negative contacts")
    p.add(df.order_id.notna().to_numpy() & ~isin(df.order_id, known_orders), "order_id", "feedback for an unknown order")


def _check_customers(df: pd.DataFrame, p: _Problems) -> None:
    p.add(_duplicates(df, ("customer_id",), p), "customer_id", "duplicate customer_id")


def _check_locations(df: pd.DataFrame, p: _Problems) -> None:
    p.add(_duplicates(df, ("key", "kind"), p), "key", "duplicate key and kind")
    p.add(df.kind.notna().to_numpy() & ~isin(df.kind, LOCATION_KINDS), "kind", "kind is not region or postal")
    p.add((df.latitude.abs() > 90).to_numpy(), "latitude", "latitude outside -90..90")
    p.add((df.longitude.abs() > 180).to_numpy(), "longitude", "longitude outside -180..180")


# ----------------------------------------------------------------------- the entry


def load_data_set(folder: str | Path) -> DataSet:
    """Read, normalise and validate every contract table present in ``folder``."""
    folder = Path(folder)
    files = table_files(folder)
    if "shipments" not in files:
        raise ContractError(f"{folder}: required table shipments is missing (shipments.parquet or shipments.csv)")

    raws: dict[str, Raw] = {}
    for name, path in files.items():
        raws[name] = _read_raw(path)
        require_columns(path, name, raws[name].frame.columns)
    ds = validate(folder, files, raws)
    ds.warnings.extend(unknown_files(folder))
    return ds


def require_columns(path: Path, name: str, columns) -> None:
    missing = [c for c in TABLES[name].required_names if c not in columns]
    if missing:
        raise ContractError(f"{path}: missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


def read_alone(folder: Path, files: dict[str, Path], name: str) -> DataSet:
    """One table read and checked by itself: for a table no rule ties to another (locations)."""
    if name in ("shipments", "scans", "feedback"):
        raise ValueError(f"{name} is checked against other tables")
    raw = _read_raw(files[name])
    require_columns(files[name], name, raw.frame.columns)
    ds = DataSet(folder=folder, tables={}, quarantine={}, report={})
    _accept(ds, name, files[name], raw, raw_shipment_ids=pd.Series([], dtype="str"))
    return ds


def validate(folder: Path, files: dict[str, Path], raws: dict[str, Raw],
             duplicates: dict[str, np.ndarray] | None = None) -> DataSet:
    """Normalise and check tables as read; ``duplicates`` (per table, a mask) stands in
    for the duplicate-key rule where the rows were split up and the whole table was
    searched elsewhere (``data.partitioned``)."""
    ds = DataSet(folder=folder, tables={}, quarantine={}, report={})
    # Order matters: scans and feedback are checked against the accepted parents.
    for name in ("shipments", "orders", "customers", "locations", "scans", "feedback"):
        if name in raws:
            _accept(ds, name, files[name], raws[name], raw_shipment_ids=raws["shipments"].frame["shipment_id"],
                    duplicates=(duplicates or {}).get(name))
    if "orders" not in ds.tables:
        ds.warnings.append("orders table absent: churn risk will use the orders implied by shipments")
    return ds


def unknown_files(folder: Path) -> list[str]:
    """A warning for each file that is not a contract table (a misspelt ``scan.parquet``
    would otherwise be skipped without a word)."""
    import difflib

    read = {f"{name}.{ext}" for name in TABLES for ext in ("parquet", "csv")} | set(TABLES)
    out = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")) or path.name in read or path.name == TRUTH_DIR:
            continue
        guess = difflib.get_close_matches(path.stem, list(TABLES), n=1)
        out.append(f"{path.name} is not a contract table and was not read"
                   + (f" (did you mean {guess[0]}{path.suffix}?)" if guess else ""))
    return out


def _accept(ds: DataSet, name: str, path: Path, read: Raw, raw_shipment_ids: pd.Series,
            duplicates: np.ndarray | None = None) -> None:
    spec, raw = TABLES[name], read.frame
    problems = _Problems(len(raw), duplicates)
    for column, mask in read.undecodable.items():
        problems.add(mask, column, "not valid UTF-8")
    df = _normalise(raw, spec, problems)
    if name == "shipments":
        _check_shipments(df, problems)
    elif name == "scans":
        _check_scans(df, problems, _as_text(raw_shipment_ids), ds.tables["shipments"])
    elif name == "orders":
        _check_orders(df, problems)
    elif name == "feedback":
        known = pd.concat([ds.tables["shipments"].order_id] + ([ds.tables["orders"].order_id] if "orders" in ds.tables else []))
        _check_feedback(df, problems, known)
    elif name == "customers":
        _check_customers(df, problems)
    elif name == "locations":
        _check_locations(df, problems)

    rows, columns, rules = problems.reasons()
    quarantined = raw.iloc[rows].copy()
    # Row numbers as a person finds them: the CSV line (header is line 1) or the
    # 0-based Parquet row.
    quarantined.insert(0, "_row", read.lines[rows] if read.lines is not None else rows)
    quarantined.insert(1, "_column", columns)
    quarantined.insert(2, "_rule", rules)
    if read.parts is not None:  # a folder of parts: the row is counted within its part
        quarantined.insert(0, "_part", read.parts[rows])
    by_rule = problems.per_rule()
    if read.malformed:
        lines = _malformed_rows(read.malformed)
        quarantined = pd.concat([quarantined, lines]).sort_values("_row", kind="stable")
        for rule in lines["_rule"]:
            by_rule[f"(row): {rule}"] = by_rule.get(f"(row): {rule}", 0) + 1
    ok = df.loc[~problems.bad].reset_index(drop=True)
    ds.tables[name] = ok
    ds.quarantine[name] = quarantined.reset_index(drop=True)
    ds.report[name] = TableReport(
        file=path.name + ("/" if path.is_dir() else ""),
        read=len(raw) + len(read.malformed),
        accepted=len(ok),
        quarantined=len(quarantined),
        by_rule=by_rule,
        ignored_columns=[c for c in raw.columns if c not in spec.names],
    )


def _malformed_rows(malformed: list[tuple[int, str, int, int]]) -> pd.DataFrame:
    """Lines that were not a row of the table, for the quarantine: the line's text whole."""
    return pd.DataFrame({"_row": [m[0] for m in malformed], "_column": "(row)",
                         "_rule": [f"expected {m[2]} fields, found {m[3]}" for m in malformed],
                         "_text": [m[1] for m in malformed]}, columns=["_row", "_column", "_rule", "_text"])


def write_report(ds: DataSet, out_dir: Path | None = None) -> Path:
    """Write ``report.json`` and one ``<table>.csv`` of quarantined rows per table, all
    switched in at once (a killed run leaves the previous report whole)."""
    out_dir = Path(out_dir) if out_dir else ds.folder / QUARANTINE_DIR
    payload = {
        "folder": str(ds.folder),
        "contract_version": 1,
        "tables": {name: vars(r) for name, r in ds.report.items()},
        "warnings": ds.warnings,
    }

    def fill(folder: Path) -> None:
        for name, q in ds.quarantine.items():
            if len(q):
                q.to_csv(folder / f"{name}.csv", index=False)
        (folder / "report.json").write_text(json.dumps(payload, indent=2))

    return atomic_folder(out_dir, fill)
