"""Turn the tables of one upload into Parquet files with a profile each.

Runs as `python -m api.ingest.convert` in a fresh process (job JSON on stdin, result JSON on
stdout) with a memory cap and a scrubbed environment: it parses untrusted files, so a parser
bug or a hostile workbook can at worst kill this process, not the API. Everything streams in
record batches, so memory stays flat whatever the file size (JSON documents and Excel
sheets, which have no streaming reader here, are capped in size instead).
"""

from __future__ import annotations

import codecs
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from api.ingest import dates
from api.ingest.nesting import (
    TooDeep,
    TooWide,
    check_json,
    file_pieces,
    too_deep_message,
    too_wide_message,
)
from api.ingest.profile import (
    Profiler,
)
from api.ingest.tables import (
    SourceTable,
    TableError,
    check_width,
    clean_column_names,
    records_of,
)

BLOCK_BYTES = 16 << 20
MAX_BAD_ROWS = 1000
MAX_COLUMNS = 2000  # MAX_DATASET_COLUMNS's default; the job says what the settings say
_CSV_COLUMN = re.compile(r"column #(\d+)")


# --- readers: each yields record batches with clean column names --------------------------------


NO_COLUMNS = "The table has no columns: every row of the file is empty."
NUL_IN_NAMES = "NUL characters (U+0000) were removed from column names."
NUL_IN_VALUES = (
    "Some values hold NUL characters (U+0000): the dataset keeps them as they are; this "
    "profile shows each one as U+FFFD (\ufffd)."
)


@dataclass
class ReadNotes:
    skipped_rows: int = 0
    widened: dict[str, str] = field(default_factory=dict)
    nul_in_names: bool = False
    read: list[str] = field(default_factory=list)  # what reading the file found (a title line)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.skipped_rows:
            out["skipped_rows"] = self.skipped_rows
        if self.widened:
            out["widened_columns"] = self.widened
        found = [*self.read, *([NUL_IN_NAMES] if self.nul_in_names else [])]
        if found:
            out["notes"] = found
        return out


