"""Read a data set on a Dask cluster: partitions of whole customers, each checked by the
in-process reader's own rules, with counts that add up.

Tables are read lazily, a Parquet part (or file) per task. Rows are routed to a
partition by customer (a shipment without one by its own id): scans follow their
shipment, feedback its order, so every cross-table rule (a scan's shipment, a scan
before its order, feedback for a known order) finds what it needs inside the partition,
and the features built on a partition see whole histories. The one rule that needs the
whole table, a duplicate key, is answered first: the keys seen more than once, with the
file position of their first row, are gathered (few) and each partition marks every
other copy, as the in-process reader keeps the first in file order.

Then ``data.load.validate`` runs on each partition, on the workers. The reports are
added up (read = accepted + quarantined, per table, across partitions) and the
quarantined rows gathered, with their part and row in the file, for the same report
files ``eddy validate`` writes. The accepted tables stay on the workers as futures; a
lost worker's partitions are read again from the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.load import (UNREADABLE, ContractError, DataSet, Raw, TableReport, _arrow_types_for_pandas, as_text, part_files,
                       read_alone, require_columns, table_files, unknown_files, unreadable, validate)

#: tables routed to partitions; locations are small and read whole in the client
PARTITIONED = ("shipments", "scans", "orders", "customers", "feedback")
#: the duplicate-key rule's key per table
KEYS = {"shipments": "shipment_id", "orders": "order_id", "customers": "customer_id"}
ORIGIN = ("_part", "_row")  # where a row was in the files


#: buckets per partition: rows go to a bucket by key and buckets to partitions by Dask's
#: shuffle (a hash of the bucket), so many small buckets keep the partitions even
BUCKETS_PER_PART = 64


def part_of(keys: pd.Series, n: int) -> np.ndarray:
    """A bucket in ``0..n*BUCKETS_PER_PART-1`` per key, the same for the same text anywhere."""
    buckets = np.uint64(n * BUCKETS_PER_PART)
    return (pd.util.hash_array(keys.fillna("").to_numpy(dtype=object)) % buckets).astype(np.int64)


@dataclass
class Partitioned:
    """A data set on the cluster: ``parts`` are futures of validated partitions."""

    folder: Path
    parts: list
    report: dict[str, TableReport]
    quarantine: dict[str, pd.DataFrame]
    locations: pd.DataFrame | None
    warnings: list[str] = field(default_factory=list)

    @property
    def total_quarantined(self) -> int:
        return sum(r.quarantined for r in self.report.values())


# ---------------------------------------------------------------------- reading


def _pieces(path: Path) -> list[Path]:
    return part_files(path) if path.is_dir() else [path]


def _read_piece(path: Path, in_folder: bool) -> pd.DataFrame:
    """One Parquet file as the reader sees it, plus its origin."""
    return _as_read(pq.read_table(path), path.name if in_folder else None)


def _as_read(table: pa.Table, part: str | None) -> pd.DataFrame:
    """Cells as the reader sees them, dictionary columns plain (parts would disagree on
    their dictionaries), and each row's origin (``_part``, ``_row``)."""
    table = table.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                  for f in table.schema]))
    frame = table.to_pandas(types_mapper=_arrow_types_for_pandas)
    frame["_part"] = pd.array([part] * len(frame), dtype="str")
    frame["_row"] = np.arange(len(frame), dtype=np.int64)
    return frame


def _schema(piece: Path) -> pa.Schema:
    """A part's columns, or the one-line error the in-process reader gives for a file
    that is not Parquet (on the cluster it was pyarrow's traceback)."""
    try:
        return pq.read_schema(piece)
    except UNREADABLE as exc:
        raise unreadable(piece, exc) from None


def _lazy(path: Path, name: str):
    """A table as a Dask DataFrame, one partition per Parquet file; columns checked first."""
    import dask.dataframe as dd

    pieces = _pieces(path)
    if path.suffix == ".csv":
        raise ContractError(f"{path}: --cluster reads Parquet tables (a file or a folder of parts); "
                            "write this table as Parquet, or run without --cluster")
    names = [set(_schema(p).names) for p in pieces]
    odd = next((p for p, cols in zip(pieces, names) if cols != names[0]), None)
    if odd is not None:
        raise ContractError(f"{odd}: its columns differ from those of {pieces[0].name} (every part has the same columns)")
    require_columns(path, name, names[0])
    meta = _as_read(pq.read_schema(pieces[0]).empty_table(), None)  # the columns, without reading a part
    return dd.from_map(_read_piece, pieces, in_folder=path.is_dir(), meta=meta, enforce_metadata=False)


