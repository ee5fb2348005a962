"""Batch scoring on a Dask cluster: ``eddy predict --cluster``.

The data set is read by partition (whole customers, each shipment with its scans:
``data.partitioned``), the bundle is sent once to every worker, and each
partition is scored by ``runtime.batch.predict_data_set``, the in-process code, so a
shipment's answer is the same whichever engine computed it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from data.load import DataSet
from runtime.batch import predict_data_set
from runtime.bundle import ModelBundle


def _predict_part(part: DataSet, bundle: ModelBundle, as_of, confidence: float, explain: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    return predict_data_set(bundle, part, as_of, confidence, explain), part["shipments"]


def predict_on(client, parts: list, bundle: ModelBundle, as_of: pd.Timestamp | None = None,
               confidence: float = 0.95, explain: bool = True) -> Iterator[tuple[int, pd.DataFrame, pd.DataFrame]]:
    """(partition number, its predictions, its shipments) as partitions finish, one at a
    time, so the caller holds one partition's answers at once; ``parts`` are futures of
    data sets (``data.partitioned.read_on`` or ``features.distributed.partitions``)."""
    from distributed import as_completed

    shared = client.scatter(bundle, broadcast=True)
    futures = client.map(_predict_part, parts, bundle=shared, as_of=as_of, confidence=confidence, explain=explain)
    number = {f.key: k for k, f in enumerate(futures)}
    for future in as_completed(futures):
        table, shipments = future.result()
        future.release()
        yield number[future.key], table, shipments
