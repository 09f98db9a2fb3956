"""Reading stored datasets back: previews and downloads."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from api.ingest.profile import jsonable

# A cell starting with one of these is run as a formula by spreadsheet programs (CSV
# injection); a leading apostrophe makes it text again.
_FORMULA_START = r"^[=+\-@\t\r]"
_FORMULA_NAME = re.compile(_FORMULA_START)


def preview(path: Path, limit: int) -> tuple[list[dict[str, str]], list[dict[str, Any]], int]:
    parquet = pq.ParquetFile(path)
    columns = [{"name": f.name, "type": str(f.type)} for f in parquet.schema_arrow]
    batch = next(parquet.iter_batches(batch_size=limit), None)
    rows = (
        []
        if batch is None
        else [{k: jsonable(v) for k, v in row.items()} for row in batch.slice(0, limit).to_pylist()]
    )
    return columns, rows, parquet.metadata.num_rows


def _neutralise(batch: pa.RecordBatch) -> pa.RecordBatch:
    arrays = []
    for column in batch.columns:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            risky = pc.fill_null(pc.match_substring_regex(column, _FORMULA_START), False)
            if pc.any(risky).as_py():
                column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        elif pa.types.is_nested(kind) or pa.types.is_binary(kind):
            # CSV has no nested values: write them as JSON text.
            column = pa.array(
                [None if v is None else json.dumps(jsonable(v)) for v in column.to_pylist()],
                type=pa.string(),
            )
        arrays.append(column)
    names = ["'" + n if _FORMULA_NAME.match(n) else n for n in batch.schema.names]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def csv_chunks(path: Path) -> Iterator[bytes]:
    """The dataset as CSV, streamed batch by batch, safe to open in a spreadsheet."""
    sink = io.BytesIO()
    writer: pacsv.CSVWriter | None = None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
        batch = _neutralise(batch)
        if writer is None:
            writer = pacsv.CSVWriter(
                sink, batch.schema, write_options=pacsv.WriteOptions(quoting_style="needed")
            )
        writer.write_batch(batch)
        yield sink.getvalue()
        sink.seek(0)
        sink.truncate()
    if writer is not None:
        writer.close()
        tail = sink.getvalue()
        if tail:
            yield tail
