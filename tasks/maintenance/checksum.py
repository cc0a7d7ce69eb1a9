"""An order-independent checksum over the rows of an Arrow table.

Each row hashes to 64 bits (Daft's vectorised hash of every column, each column seeded with the
hash of the columns before it); the checksum is the sum of the row hashes modulo 2**64, so it
ignores row order and file boundaries but counts duplicates. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NULL = pa.scalar(0x9E3779B97F4A7C15, pa.uint64())  # stands in for a hash Daft leaves null


@dataclass(frozen=True)
class RowChecksum:
    rows: int
    digest: int  # sum of row hashes mod 2**64

    def __add__(self, other: "RowChecksum") -> "RowChecksum":
        return RowChecksum(self.rows + other.rows, (self.digest + other.digest) % 2**64)


EMPTY = RowChecksum(0, 0)


def _row_hashes(batch: pa.RecordBatch) -> np.ndarray:
    from daft import Series

    seed = None
    for column in batch.columns:
        series = Series.from_arrow(column)
        hashed = series.hash(seed=seed) if seed is not None else series.hash()
        seed = Series.from_arrow(pc.fill_null(hashed.to_arrow(), _NULL))
    if seed is None:  # no columns: every row is the same empty row
        return np.full(batch.num_rows, int(_NULL.as_py()), dtype=np.uint64)
    return np.asarray(seed.to_arrow().to_numpy(zero_copy_only=False), dtype=np.uint64)


def row_checksum(table: pa.Table | pa.RecordBatch) -> RowChecksum:
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    total = EMPTY
    for batch in batches:
        if batch.num_rows:
            digest = int(_row_hashes(batch).sum(dtype=np.uint64))  # wraps modulo 2**64
            total = total + RowChecksum(batch.num_rows, digest)
    return total
