"""Data files as users send them, built in memory for tests (workbooks, Parquet, ZIPs),
and datasets as the sandbox receives them."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq

from api.ingest.archive import ZipLimits
from api.ingest.sniff import Limits

MB = 1 << 20
# The ingestion limits of a default configuration.
LIMITS = Limits(
    max_columns=2000,
    max_json_bytes=100 * MB,
    zip=ZipLimits(max_entries=100, max_uncompressed=2048 * MB, max_ratio=100),
)


def xlsx_bytes(sheets: dict[str, list[list[Any]]]) -> bytes:
    """An .xlsx workbook with one sheet per entry, rows appended in order."""
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def zip_bytes(
    entries: Iterable[tuple[str | zipfile.ZipInfo, bytes]] | dict[str, bytes],
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    buffer = io.BytesIO()
    items = entries.items() if isinstance(entries, dict) else entries
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in items:
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb_bytes(megabytes: int = 200, name: str = "bomb.csv") -> bytes:
    """`megabytes` of zeros deflated to about a thousandth of that."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open(name, "w") as entry,
    ):
        zeros = bytes(MB)
        for _ in range(megabytes):
            entry.write(zeros)
    return buffer.getvalue()


def dataset_files(frame: Any, folder: Path, name: str = "census") -> dict[str, Path]:
    """A DataFrame stored as the sandbox receives datasets: Arrow IPC (uncompressed, text
    as large_string, as the converter writes it), Parquet and CSV; paths by format."""
    from api.ingest.convert import _large_offsets

    table = pa.Table.from_pandas(frame, preserve_index=False)
    paths = {fmt: folder / f"{name}.{fmt}" for fmt in ("arrow", "parquet", "csv")}
    with pa.ipc.new_file(str(paths["arrow"]), _large_offsets(table.schema)) as writer:
        writer.write_table(table.cast(_large_offsets(table.schema)))
    pq.write_table(table, paths["parquet"])
    frame.to_csv(paths["csv"], index=False)
    return paths