# ---------------------------------------------------------------------- routing


def _keyed(frame: pd.DataFrame, name: str, n: int) -> pd.DataFrame:
    """Adds ``_k``, the bucket (``part_of``) that decides the row's partition, where the
    table's own columns name it."""
    if name == "shipments":
        key = as_text(frame.customer_id).fillna(as_text(frame.shipment_id))
    else:
        key = as_text(frame.customer_id)
    return frame.assign(_k=part_of(key, n))


def _owner_keys(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return pd.DataFrame({"_owner": as_text(frame[key]), "_k": frame["_k"]}).dropna(subset=["_owner"])


def _follow(frame: pd.DataFrame, key: str, n: int) -> pd.DataFrame:
    """``_k`` of the owner named in ``key`` (after a merge), else the key's own hash."""
    own = part_of(as_text(frame[key]), n)
    return frame.assign(_k=np.where(frame["_k"].isna(), own, frame["_k"].fillna(-1)).astype(np.int64))


def _to_first_copy(owners: pd.DataFrame, first: pd.DataFrame) -> pd.DataFrame:
    """A repeated key's partition is its first copy's."""
    k = first.set_index("_key")["_k"].reindex(owners["_owner"].to_numpy()).to_numpy(dtype=float)
    return owners.assign(_k=np.where(np.isnan(k), owners["_k"].to_numpy(), k).astype(np.int64))


def _counts(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    counts = as_text(frame[key]).value_counts()
    return pd.DataFrame({"_key": counts.index.to_numpy(dtype=object), "n": counts.to_numpy()}).astype({"_key": "str"})


def _first_copies(client, table, name: str) -> pd.DataFrame:
    """Keys seen more than once in the whole table, with the file position of the first."""
    key = KEYS[name]
    counts = table[[key]].map_partitions(_counts, key, meta=pd.DataFrame({"_key": pd.Series(dtype="str"),
                                                                           "n": pd.Series(dtype="int64")}))
    counts = counts.groupby("_key").n.sum(split_out=table.npartitions)
    repeated = client.compute(counts[counts > 1]).result()
    if not len(repeated):
        return pd.DataFrame({"_key": pd.Series(dtype="str"), "_part": pd.Series(dtype="str"),
                             "_row": pd.Series(dtype="int64"), "_k": pd.Series(dtype="int64")})
    wanted = set(repeated.index)
    copies = table.map_partitions(lambda f: f.assign(_key=as_text(f[key]))[lambda g: g._key.isin(wanted)]
                                  [["_key", "_part", "_row", "_k"]]).compute()
    return (copies.sort_values(["_part", "_row"], na_position="first", kind="stable")
            .drop_duplicates("_key").reset_index(drop=True))


def _routed(client, raw: dict, n: int) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Every partitioned table with ``_k``, and the first copies of repeated keys."""
    import dask.dataframe as dd

    keyed = {name: raw[name].map_partitions(_keyed, name, n) for name in ("shipments", "orders", "customers")
             if name in raw}
    firsts = {name: _first_copies(client, t, name) for name, t in keyed.items()}
    # a repeated shipment's scans go where its first copy went, the one the reader keeps
    ships = keyed["shipments"].map_partitions(_owner_keys, "shipment_id").drop_duplicates("_owner")
    ships = ships.map_partitions(_to_first_copy, firsts["shipments"])
    routed = dict(keyed)
    if "scans" in raw:
        scans = raw["scans"].assign(_owner=raw["scans"].shipment_id.map_partitions(as_text))
        routed["scans"] = scans.merge(ships, on="_owner", how="left").map_partitions(_follow, "shipment_id", n)
    if "feedback" in raw:
        orders = keyed["shipments"].map_partitions(_owner_keys, "order_id")
        if "orders" in keyed:
            orders = dd.concat([orders, keyed["orders"].map_partitions(_owner_keys, "order_id")])
        fb = raw["feedback"].assign(_owner=raw["feedback"].order_id.map_partitions(as_text))
        routed["feedback"] = fb.merge(orders.drop_duplicates("_owner"), on="_owner", how="left") \
            .map_partitions(_follow, "order_id", n)
    return routed, firsts


# ------------------------------------------------------------------- validating


def _validate_partition(folder: Path, files: dict[str, Path], frames: dict[str, pd.DataFrame],
                        firsts: dict[str, pd.DataFrame]) -> DataSet:
    """``data.load.validate`` on one partition, rows back in file order."""
    raws, duplicates = {}, {}
    for name, frame in frames.items():
        frame = frame.sort_values(list(ORIGIN), na_position="first", kind="stable").reset_index(drop=True)
        cells = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])
        parts = frame["_part"].to_numpy(dtype=object)
        raws[name] = Raw(cells, lines=frame["_row"].to_numpy(), parts=parts if files[name].is_dir() else None)
        if name in firsts:
            duplicates[name] = _later_copies(frame, KEYS[name], firsts[name])
    return validate(folder, files, raws, duplicates)


def _later_copies(frame: pd.DataFrame, key: str, first: pd.DataFrame) -> np.ndarray:
    """Rows whose key is repeated in the table and which are not its first copy."""
    if not len(first):
        return np.zeros(len(frame), dtype=bool)
    at = pd.Index(first["_key"]).get_indexer(as_text(frame[key]).to_numpy(dtype=object))
    seen = at >= 0
    same_part = first["_part"].to_numpy(dtype=object)[np.maximum(at, 0)] == frame["_part"].to_numpy(dtype=object)
    same_part |= pd.isna(first["_part"].to_numpy(dtype=object)[np.maximum(at, 0)]) & frame["_part"].isna().to_numpy()
    same_row = first["_row"].to_numpy()[np.maximum(at, 0)] == frame["_row"].to_numpy()
    return seen & ~(same_part & same_row)


#: Parquet bytes per partition: about 250,000 shipments with their scans and orders,
#: which peaked near 2 GiB per worker through the feature build (1M shipments, 4 parts)
BYTES_PER_PARTITION = 32 * 2**20


def partitions_for(files: dict[str, Path], workers: int) -> int:
    """Enough partitions to keep each near ``BYTES_PER_PARTITION``, and two per worker."""
    size = sum(p.stat().st_size for name, path in files.items() if name in PARTITIONED for p in _pieces(path))
    return max(2 * workers, int(np.ceil(size / BYTES_PER_PARTITION)))


def read_on(client, folder: str | Path, n: int | None = None) -> Partitioned:
    """The data set in ``folder`` as ``n`` validated partitions on the cluster."""
    import dask

    folder = Path(folder)
    files = table_files(folder)
    if "shipments" not in files:
        raise ContractError(f"{folder}: required table shipments is missing (shipments.parquet or shipments.csv)")
    n = n or partitions_for(files, len(client.scheduler_info()["workers"]))
    raw = {name: _lazy(path, name) for name, path in files.items() if name in PARTITIONED}
    routed, firsts = _routed(client, raw, n)
    shuffled = {name: t.shuffle("_k", npartitions=n) for name, t in routed.items()}
    pieces = {name: t.to_delayed() for name, t in shuffled.items()}
    parts = client.compute([dask.delayed(_validate_partition)(folder, files, {name: p[j] for name, p in pieces.items()},
                                                              firsts) for j in range(n)])
    locations = read_alone(folder, files, "locations") if "locations" in files else None
    report, quarantine, warnings = _summed(client, parts, files, locations)
    return Partitioned(folder, parts, report, quarantine, locations.get("locations") if locations else None,
                       warnings + unknown_files(folder))


def _report_of(part: DataSet) -> tuple[dict, dict, list]:
    return part.report, {k: q for k, q in part.quarantine.items() if len(q)}, part.warnings


def _summed(client, parts: list, files: dict[str, Path], locations: DataSet | None):
    """The partitions' reports added up and their quarantined rows together."""
    report: dict[str, TableReport] = {}
    quarantine: dict[str, list] = {}
    warnings: list[str] = []
    for rep, quar, warn in client.gather(client.map(_report_of, parts)):
        for name, r in rep.items():
            total = report.setdefault(name, TableReport(file=r.file, ignored_columns=r.ignored_columns))
            total.read += r.read
            total.accepted += r.accepted
            total.quarantined += r.quarantined
            for rule, count in r.by_rule.items():
                total.by_rule[rule] = total.by_rule.get(rule, 0) + count
        for name, q in quar.items():
            quarantine.setdefault(name, []).append(q)
        warnings += [w for w in warn if w not in warnings]
    if locations is not None:
        report["locations"] = locations.report["locations"]
        if len(locations.quarantine["locations"]):
            quarantine["locations"] = [locations.quarantine["locations"]]
    frames = {name: pd.concat(qs, ignore_index=True).sort_values([c for c in ORIGIN if c in qs[0]], kind="stable")
              .reset_index(drop=True) for name, qs in quarantine.items()}
    return report, frames, warnings
