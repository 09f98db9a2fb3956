"""Find out what an upload really is, from its bytes (the extension is only a hint).

Runs in the request, on a bounded sample, so that junk, empty files, absurdly wide tables
and ZIP bombs get a 4xx before anything is stored. The full conversion (`convert.py`) runs
afterwards, out of the API process.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from api.errors import TooLarge, Unprocessable, UnsupportedMedia
from api.ingest import dates
from api.ingest.archive import Member, ZipLimits, extract_members, open_checked
from api.ingest.nesting import TooDeep, TooWide, check_json, too_deep_message, too_wide_message
from api.ingest.tables import (
    SourceTable,
    TableError,
    check_width,
    clean_column_names,
    records_of,
)

SAMPLE_BYTES = 1 << 20
DATA_EXTENSIONS = frozenset(
    {
        ".csv",
        ".tsv",
        ".tab",
        ".txt",
        ".json",
        ".jsonl",
        ".ndjson",
        ".xlsx",
        ".xlsm",
        ".xls",
        ".parquet",
        ".pq",
    }
)
ARCHIVE_EXTENSIONS = frozenset({".zip"})
# A single space last (scikit-learn's linnerud files): only when no other one fits.
_DELIMITERS = (",", ";", "\t", "|", " ")
_XLSX_MAX_ENTRIES = 10_000
_CONTROL_OK = frozenset("\t\n\r\f\v")
_WESTERN = frozenset({"cp1252", "latin_1", "iso8859_15"})


@dataclass(frozen=True)
class Limits:
    max_columns: int
    max_json_bytes: int
    zip: ZipLimits


def supported_extension(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in DATA_EXTENSIONS | ARCHIVE_EXTENSIONS:
        accepted = ", ".join(sorted(DATA_EXTENSIONS | ARCHIVE_EXTENSIONS))
        raise UnsupportedMedia(
            f"'{filename}' is not a supported file type. Upload one of: {accepted}."
        )
    return suffix


def inspect_upload(
    path: Path, filename: str, size: int, sha256: str, limits: Limits, name: str | None = None
) -> list[SourceTable]:
    """Every table in the upload; raises a 4xx APIError when there is none to take."""
    suffix = supported_extension(filename)
    stem = PurePosixPath(filename).stem or "dataset"
    kind = _kind(path)
    if kind == "zip":
        if suffix not in ARCHIVE_EXTENSIONS | {".xlsx", ".xlsm"}:
            raise Unprocessable(f"'{filename}' is a ZIP archive; name it .zip or .xlsx.")
        if _is_xlsx(path):
            return _inspect_xlsx(path, name or stem, size, sha256, limits)
        return _inspect_archive(path, limits, name)
    return _inspect_file(path, filename, size, sha256, limits, kind, name or stem)


def _kind(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head.startswith(b"PAR1"):
            fh.seek(-4, io.SEEK_END)
            if fh.read(4) == b"PAR1":
                return "parquet"
        if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
            return "zip"
        if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
            return "xls"
    return "text"


def _is_xlsx(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        return False
    return "[Content_Types].xml" in names and "xl/workbook.xml" in names


def _inspect_archive(path: Path, limits: Limits, name: str | None) -> list[SourceTable]:
    members = extract_members(path, path.parent, limits.zip)
    tables: list[SourceTable] = []
    for member in members:
        suffix = PurePosixPath(member.name).suffix.lower()
        nested_zip = _kind(member.path) == "zip" and not _is_xlsx(member.path)
        if suffix in ARCHIVE_EXTENSIONS or nested_zip:
            raise Unprocessable(f"'{member.name}' is an archive inside the archive; unpack it.")
        if suffix not in DATA_EXTENSIONS:
            raise UnsupportedMedia(
                f"The archive entry '{member.name}' is not a data file "
                f"({', '.join(sorted(DATA_EXTENSIONS))}); remove it from the ZIP."
            )
        tables.extend(_inspect_member(member, limits))
    if name and len(tables) == 1:
        tables[0].name = name
    _dedupe_names(tables)
    return tables


def _inspect_member(member: Member, limits: Limits) -> list[SourceTable]:
    stem = PurePosixPath(member.name.replace("\\", "/")).stem or "dataset"
    kind = _kind(member.path)
    if kind == "zip":
        found = _inspect_xlsx(member.path, stem, member.size, member.sha256, limits)
    else:
        found = _inspect_file(
            member.path, member.name, member.size, member.sha256, limits, kind, stem
        )
    for table in found:
        table.archive_member = member.name
    return found


def _dedupe_names(tables: list[SourceTable]) -> None:
    seen: Counter[str] = Counter()
    for table in tables:
        seen[table.name] += 1
        if seen[table.name] > 1:
            table.name = f"{table.name} ({seen[table.name]})"


def _inspect_file(
    path: Path, filename: str, size: int, sha256: str, limits: Limits, kind: str, name: str
) -> list[SourceTable]:
    if kind == "parquet":
        return [_inspect_parquet(path, size, sha256, limits, name)]
    if kind == "xls":
        return _inspect_xls(path, name, size, sha256, limits)
    return [_inspect_text(path, filename, size, sha256, limits, name)]


# --- text: CSV, TSV, JSON, JSON lines -----------------------------------------------------------


def detect_encoding(sample: bytes) -> str:
    """The sample's encoding: a BOM if there is one, else UTF-8 if it decodes as such, else
    the best guess of charset-normalizer. Raises if the bytes are not text at all."""
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if sample.startswith(bom):
            return name
    # UTF-16 and UTF-32 without a BOM hold NUL bytes in almost every character; a few NULs
    # in a text export are data (the converter keeps them).
    if sample.count(b"\x00") <= _tolerated_controls(len(sample)):
        try:
            sample.decode("utf-8")
            return "utf-8"
        except UnicodeDecodeError as exc:
            # The sample may end inside a multi-byte character; any other invalid byte
            # (a Latin-1 "\xfc" on the last line included) means it is not UTF-8.
            if exc.reason == "unexpected end of data" and exc.end == len(sample):
                return "utf-8"
    from charset_normalizer import from_bytes

    matches = from_bytes(sample[:SAMPLE_BYTES])
    best = matches.best()
    if best is None or best.encoding is None:
        raise Unprocessable("The file is not text in any encoding Quarry recognises.")
    # On short samples several single-byte encodings fit equally well; Windows-1252 (a
    # superset of Latin-1) is by far the most common source of non-UTF-8 data files, so it
    # wins any near-tie.
    for match in matches:
        # A match stands for every encoding that decodes the sample to the same text.
        fits = {match.encoding, *match.could_be_from_charset}
        if fits & _WESTERN and match.chaos <= best.chaos + 0.02:
            return "cp1252" if _fits_cp1252(sample) else "latin-1"
    return str(best.encoding)


def _fits_cp1252(sample: bytes) -> bool:
    try:
        sample.decode("cp1252")
    except UnicodeDecodeError:
        return False
    return True


def _tolerated_controls(length: int) -> int:
    return max(8, length // 1000)


def _decode_sample(sample: bytes, encoding: str) -> str:
    text = sample.decode(encoding, errors="ignore")
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in _CONTROL_OK)
    if controls > _tolerated_controls(len(text)):
        raise Unprocessable(
            "The file does not look like a text data file (it contains binary data)."
        )
    return text


def _inspect_text(
    path: Path, filename: str, size: int, sha256: str, limits: Limits, name: str
) -> SourceTable:
    with open(path, "rb") as fh:
        sample = fh.read(SAMPLE_BYTES)
    if not sample.strip():
        raise Unprocessable(f"'{filename}' is empty.")
    encoding = detect_encoding(sample)
    text = _decode_sample(sample, encoding).lstrip("\ufeff")
    complete = size <= SAMPLE_BYTES
    stripped = text.lstrip()
    if not stripped:
        raise Unprocessable(f"'{filename}' contains only whitespace.")
    table = SourceTable(
        name=name,
        format="csv",
        path=str(path),
        size=size,
        sha256=sha256,
        encoding=_arrow_encoding(encoding),
    )
    if stripped[0] in "[{":
        table.format = _json_flavour(stripped, complete, size, limits, filename)
        return table
    if PurePosixPath(filename).suffix.lower() in _JSON_EXTENSIONS:
        _refuse_json_scalar(stripped, filename)
    delimiter_hint = "\t" if PurePosixPath(filename).suffix.lower() in {".tsv", ".tab"} else None
    sniffed = _sniff_csv(text, complete, delimiter_hint, filename)
    header = sniffed.header
    if len(header) > limits.max_columns:
        raise Unprocessable(
            f"'{filename}' has {len(header)} columns; Quarry accepts at most "
            f"{limits.max_columns} (MAX_DATASET_COLUMNS)."
        )
    table.format = "tsv" if sniffed.delimiter == "\t" else "csv"
    table.delimiter = sniffed.delimiter
    table.newlines_in_values = sniffed.newlines
    notes = []
    if sniffed.title is not None:
        first = sniffed.delimiter.join(sniffed.title)[:120]
        notes.append(
            f"The first line ({first!r}) has fewer fields than the rows after it: it was "
            "read as a title and skipped."
        )
    if sniffed.headerless:
        table.columns = [f"column_{i + 1}" for i in range(len(header))]
        table.skip_rows = 1 if sniffed.title is not None else 0
        notes.append(
            f"The file has no header row (its first row is numbers): the columns are named "
            f"column_1 to column_{len(header)}."
        )
        table.extra = {}
    else:
        table.columns = clean_column_names(header)
        table.skip_rows = 2 if sniffed.title is not None else 1
        table.extra = _nul_notes(header)
    found = dates.columns(table.columns, sniffed.rows)
    formats = {c: f for c, f in found.items() if f != dates.AMBIGUOUS}
    if formats:
        table.extra["dates"] = formats
    notes += [dates.ambiguous_note(c) for c, f in found.items() if f == dates.AMBIGUOUS]
    if notes:
        table.extra["notes"] = notes
    return table


_JSON_EXTENSIONS = frozenset({".json", ".jsonl", ".ndjson"})


def _refuse_json_scalar(text: str, filename: str) -> None:
    """A .json file holding `null`, a number or a string is JSON, but no table (read as
    CSV, it used to be refused for having "a header row but no data rows")."""
    first_line = text.partition("\n")[0].strip()
    try:
        value = json.loads(first_line)
    except (ValueError, RecursionError):
        return  # not JSON at all: perhaps a CSV with the wrong extension
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise Unprocessable(
        f"'{filename}' holds a single JSON value ({shown}), not a table: expected an array "
        "of objects, an object of equal-length arrays, or JSON Lines (one object per line)."
    )


def _arrow_encoding(encoding: str) -> str:
    # Arrow skips a UTF-8 BOM itself and reads UTF-8 natively; other encodings are
    # transcoded through Python's codecs.
    return "utf8" if encoding in {"utf-8", "utf-8-sig", "ascii"} else encoding


def _check_shape(text: str, lines: bool, filename: str, limits: Limits) -> None:
    """Before any parser recurses into it (see api/ingest/nesting.py)."""
    try:
        check_json(
            [text.encode("utf-8", "surrogatepass")], lines=lines, max_keys=limits.max_columns
        )
    except TooDeep as exc:
        raise Unprocessable(too_deep_message(f"'{filename}'", exc.limit)) from None
    except TooWide as exc:
        raise Unprocessable(too_wide_message(f"'{filename}'", exc.limit)) from None


def _json_flavour(text: str, complete: bool, size: int, limits: Limits, filename: str) -> str:
    first_line, _, rest = text.partition("\n")
    first_line = first_line.strip()
    if text[0] == "{" and first_line.endswith("}"):
        _check_shape(first_line, False, filename, limits)
        try:
            first = json.loads(first_line)
        except (ValueError, RecursionError):
            first = None
        # One object per line is JSON Lines, unless the only line is an object of columns.
        columns_doc = (
            isinstance(first, dict)
            and not rest.strip()
            and bool(first)
            and all(isinstance(v, list) for v in first.values())
        )
        if isinstance(first, dict) and not columns_doc:
            _check_shape(text, True, filename, limits)
            return "jsonl"
    _check_shape(text, False, filename, limits)
    if size > limits.max_json_bytes:
        raise TooLarge(
            f"'{filename}' is a single JSON document over "
            f"{limits.max_json_bytes // (1 << 20)} MB; upload it as JSON Lines (one object "
            "per line) or CSV instead."
        )
    if complete:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise Unprocessable(f"'{filename}' is not valid JSON ({exc}).") from None
        try:
            check_width(records_of(document, filename), limits.max_columns, f"'{filename}'")
        except TableError as exc:
            raise Unprocessable(str(exc)) from None
    return "json"


@dataclass
class _Sniffed:
    header: list[str]
    delimiter: str
    newlines: bool
    title: list[str] | None = None  # a first line with fewer fields than the rows: skipped
    headerless: bool = False  # the first row is data (all numbers): columns get names
    rows: list[list[str]] = field(default_factory=list)  # data rows of the sample


def _sniff_csv(text: str, complete: bool, hint: str | None, filename: str) -> _Sniffed:
    if not complete:
        # Drop the last line: the sample may have cut it in half.
        cut = text.rfind("\n")
        if cut <= 0:
            raise Unprocessable(
                f"The first line of '{filename}' is longer than 1 MB; is it a data file?"
            )
        text = text[:cut]
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise Unprocessable(f"The first line of '{filename}' is empty; expected a header row.")

    # The delimiter that splits the header and the rows into the same number of fields most
    # consistently; ties go to the extension's hint, then to the usual order.
    scored: list[tuple[float, int, str]] = []
    candidates = (hint, *_DELIMITERS) if hint else _DELIMITERS
    for order, candidate in enumerate(dict.fromkeys(candidates)):
        assert candidate is not None
        sample = [r for r in _rows(text, candidate, 200) if r]
        counts = [len(r) for r in sample]
        if not counts:
            continue
        if candidate == " " and not _space_separated(sample):
            continue
        mode, hits = Counter(counts).most_common(1)[0]
        titled = len(counts) > 2 and counts[0] < mode == counts[1]
        if mode >= 2 and (counts[0] == mode or titled):
            scored.append((round(hits / len(counts), 2), -order, candidate))
    delimiter = max(scored)[2] if scored else (hint or ",")

    rows = list(_rows(text, delimiter, 200))
    title = None
    widths = Counter(len(r) for r in rows[1:] if r)
    if (
        len(rows) > 2
        and widths
        and len(rows[0]) < len(rows[1]) == widths.most_common(1)[0][0]
        and (len(rows[0]) == 1 or any(_NUMBER.fullmatch(cell.strip()) for cell in rows[0]))
    ):
        # a title ("Sales export 2024") or a metadata line with counts (scikit-learn's
        # "178,13,class_0,class_1,class_2"); a short header of words ("a,b") is a header
        title = rows.pop(0)
    header = rows[0] if rows else []
    headerless = bool(header) and all(_NUMBER.fullmatch(cell.strip()) for cell in header)
    data_rows = [r for r in rows[0 if headerless else 1 :] if any(cell.strip() for cell in r)]
    if complete and not data_rows:
        raise Unprocessable(f"'{filename}' has a header row but no data rows.")
    newlines = any("\n" in cell or "\r" in cell for row in rows for cell in row)
    return _Sniffed(header, delimiter, newlines, title, headerless, data_rows)


def _space_separated(rows: list[list[str]]) -> bool:
    """Fields separated by one space (scikit-learn's linnerud files): never an empty field
    (columns aligned with runs of spaces are something else), and a number in every data
    row (a one-column file of two-word names is not two columns)."""
    if any("" in r for r in rows):
        return False
    return all(any(_NUMBER.fullmatch(cell) for cell in r) for r in rows[1:])


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _rows(text: str, delimiter: str, limit: int) -> Any:
    # universal newlines: a file from Excel for Mac ends its lines with "\r" alone
    reader = csv.reader(io.StringIO(text, newline=None), delimiter=delimiter)
    try:
        for i, row in enumerate(reader):
            if i >= limit:
                return
            yield row
    except csv.Error:
        return


# --- binary formats -----------------------------------------------------------------------------


def _inspect_parquet(path: Path, size: int, sha256: str, limits: Limits, name: str) -> SourceTable:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:
        if "too deeply nested" in str(exc):  # Arrow's own limit, before it recurses
            raise Unprocessable(
                "The Parquet file's schema is nested too deeply for Quarry to read (Arrow "
                "reads at most 100 levels); flatten the nested columns and upload it again."
            ) from None
        raise Unprocessable("The file is not a valid Parquet file.") from None
    if meta.num_columns > limits.max_columns:
        raise Unprocessable(
            f"The Parquet file has {meta.num_columns} columns; Quarry accepts at most "
            f"{limits.max_columns} (MAX_DATASET_COLUMNS)."
        )
    return SourceTable(name=name, format="parquet", path=str(path), size=size, sha256=sha256)


def _inspect_xlsx(
    path: Path, name: str, size: int, sha256: str, limits: Limits
) -> list[SourceTable]:
    import openpyxl

    zip_limits = ZipLimits(
        max(limits.zip.max_entries, _XLSX_MAX_ENTRIES),
        limits.zip.max_uncompressed,
        limits.zip.max_ratio,
    )
    open_checked(path, zip_limits, label="workbook").close()
    # A file object, not the path: openpyxl refuses paths without an Excel extension, and
    # uploads are staged under generated names.
    handle = open(path, "rb")  # noqa: SIM115  (closed below, after the read-only workbook)
    try:
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    except Exception:
        handle.close()
        raise Unprocessable("The workbook cannot be read as an Excel .xlsx file.") from None
    tables: list[SourceTable] = []
    try:
        sheets = workbook.sheetnames
        for sheet in sheets:
            worksheet = workbook[sheet]
            if not hasattr(worksheet, "iter_rows"):
                continue  # chart sheets
            first = next(worksheet.iter_rows(max_row=1, values_only=True), None)
            header = _trim(list(first or ()))
            if not header:
                continue
            if len(header) > limits.max_columns:
                raise Unprocessable(
                    f"Sheet '{sheet}' has {len(header)} columns; Quarry accepts at most "
                    f"{limits.max_columns} (MAX_DATASET_COLUMNS)."
                )
            tables.append(
                SourceTable(
                    name=name if len(sheets) == 1 else f"{name} - {sheet}",
                    format="xlsx",
                    path=str(path),
                    size=size,
                    sha256=sha256,
                    sheet_name=sheet,
                    columns=clean_column_names(["" if v is None else str(v) for v in header]),
                )
            )
    finally:
        workbook.close()
        handle.close()
    if not tables:
        raise Unprocessable("The workbook has no sheet with data in it.")
    return tables


def _nul_notes(header: list[str]) -> dict[str, Any]:
    """For the converter's profile: clean_column_names drops NUL characters from names."""
    return {"nul_in_names": True} if any("\x00" in name for name in header) else {}


def _trim(values: list[Any]) -> list[Any]:
    while values and (values[-1] is None or str(values[-1]).strip() == ""):
        values.pop()
    return values


def _inspect_xls(
    path: Path, name: str, size: int, sha256: str, limits: Limits
) -> list[SourceTable]:
    import xlrd

    try:
        book = xlrd.open_workbook(path, on_demand=True)
    except Exception:
        raise Unprocessable("The file cannot be read as an Excel .xls workbook.") from None
    tables: list[SourceTable] = []
    try:
        names = book.sheet_names()
        for index, raw_name in enumerate(names):
            sheet = book.sheet_by_index(index)
            if sheet.nrows == 0 or sheet.ncols == 0:
                continue
            # A BIFF sheet name may hold NUL, which PostgreSQL cannot store: the name
            # shown goes without it, and the converter finds the sheet by its position.
            sheet_name = raw_name.replace("\x00", "")
            if sheet.ncols > limits.max_columns:
                raise Unprocessable(
                    f"Sheet '{sheet_name}' has {sheet.ncols} columns; Quarry accepts at most "
                    f"{limits.max_columns} (MAX_DATASET_COLUMNS)."
                )
            header = ["" if v is None else str(v) for v in sheet.row_values(0)]
            tables.append(
                SourceTable(
                    name=name if len(names) == 1 else f"{name} - {sheet_name}",
                    format="xls",
                    path=str(path),
                    size=size,
                    sha256=sha256,
                    sheet_name=sheet_name,
                    columns=clean_column_names(header),
                    extra=_nul_notes(header)
                    | ({"sheet_index": index} if sheet_name != raw_name else {}),
                )
            )
    finally:
        book.release_resources()
    if not tables:
        raise Unprocessable("The workbook has no sheet with data in it.")
    return tables