def _flatten(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nested objects become `parent.child` columns: what an analyst would expect."""
    if not any(pa.types.is_struct(f.type) for f in batch.schema):
        return batch
    table = pa.Table.from_batches([batch])
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table.combine_chunks().to_batches()[0] if table.num_rows else _empty(table.schema)


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def _renamed(batches: Iterator[pa.RecordBatch], notes: ReadNotes) -> Iterator[pa.RecordBatch]:
    names: list[str] | None = None
    for batch in batches:
        batch = _flatten(batch)
        if names is None:
            notes.nul_in_names |= any("\x00" in name for name in batch.schema.names)
            names = clean_column_names(batch.schema.names)
        if batch.schema.names != names:
            batch = pa.RecordBatch.from_arrays(batch.columns, names=names)
        yield batch


def _csv_batches(
    table: SourceTable, column_types: dict[str, pa.DataType], notes: ReadNotes
) -> Iterator[pa.RecordBatch]:
    assert table.columns is not None
    bad_rows = 0
    # dates written as text (sniff.py found their format): read as dates, unless a value
    # did not parse and the column was widened back to text (then it stays text)
    formats = {c: f for c, f in table.extra.get("dates", {}).items() if c not in notes.widened}
    types = {**{c: pa.timestamp("s") for c in formats}, **column_types}

    def on_invalid(row: Any) -> str:
        nonlocal bad_rows
        bad_rows += 1
        return "skip" if bad_rows <= MAX_BAD_ROWS else "error"

    reader = pacsv.open_csv(
        table.path,
        read_options=pacsv.ReadOptions(
            encoding=table.encoding or "utf8",
            block_size=BLOCK_BYTES,
            column_names=table.columns,
            skip_rows=table.skip_rows,
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=table.delimiter or ",",
            newlines_in_values=table.newlines_in_values,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            timestamp_parsers=[pacsv.ISO8601, *dict.fromkeys(formats.values())],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    yield from reader
    notes.skipped_rows = bad_rows
    notes.read.extend(dates.read_note(c, f) for c, f in formats.items())


def _widen(message: str, schema: pa.Schema | None, names: list[str]) -> tuple[str, pa.DataType]:
    """From Arrow's "In CSV column #3: ... conversion error to int64", the column to widen
    and its next type: integer -> float64 -> string, anything else -> string."""
    match = _CSV_COLUMN.search(message)
    if match is None:
        raise TableError(message)
    name = names[int(match.group(1))]
    current = schema.field(name).type if schema is not None and name in schema.names else None
    if current is not None and pa.types.is_integer(current) and "to int" in message:
        return name, pa.float64()
    return name, pa.string()


def _read_csv(
    table: SourceTable, column_types: dict[str, pa.DataType], notes: ReadNotes
) -> Iterator[pa.RecordBatch]:
    """Arrow infers column types from the first block; when a later block disagrees (an
    integer column with "n/a" in row 3 million), the column is widened in `column_types`
    and `_Restart` tells the caller to read the file again."""
    assert table.columns is not None
    schema: pa.Schema | None = None
    try:
        for batch in _csv_batches(table, column_types, notes):
            schema = batch.schema
            yield batch
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "conversion error" not in message:
            raise TableError(_friendly(message)) from None
        name, wider = _widen(message, schema, table.columns)
        if column_types.get(name) == wider:
            raise TableError(_friendly(message)) from None
        column_types[name] = wider
        notes.widened[name] = str(wider)
        raise _Restart from None


class _Restart(Exception):
    """A column was widened after batches were written: the writer must start over."""


def _friendly(message: str) -> str:
    message = message.replace("CSV parse error: ", "")
    if "Expected" in message and "columns, got" in message:
        return f"More than {MAX_BAD_ROWS} rows have the wrong number of fields ({message})"
    return message[:500]


def _check_shape(table: SourceTable, lines: bool, max_columns: int) -> None:
    """Arrow's JSON reader overflows its stack on values nested thousands of levels deep
    and aborts on a line of a million keys (the converter died, and the user read that it
    ran out of memory); Python's recurses too. Neither sees such a file."""
    pieces = file_pieces(table.path, _python_encoding(table.encoding))
    try:
        check_json(pieces, lines=lines, max_keys=max_columns)
    except TooDeep as exc:
        raise TableError(too_deep_message("The file", exc.limit)) from None
    except TooWide as exc:
        raise TableError(too_wide_message("The file", exc.limit)) from None


def _read_jsonl(table: SourceTable, max_columns: int) -> Iterator[pa.RecordBatch]:
    _check_shape(table, lines=True, max_columns=max_columns)
    path = _as_utf8(table)
    try:
        reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=BLOCK_BYTES))
        yield from reader
    except pa.ArrowInvalid as exc:
        raise TableError(f"Invalid JSON Lines: {str(exc)[:300]}") from None
    finally:
        if path != table.path:
            Path(path).unlink(missing_ok=True)


def _as_utf8(table: SourceTable) -> str:
    """Arrow reads JSON in UTF-8 only: JSON Lines in another encoding (UTF-16 from a
    Windows export, Windows-1252) is read through a UTF-8 copy beside it."""
    encoding = _python_encoding(table.encoding)
    if codecs.lookup(encoding).name in {"utf-8", "utf-8-sig", "ascii"}:
        return table.path
    copy = f"{table.path}.utf8"
    with (
        open(table.path, encoding=encoding, errors="replace", newline="") as source,
        open(copy, "w", encoding="utf-8", newline="") as sink,
    ):
        while chunk := source.read(BLOCK_BYTES // 4):
            sink.write(chunk)
    return copy


def _frame_batches(frame: Any, notes: ReadNotes | None = None) -> Iterator[pa.RecordBatch]:
    """pandas -> Arrow, turning mixed-type object columns into strings instead of failing
    (and, given `notes`, text columns that are all dates into dates: `_dates_in`)."""
    import pandas as pd

    if notes is not None:
        _dates_in(frame, notes)
    for name in frame.columns:
        if frame[name].dtype == object:
            try:
                pa.array(frame[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # (ints over 64 bits)
                frame[name] = frame[name].map(lambda v: None if pd.isna(v) else str(v))
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    yield from arrow.to_batches(max_chunksize=65_536)


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?Z?")


def _dates_in(frame: Any, notes: ReadNotes) -> None:
    """Text columns whose values are all dates (`dates.py`, or ISO-8601) become dates; a
    value that does not parse keeps the whole column as text."""
    import pandas as pd

    for name in frame.columns:
        values = frame[name].dropna()
        sample = list(values.head(200))
        if not sample or not all(isinstance(v, str) for v in sample):
            continue
        iso = all(_ISO_DATE.fullmatch(v.strip()) for v in sample)
        fmt = "ISO8601" if iso else dates.detect(sample)
        if fmt == dates.AMBIGUOUS:
            notes.read.append(dates.ambiguous_note(str(name)))
            continue
        if fmt is None:
            continue
        try:
            frame[name] = pd.to_datetime(frame[name], format=fmt)
        except (ValueError, TypeError, OverflowError):
            continue
        notes.read.append(dates.read_note(str(name), "%Y-%m-%d" if iso else fmt))


def _read_json_document(
    table: SourceTable, notes: ReadNotes, max_columns: int
) -> Iterator[pa.RecordBatch]:
    import pandas as pd

    _check_shape(table, lines=False, max_columns=max_columns)
    with open(table.path, encoding=_python_encoding(table.encoding)) as fh:
        try:
            document = json.load(fh)
        except (ValueError, RecursionError) as exc:
            raise TableError(f"Invalid JSON: {exc}") from None
    rows = records_of(document, Path(table.path).name)
    del document
    check_width(rows, max_columns, "The file")
    try:  # pandas keeps its text in Arrow, which holds UTF-8 only
        frame = pd.json_normalize(rows)
        if not len(frame.columns):
            raise TableError(NO_COLUMNS)
        raw_names = [str(c) for c in frame.columns]
        notes.nul_in_names |= any("\x00" in name for name in raw_names)
        frame.columns = clean_column_names(raw_names)
        yield from _frame_batches(frame, notes)
    except UnicodeEncodeError:
        raise TableError(
            "The file holds text that is not valid Unicode (an escaped lone surrogate such "
            'as "\\ud800"); correct or remove it and upload the file again.'
        ) from None


def _python_encoding(encoding: str | None) -> str:
    return "utf-8-sig" if encoding in (None, "utf8") else encoding


def _read_excel(table: SourceTable) -> Iterator[pa.RecordBatch]:
    import pandas as pd

    engine: Literal["xlrd", "openpyxl"] = "xlrd" if table.format == "xls" else "openpyxl"
    # By position when the sheet's name could not be stored as it is (see sniff.py)
    sheet = table.extra.get("sheet_index", table.sheet_name or 0)
    frame = pd.read_excel(table.path, sheet_name=sheet, engine=engine, header=0)
    # pandas mangles duplicate headers its own way ("x.1"); use the names the upload showed.
    names = table.columns or []
    frame.columns = (
        names if len(names) == len(frame.columns) else clean_column_names(list(frame.columns))
    )
    frame = frame.dropna(how="all").dropna(axis=1, how="all")
    if frame.empty:
        raise TableError(f"Sheet '{table.sheet_name}' has a header but no data rows.")
    yield from _frame_batches(frame)


def _read_parquet(table: SourceTable) -> Iterator[pa.RecordBatch]:
    try:
        yield from pq.ParquetFile(table.path).iter_batches(batch_size=65_536)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableError(f"Unreadable Parquet file: {str(exc)[:300]}") from None


def batches_of(
    table: SourceTable,
    column_types: dict[str, pa.DataType],
    notes: ReadNotes,
    max_columns: int = MAX_COLUMNS,
) -> Iterator[pa.RecordBatch]:
    fmt = table.format
    # (sniff.py cleaned the names of CSV and Excel headers; it says when NUL went)
    notes.nul_in_names |= bool(table.extra.get("nul_in_names"))
    notes.read.extend(str(n) for n in table.extra.get("notes", []) if n not in notes.read)
    if fmt in {"csv", "tsv"}:
        return _read_csv(table, column_types, notes)
    if fmt == "jsonl":
        return _renamed(_read_jsonl(table, max_columns), notes)
    if fmt == "json":
        return _renamed(_read_json_document(table, notes, max_columns), notes)
    if fmt in {"xlsx", "xls"}:
        return _renamed(_read_excel(table), notes)
    if fmt == "parquet":
        return _renamed(_read_parquet(table), notes)
    raise TableError(f"unknown source format {fmt!r}")


# --- one table ----------------------------------------------------------------------------------


def convert_table(
    table: SourceTable, out_dir: Path, max_columns: int = MAX_COLUMNS
) -> dict[str, Any]:
    """Write the dataset twice, in one pass: `data.parquet` (compact: downloads, previews)
    and `data.arrow` (Arrow IPC, uncompressed: the sandbox memory-maps it, so a snippet
    starts on a million rows in milliseconds). Return the profile and counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {suffix: out_dir / f"data.{suffix}" for suffix in ("parquet", "arrow")}
    partials = {suffix: out_dir / f"data.{suffix}.partial" for suffix in targets}
    column_types: dict[str, pa.DataType] = {}
    widened: dict[str, str] = {}
    # Each restart widens one column one step (integer -> float -> string).
    for _ in range(2 * max(len(table.columns or ()), 1) + 1):
        notes = ReadNotes(widened=widened)
        try:
            profiler = _write(batches_of(table, column_types, notes, max_columns), partials)
        except _Restart:
            continue
        break
    else:
        raise TableError("Could not settle on column types for this file.")
    if profiler is None or profiler.rows == 0 or not profiler.columns:
        for partial in partials.values():
            partial.unlink(missing_ok=True)
        if (profiler is None or not profiler.rows) and notes.skipped_rows:
            raise TableError(
                f"None of the rows has the header's {len(table.columns or [])} fields (all "
                f"{notes.skipped_rows} read were skipped): check that the first line is the "
                "header and that the fields are separated the same way."
            )
        raise TableError(
            NO_COLUMNS if profiler and profiler.rows else "The table has no data rows."
        )
    for suffix, partial in partials.items():
        partial.replace(targets[suffix])
    return {
        "row_count": profiler.rows,
        "column_count": len(profiler.columns),
        "stored_bytes": sum(path.stat().st_size for path in targets.values()),
        "profile": profiler.result(notes.as_dict()),
    }


def _large_offsets(schema: pa.Schema) -> pa.Schema:
    """Text and bytes with 64-bit offsets in the Arrow copy: pandas keeps its strings as
    `large_string`, so the sandbox converts those columns without copying them."""
    swaps = {pa.string(): pa.large_string(), pa.binary(): pa.large_binary()}
    return pa.schema(
        [field.with_type(swaps.get(field.type, field.type)) for field in schema],
        metadata=schema.metadata,
    )


def _without_dictionaries(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Dictionary-encoded columns (a Parquet upload's categoricals) as plain values: an
    Arrow IPC file holds one dictionary per column, and each batch may bring another."""
    if not any(pa.types.is_dictionary(field.type) for field in batch.schema):
        return batch
    fields = [
        field.with_type(field.type.value_type) if pa.types.is_dictionary(field.type) else field
        for field in batch.schema
    ]
    return batch.cast(pa.schema(fields, metadata=batch.schema.metadata))


def _write(batches: Iterator[pa.RecordBatch], paths: dict[str, Path]) -> Profiler | None:
    parquet: pq.ParquetWriter | None = None
    arrow: pa.ipc.RecordBatchFileWriter | None = None
    profiler: Profiler | None = None
    try:
        for batch in batches:
            batch = _without_dictionaries(batch)
            if parquet is None:
                parquet = pq.ParquetWriter(paths["parquet"], batch.schema, compression="zstd")
                arrow_schema = _large_offsets(batch.schema)
                arrow = pa.ipc.new_file(str(paths["arrow"]), arrow_schema)
                profiler = Profiler(batch.schema)
            if batch.num_rows == 0:
                continue
            if batch.schema != parquet.schema:
                batch = batch.cast(parquet.schema)
            parquet.write_batch(batch)
            assert arrow is not None
            assert profiler is not None
            arrow.write_batch(batch.cast(arrow_schema))
            profiler.update(batch)
    finally:
        if parquet is not None:
            parquet.close()
        if arrow is not None:
            arrow.close()
    return profiler


# --- the process entry point -------------------------------------------------------------------


def _limit_memory(megabytes: int) -> None:
    try:
        import resource

        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # not on this platform: the timeout still holds
        pass


def _peak_rss_mb() -> int | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
    except ImportError:  # pragma: no cover - not on POSIX
        return None


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    results = []
    for item in job["items"]:
        table = SourceTable(**item["table"])
        started = time.perf_counter()
        try:
            outcome = convert_table(
                table, Path(item["out_dir"]), int(job.get("max_columns", MAX_COLUMNS))
            )
            results.append({"dataset_id": item["dataset_id"], "ok": True, **outcome})
        except TableError as exc:
            results.append({"dataset_id": item["dataset_id"], "ok": False, "error": str(exc)})
        except MemoryError:
            results.append(
                {
                    "dataset_id": item["dataset_id"],
                    "ok": False,
                    "error": "The file needs more memory to convert than Quarry allows "
                    "(INGEST_MEMORY_MB); upload it as CSV or Parquet, or split it.",
                }
            )
        except Exception as exc:  # a parser failing on hostile or corrupt input
            results.append(
                {
                    "dataset_id": item["dataset_id"],
                    "ok": False,
                    "error": f"The file could not be read ({type(exc).__name__}: "
                    f"{str(exc)[:300]}).",
                }
            )
        results[-1]["seconds"] = round(time.perf_counter() - started, 3)
        results[-1]["peak_rss_mb"] = _peak_rss_mb()
        _storable(results[-1])
    return {"results": results}


def _without_nul(value: Any) -> tuple[Any, bool]:
    """`value` with every NUL character in its text (keys too) as U+FFFD, and whether
    there was one. Profiles and errors are stored in PostgreSQL, which refuses NUL in text
    and JSONB; the dataset's files keep the values as they are."""
    if isinstance(value, str):
        return (value.replace("\x00", "\ufffd"), True) if "\x00" in value else (value, False)
    if isinstance(value, list):
        pairs = [_without_nul(item) for item in value]
        return [item for item, _ in pairs], any(found for _, found in pairs)
    if isinstance(value, dict):
        out, found = {}, False
        for key, item in value.items():
            clean_key, in_key = _without_nul(key)
            out[clean_key], in_item = _without_nul(item)
            found = found or in_key or in_item
        return out, found
    return value, False


def _storable(result: dict[str, Any]) -> None:
    if "error" in result:
        result["error"] = _without_nul(result["error"])[0]
    if "profile" in result:
        result["profile"], found = _without_nul(result["profile"])
        if found:
            result["profile"].setdefault("notes", []).append(NUL_IN_VALUES)


def main() -> int:
    job = json.loads(sys.stdin.buffer.read())
    _limit_memory(int(job.get("memory_mb", 2048)))
    result = run_job(job)
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
