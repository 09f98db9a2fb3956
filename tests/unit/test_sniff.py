"""Upload inspection (api/ingest/sniff.py): what a file really is, from its bytes, checked
in the request before anything is stored."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from api.errors import APIError
from api.ingest.sniff import (
    SAMPLE_BYTES,
    Limits,
    _sniff_csv,
    detect_encoding,
    inspect_upload,
    supported_extension,
)
from api.ingest.tables import SourceTable, clean_column_names, records_of
from tests.builders import LIMITS, MB, parquet_bytes, xlsx_bytes, zip_bytes

CSV = b"age,income\n25,30000\n30,45000\n"


def inspect(
    tmp_path: Path,
    content: bytes,
    filename: str,
    limits: Limits = LIMITS,
    name: str | None = None,
) -> list[SourceTable]:
    path = tmp_path / "upload"
    path.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    return inspect_upload(path, filename, len(content), digest, limits, name)


def only(tmp_path: Path, content: bytes, filename: str, **kwargs: Any) -> SourceTable:
    [table] = inspect(tmp_path, content, filename, **kwargs)
    return table


def refused(tmp_path: Path, content: bytes, filename: str, **kwargs: Any) -> APIError:
    with pytest.raises(APIError) as caught:
        inspect(tmp_path, content, filename, **kwargs)
    return caught.value


# --- extensions -------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["report.pdf", "data.xml", "noextension", "archive.tar.gz"])
def test_unsupported_extensions_are_415(tmp_path: Path, filename: str) -> None:
    error = refused(tmp_path, CSV, filename)

    assert (error.status_code, error.code) == (415, "unsupported_media_type")
    assert error.message == (
        f"'{filename}' is not a supported file type. Upload one of: .csv, .json, .jsonl, "
        ".ndjson, .parquet, .pq, .tab, .tsv, .txt, .xls, .xlsm, .xlsx, .zip."
    )


def test_extension_matching_ignores_case() -> None:
    assert supported_extension("DATA.CSV") == ".csv"
    assert supported_extension("Book.XLSX") == ".xlsx"


# --- CSV: delimiters, header, counts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "delimiter", "fmt"),
    [
        (b"a,b,c\n1,2,3\n4,5,6\n", ",", "csv"),
        (b"a;b;c\n1;2;3\n4;5;6\n", ";", "csv"),
        (b"a\tb\tc\n1\t2\t3\n4\t5\t6\n", "\t", "tsv"),
        (b"a|b|c\n1|2|3\n4|5|6\n", "|", "csv"),
    ],
)
def test_delimiter_is_found_from_the_content(
    tmp_path: Path, content: bytes, delimiter: str, fmt: str
) -> None:
    table = only(tmp_path, content, "data.csv")

    assert (table.format, table.delimiter, table.columns) == (fmt, delimiter, ["a", "b", "c"])
    assert table.name == "data"
    assert table.encoding == "utf8"
    assert table.size == len(content)
    assert table.sha256 == hashlib.sha256(content).hexdigest()
    assert table.archive_member is None


def test_semicolons_with_european_decimal_commas(tmp_path: Path) -> None:
    content = b"produkt;preis;menge\nApfel;1,50;3\nBirne;2,25;4\nKirsche;10,00;12\n"

    table = only(tmp_path, content, "preise.csv")

    assert table.delimiter == ";"
    assert table.columns == ["produkt", "preis", "menge"]


def test_tsv_extension_breaks_a_tie_in_favour_of_tabs(tmp_path: Path) -> None:
    # Commas and tabs both split every line in two: the extension decides.
    content = b"id,name\tnotes\n1,Ada\tmath\n2,Grace\tships\n"

    as_tsv = only(tmp_path, content, "people.tsv")
    as_csv = only(tmp_path, content, "people.csv")

    assert (as_tsv.format, as_tsv.delimiter, as_tsv.columns) == ("tsv", "\t", ["id,name", "notes"])
    assert (as_csv.format, as_csv.delimiter, as_csv.columns) == ("csv", ",", ["id", "name\tnotes"])


def test_tab_extension_is_also_a_tab_hint(tmp_path: Path) -> None:
    table = only(tmp_path, b"x\ty\n1\t2\n", "values.tab")

    assert (table.format, table.delimiter) == ("tsv", "\t")


def test_duplicate_and_blank_header_names_are_cleaned(tmp_path: Path) -> None:
    content = b"id, name ,,id,name,\n1,a,b,2,c,d\n"

    table = only(tmp_path, content, "messy.csv")

    assert table.columns == ["id", "name", "column_3", "id_2", "name_2", "column_6"]


def test_quoted_newlines_are_noticed(tmp_path: Path) -> None:
    content = b'id,comment\n1,"first line\nsecond line"\n2,plain\n'

    table = only(tmp_path, content, "comments.csv")

    assert table.columns == ["id", "comment"]
    assert table.newlines_in_values is True
    assert only(tmp_path, CSV, "plain.csv").newlines_in_values is False


def test_name_field_overrides_the_file_stem(tmp_path: Path) -> None:
    table = only(tmp_path, CSV, "census.csv", name="Census 2024")

    assert table.name == "Census 2024"


def test_header_only_csv_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, b"age,income,education\n", "census.csv")

    assert (error.status_code, error.message) == (
        422,
        "'census.csv' has a header row but no data rows.",
    )


def test_header_followed_by_blank_lines_has_no_data_rows(tmp_path: Path) -> None:
    error = refused(tmp_path, b"age,income\n\n,\n \n", "census.csv")

    assert error.message == "'census.csv' has a header row but no data rows."


def test_a_blank_first_line_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, b"\n\na,b\n1,2\n", "gap.csv")

    assert error.message == "The first line of 'gap.csv' is empty; expected a header row."


@pytest.mark.parametrize("content", [b"", b"   \n\n\t\r\n  "])
def test_empty_or_whitespace_file_is_refused(tmp_path: Path, content: bytes) -> None:
    error = refused(tmp_path, content, "blank.csv")

    assert (error.status_code, error.message) == (422, "'blank.csv' is empty.")


def test_unicode_whitespace_only_file_is_refused(tmp_path: Path) -> None:
    content = "\ufeff\u3000\u00a0\n \n".encode()

    error = refused(tmp_path, content, "blank.csv")

    assert (error.status_code, error.message) == (422, "'blank.csv' contains only whitespace.")


def test_a_header_line_longer_than_the_sample_is_refused(tmp_path: Path) -> None:
    content = b"a" * (SAMPLE_BYTES + 10) + b"\n1\n"

    error = refused(tmp_path, content, "long.csv")

    assert (error.status_code, error.message) == (
        422,
        "The first line of 'long.csv' is longer than 1 MB; is it a data file?",
    )


def test_a_file_larger_than_the_sample_is_sniffed_from_its_complete_lines(
    tmp_path: Path,
) -> None:
    # 1.5 MB: the sample ends mid-row, and the header-only check cannot apply.
    row = b"1;2;3\n"
    content = b"x;y;z\n" + row * (3 * MB // 2 // len(row))
    assert len(content) > SAMPLE_BYTES

    table = only(tmp_path, content, "big.csv")

    assert (table.delimiter, table.columns) == (";", ["x", "y", "z"])


def test_a_csv_with_100000_columns_is_refused_naming_the_limit(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(100_000))
    row = ",".join("1" for _ in range(100_000))
    content = f"{header}\n{row}\n".encode()

    error = refused(tmp_path, content, "wide.csv")

    assert (error.status_code, error.message) == (
        422,
        "'wide.csv' has 100000 columns; Quarry accepts at most 2000 (MAX_DATASET_COLUMNS).",
    )


def test_column_limit_is_inclusive(tmp_path: Path) -> None:
    limits = Limits(max_columns=3, max_json_bytes=MB, zip=LIMITS.zip)

    assert only(tmp_path, b"a,b,c\n1,2,3\n", "ok.csv", limits=limits).columns == ["a", "b", "c"]
    error = refused(tmp_path, b"a,b,c,d\n1,2,3,4\n", "wide.csv", limits=limits)
    assert error.message == (
        "'wide.csv' has 4 columns; Quarry accepts at most 3 (MAX_DATASET_COLUMNS)."
    )


def test_sniff_csv_drops_the_cut_last_line_of_an_incomplete_sample() -> None:
    text = "a|b\n1|2\n3|4\n5|"

    found = _sniff_csv(text, False, None, "x.csv")

    assert (found.header, found.delimiter, found.newlines) == (["a", "b"], "|", False)


def test_sniff_csv_single_column_falls_back_to_the_hint_or_comma() -> None:
    plain = _sniff_csv("value\n1\n2\n", True, None, "x.csv")
    assert (plain.header, plain.delimiter) == (["value"], ",")
    hinted = _sniff_csv("value\n1\n2\n", True, "\t", "x.tsv")
    assert (hinted.header, hinted.delimiter) == (["value"], "\t")


def test_sniff_csv_prefers_the_delimiter_consistent_across_rows() -> None:
    # Commas appear in the values, but only semicolons split every row alike.
    text = "name;address\nAda;1 Main St, London\nGrace;2 Navy Rd, Arlington, VA\n"

    found = _sniff_csv(text, True, None, "x.csv")

    assert (found.header, found.delimiter) == (["name", "address"], ";")


# --- encodings --------------------------------------------------------------------------------

ACCENTED = "prénom,ville,note\nRené,Zürich,très bien\nJosé,Genève,sehr gut\nAnaïs,Lyon,bien\n"


def test_utf8_is_read_as_utf8(tmp_path: Path) -> None:
    content = "名前,都市\n太郎,東京\nRené,Zürich\n".encode()

    table = only(tmp_path, content, "utf8.csv")

    assert (table.encoding, table.columns) == ("utf8", ["名前", "都市"])
    assert detect_encoding(content) == "utf-8"


def test_utf8_bom_is_skipped(tmp_path: Path) -> None:
    content = b"\xef\xbb\xbf" + ACCENTED.encode()

    table = only(tmp_path, content, "bom.csv")

    assert detect_encoding(content) == "utf-8-sig"
    assert table.encoding == "utf8"  # Arrow skips the BOM itself
    assert table.columns == ["prénom", "ville", "note"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom(tmp_path: Path, codec: str) -> None:
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[codec]
    content = bom + ACCENTED.encode(codec)

    table = only(tmp_path, content, "utf16.csv")

    assert detect_encoding(content) == "utf-16"
    assert table.encoding == "utf-16"
    assert (table.delimiter, table.columns) == (",", ["prénom", "ville", "note"])


@pytest.mark.parametrize("codec", ["cp1252", "latin-1"])
def test_western_single_byte_text_comes_back_right(tmp_path: Path, codec: str) -> None:
    content = ACCENTED.encode(codec)

    table = only(tmp_path, content, "legacy.csv")

    assert table.encoding == "cp1252"  # a superset of Latin-1 for these bytes
    assert table.columns == ["prénom", "ville", "note"]
    assert content.decode(table.encoding) == ACCENTED


def test_short_german_cp1252_header_is_not_mistaken_for_an_exotic_code_page(
    tmp_path: Path,
) -> None:
    content = "Größe;Maß\n1;2\n".encode("cp1252")

    table = only(tmp_path, content, "masse.csv")

    assert table.encoding == "cp1252"
    assert table.columns == ["Größe", "Maß"]


def test_a_single_byte_accent_at_the_very_end_is_not_taken_for_cut_utf8(
    tmp_path: Path,
) -> None:
    # Only the last value has an accent: the bytes are invalid UTF-8, not a cut sample.
    content = "city,country\nLima,Peru\nBogota,Colombia\nSao Paulo,Brasil\nX,Perú\n".encode(
        "cp1252"
    )

    assert detect_encoding(content) == "cp1252"


def test_a_utf8_sample_cut_inside_a_character_is_still_utf8() -> None:
    text = ("prix,€\n" * 10).encode()
    assert detect_encoding(text[:-2]) == "utf-8"  # ends with the first byte of "€"
    assert detect_encoding(text[:-3]) == "utf-8"  # ends with two of its three bytes


def test_cp1252_only_characters_select_cp1252(tmp_path: Path) -> None:
    content = (
        "name,price,note\n"
        "Café,5 €,“quoted”\n"
        "Thé,3 €,naïve \u2013 fine\n"
        "Crème brûlée,7 €,très bon\n"
        "Süßigkeit,2 €,lecker\n"
    ).encode("cp1252")

    table = only(tmp_path, content, "prices.csv")

    assert table.encoding == "cp1252"
    assert table.columns == ["name", "price", "note"]


NOT_TEXT = "The file is not text in any encoding Quarry recognises."
BINARY = "The file does not look like a text data file (it contains binary data)."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (random.Random(0).randbytes(5000), NOT_TEXT),
        (b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(3000), NOT_TEXT),
        (b"\x7fELF\x02\x01\x01" + bytes(2000), BINARY),
        (b"\x00\x01\x02\x03" * 1000, BINARY),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + random.Random(3).randbytes(2000), NOT_TEXT),
    ],
    ids=["random", "png", "elf", "nul-heavy", "jpeg"],
)
def test_binary_junk_named_csv_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    error = refused(tmp_path, content, "data.csv")

    assert (error.status_code, error.code, error.message) == (422, "validation_error", message)


def test_text_full_of_control_characters_is_refused(tmp_path: Path) -> None:
    content = b"a,b\n" + b"\x01\x02,\x03\x04\n" * 50

    error = refused(tmp_path, content, "data.csv")

    assert error.message == BINARY


# --- JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
        {"a": [1, 2], "b": ["x", "y"]},
        {"data": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]},
    ],
    ids=["array-of-objects", "object-of-columns", "data-wrapper"],
)
def test_json_documents_holding_a_table(tmp_path: Path, document: Any) -> None:
    content = json.dumps(document, indent=2).encode()

    table = only(tmp_path, content, "rows.json")

    assert (table.format, table.name, table.encoding) == ("json", "rows", "utf8")
    assert records_of(document, "rows.json") == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]


def test_a_one_line_object_of_columns_is_a_document_not_json_lines(tmp_path: Path) -> None:
    table = only(tmp_path, b'{"a": [1, 2], "b": [3, 4]}\n', "cols.json")

    assert table.format == "json"


@pytest.mark.parametrize("filename", ["events.jsonl", "events.ndjson", "events.json"])
def test_json_lines(tmp_path: Path, filename: str) -> None:
    content = b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n{"a": 3}\n'

    table = only(tmp_path, content, filename)

    assert (table.format, table.name) == ("jsonl", "events")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{\n  "name": "quarry",\n  "version": 2\n}\n',
            "'doc.json' has no table in it: expected an array of objects, an object of "
            "equal-length arrays, or JSON Lines.",
        ),
        (
            b'{"a": [1, 2], "b": [1]}',
            "'doc.json' has no table in it: expected an array of objects, an object of "
            "equal-length arrays, or JSON Lines.",
        ),
        (b"[1, 2, 3]", "'doc.json' must be an array of objects (one object per row)."),
        (b"[]", "'doc.json' is an empty JSON array."),
    ],
    ids=["config-object", "ragged-columns", "array-of-numbers", "empty-array"],
)
def test_json_without_a_table_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    error = refused(tmp_path, content, "doc.json")

    assert (error.status_code, error.message) == (422, message)


def test_invalid_json_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, b'[{"a": 1}, {"a": ', "broken.json")

    assert error.status_code == 422
    assert error.message.startswith("'broken.json' is not valid JSON (")


def test_json_document_over_the_cap_is_413(tmp_path: Path) -> None:
    rows = [{"id": i, "text": "x" * 40} for i in range(30_000)]
    content = json.dumps(rows).encode()
    assert len(content) > MB
    limits = Limits(max_columns=2000, max_json_bytes=MB, zip=LIMITS.zip)

    error = refused(tmp_path, content, "big.json", limits=limits)

    assert (error.status_code, error.code) == (413, "payload_too_large")
    assert error.message == (
        "'big.json' is a single JSON document over 1 MB; upload it as JSON Lines (one "
        "object per line) or CSV instead."
    )


def test_json_lines_are_not_held_to_the_document_cap(tmp_path: Path) -> None:
    content = b"".join(b'{"id": %d, "text": "%s"}\n' % (i, b"x" * 40) for i in range(30_000))
    assert len(content) > MB
    limits = Limits(max_columns=2000, max_json_bytes=MB, zip=LIMITS.zip)

    assert only(tmp_path, content, "big.jsonl", limits=limits).format == "jsonl"


# --- Parquet ----------------------------------------------------------------------------------


def test_parquet_is_recognised_by_its_bytes(tmp_path: Path) -> None:
    content = parquet_bytes(pa.table({"age": [25, 30], "name": ["a", "b"]}))

    table = only(tmp_path, content, "people.parquet")
    # The extension is only a hint: the same bytes named .csv are still Parquet.
    misnamed = only(tmp_path, content, "people.csv")

    assert (table.format, table.name, table.size) == ("parquet", "people", len(content))
    assert misnamed.format == "parquet"


def test_corrupt_parquet_is_refused(tmp_path: Path) -> None:
    content = b"PAR1" + random.Random(2).randbytes(500) + b"PAR1"

    error = refused(tmp_path, content, "broken.parquet")

    assert (error.status_code, error.message) == (422, "The file is not a valid Parquet file.")


def test_parquet_with_too_many_columns_is_refused(tmp_path: Path) -> None:
    content = parquet_bytes(pa.table({f"c{i}": [i] for i in range(30)}))
    limits = Limits(max_columns=20, max_json_bytes=MB, zip=LIMITS.zip)

    error = refused(tmp_path, content, "wide.parquet", limits=limits)

    assert error.message == (
        "The Parquet file has 30 columns; Quarry accepts at most 20 (MAX_DATASET_COLUMNS)."
    )


# --- Excel ------------------------------------------------------------------------------------


def test_xlsx_gives_one_table_per_sheet_with_data(tmp_path: Path) -> None:
    content = xlsx_bytes(
        {
            "Sales": [["region", "amount"], ["north", 10], ["south", 20]],
            "Empty": [],
            "Costs": [["item", None, "item", "cost", None], ["rent", 1, 2, 500]],
        }
    )

    tables = inspect(tmp_path, content, "Budget 2024.xlsx")

    assert [(t.name, t.format, t.sheet_name) for t in tables] == [
        ("Budget 2024 - Sales", "xlsx", "Sales"),
        ("Budget 2024 - Costs", "xlsx", "Costs"),
    ]
    assert tables[0].columns == ["region", "amount"]
    # Trailing empty header cells are dropped, inner blanks named, duplicates numbered.
    assert tables[1].columns == ["item", "column_2", "item_2", "cost"]
    assert {t.sha256 for t in tables} == {hashlib.sha256(content).hexdigest()}


def test_single_sheet_workbook_is_named_after_the_file(tmp_path: Path) -> None:
    content = xlsx_bytes({"Sheet1": [["a", "b"], [1, 2]]})

    table = only(tmp_path, content, "book.xlsx")

    assert (table.name, table.sheet_name) == ("book", "Sheet1")


def test_workbook_with_no_data_is_refused(tmp_path: Path) -> None:
    content = xlsx_bytes({"One": [], "Two": [[None, None]]})

    error = refused(tmp_path, content, "empty.xlsx")

    assert (error.status_code, error.message) == (422, "The workbook has no sheet with data in it.")


def test_sheet_with_too_many_columns_is_refused(tmp_path: Path) -> None:
    content = xlsx_bytes({"Wide": [[f"c{i}" for i in range(30)], list(range(30))]})
    limits = Limits(max_columns=20, max_json_bytes=MB, zip=LIMITS.zip)

    error = refused(tmp_path, content, "wide.xlsx", limits=limits)

    assert error.message == (
        "Sheet 'Wide' has 30 columns; Quarry accepts at most 20 (MAX_DATASET_COLUMNS)."
    )


def test_a_zip_that_is_not_a_workbook_named_xlsx_is_refused(tmp_path: Path) -> None:
    content = zip_bytes([("xl/workbook.xml", b"<nope/>"), ("[Content_Types].xml", b"<x/>")])

    error = refused(tmp_path, content, "fake.xlsx")

    assert error.message == "The workbook cannot be read as an Excel .xlsx file."


def test_a_zip_named_csv_is_refused(tmp_path: Path) -> None:
    content = zip_bytes([("data.csv", CSV)])

    error = refused(tmp_path, content, "data.csv")

    assert (error.status_code, error.message) == (
        422,
        "'data.csv' is a ZIP archive; name it .zip or .xlsx.",
    )


def test_an_ole_file_that_is_not_a_workbook_is_refused(tmp_path: Path) -> None:
    content = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1000)

    error = refused(tmp_path, content, "old.xls")

    assert error.message == "The file cannot be read as an Excel .xls workbook."


# --- ZIP archives -----------------------------------------------------------------------------


def test_zip_gives_one_table_per_data_file_and_skips_junk(tmp_path: Path) -> None:
    content = zip_bytes(
        [
            ("export/", b""),
            ("export/people.csv", b"name;age\nAda;36\n"),
            ("__MACOSX/export/._people.csv", b"\x00\x05\x16\x07 resource fork"),
            ("export/.DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("export/events.jsonl", b'{"a": 1}\n{"a": 2}\n'),
            ("export/book.xlsx", xlsx_bytes({"S1": [["x"], [1]], "S2": [["y"], [2]]})),
        ]
    )

    tables = inspect(tmp_path, content, "export.zip")

    assert [(t.name, t.format, t.archive_member, t.sheet_name) for t in tables] == [
        ("people", "csv", "export/people.csv", None),
        ("events", "jsonl", "export/events.jsonl", None),
        ("book - S1", "xlsx", "export/book.xlsx", "S1"),
        ("book - S2", "xlsx", "export/book.xlsx", "S2"),
    ]
    assert tables[0].columns == ["name", "age"]
    assert tables[0].delimiter == ";"
    # Members are extracted beside the upload under generated names, never their own.
    assert {Path(t.path).parent for t in tables} == {tmp_path}
    assert [Path(t.path).name for t in tables] == [
        "member-1.csv",
        "member-4.jsonl",
        "member-5.xlsx",
        "member-5.xlsx",
    ]
    assert tables[0].sha256 == hashlib.sha256(b"name;age\nAda;36\n").hexdigest()


def test_zip_tables_with_the_same_stem_get_distinct_names(tmp_path: Path) -> None:
    content = zip_bytes([("2023/data.csv", CSV), ("2024/data.csv", CSV), ("data.tsv", CSV)])

    tables = inspect(tmp_path, content, "years.zip")

    assert [t.name for t in tables] == ["data", "data (2)", "data (3)"]


def test_zip_with_one_table_takes_the_given_name(tmp_path: Path) -> None:
    content = zip_bytes([("raw/export_final_v2.csv", CSV)])

    table = only(tmp_path, content, "upload.zip", name="Census")

    assert (table.name, table.archive_member) == ("Census", "raw/export_final_v2.csv")


@pytest.mark.parametrize(
    ("entry", "data"),
    [("inner.zip", zip_bytes([("a.csv", CSV)])), ("inner.csv", zip_bytes([("a.csv", CSV)]))],
    ids=["named-zip", "zip-disguised-as-csv"],
)
def test_nested_zip_is_refused(tmp_path: Path, entry: str, data: bytes) -> None:
    content = zip_bytes([("ok.csv", CSV), (entry, data)])

    error = refused(tmp_path, content, "outer.zip")

    assert (error.status_code, error.message) == (
        422,
        f"'{entry}' is an archive inside the archive; unpack it.",
    )


def test_unsupported_member_is_refused(tmp_path: Path) -> None:
    content = zip_bytes([("ok.csv", CSV), ("docs/readme.pdf", b"%PDF-1.7")])

    error = refused(tmp_path, content, "bundle.zip")

    assert (error.status_code, error.code) == (415, "unsupported_media_type")
    assert error.message.startswith(
        "The archive entry 'docs/readme.pdf' is not a data file (.csv, .json,"
    )
    assert error.message.endswith("); remove it from the ZIP.")


def test_a_bad_member_fails_the_whole_zip(tmp_path: Path) -> None:
    content = zip_bytes([("ok.csv", CSV), ("empty.csv", b"")])

    error = refused(tmp_path, content, "bundle.zip")

    assert (error.status_code, error.message) == (422, "'empty.csv' is empty.")


def test_zip_member_column_limit_applies(tmp_path: Path) -> None:
    limits = Limits(max_columns=2, max_json_bytes=MB, zip=LIMITS.zip)
    content = zip_bytes([("wide.csv", b"a,b,c\n1,2,3\n")])

    error = refused(tmp_path, content, "bundle.zip", limits=limits)

    assert error.message == (
        "'wide.csv' has 3 columns; Quarry accepts at most 2 (MAX_DATASET_COLUMNS)."
    )


# --- shared helpers ---------------------------------------------------------------------------


def test_clean_column_names() -> None:
    assert clean_column_names([" a ", "a", None, "", "a", 3, "x" * 300]) == [
        "a",
        "a_2",
        "column_3",
        "column_4",
        "a_3",
        "3",
        "x" * 255,
    ]


# --- hostile and odd JSON: nesting, width, scalars ----------------------------------------------

DEEP = 100_000


def too_deep(filename: str) -> str:
    return (
        f"'{filename}' holds JSON nested more than 48 levels deep; Quarry reads at most 48. "
        "Flatten the deeply nested values (or store them as text) and upload the file again."
    )


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (b"[" * DEEP + b"]" * DEEP, "arrays.json"),
        (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "objects.json"),
        (b'[{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}]", "in-a-row.json"),
        (b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"\n", "first-line.jsonl"),
        (b'{"a": 1}\n{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}\n", "second-line.jsonl"),
        # more than 1 MB: only its first megabyte is looked at in the request
        (b"[" * (2 * MB) + b"]" * (2 * MB), "big.json"),
    ],
    ids=["arrays", "objects", "in-a-row", "jsonl-first-line", "jsonl-second-line", "big"],
)
def test_deeply_nested_json_is_422_not_a_recursion_error(
    tmp_path: Path, content: bytes, filename: str
) -> None:
    """It used to answer 500 (RecursionError in json.loads)."""
    error = refused(tmp_path, content, filename)

    assert (error.status_code, error.code) == (422, "validation_error")
    assert error.message == too_deep(filename)


def test_nesting_a_table_can_hold_is_accepted(tmp_path: Path) -> None:
    # brackets and braces inside strings, escaped quotes and backslashes are no nesting
    value = {"text": '[[[{{{ "quoted" \\ ]]', "list": json.loads("[" * 40 + "]" * 40)}
    content = json.dumps([value, value]).encode()

    assert only(tmp_path, content, "nested.json").format == "json"
    lines = (json.dumps(value) + "\n").encode() * 3
    assert only(tmp_path, lines, "nested.jsonl").format == "jsonl"


def test_json_with_more_keys_than_columns_allowed_is_422(tmp_path: Path) -> None:
    wide = {f"k{i}": i for i in range(LIMITS.max_columns + 1)}
    message = (
        "'{}' has rows with more than 2000 keys (each becomes a column); Quarry accepts at "
        "most 2000 columns (MAX_DATASET_COLUMNS)."
    )
    for filename, content in (
        ("wide.json", json.dumps([wide]).encode()),
        ("nested.json", json.dumps([{"a": {"b": wide}}]).encode()),
        ("wide.jsonl", (json.dumps({"a": 1}) + "\n" + json.dumps(wide) + "\n").encode()),
    ):
        error = refused(tmp_path, content, filename)
        assert (error.status_code, error.message) == (422, message.format(filename))


@pytest.mark.parametrize(
    ("content", "shown"),
    [(b"null", "null"), (b"1", "1"), (b'"text"', '"text"'), (b"true\n", "true")],
)
def test_a_json_file_of_one_value_says_it_is_no_table(
    tmp_path: Path, content: bytes, shown: str
) -> None:
    """`null` in a .json file used to be read as a CSV "with a header row but no data rows"."""
    error = refused(tmp_path, content, "value.json")

    assert (error.status_code, error.message) == (
        422,
        f"'value.json' holds a single JSON value ({shown}), not a table: expected an array "
        "of objects, an object of equal-length arrays, or JSON Lines (one object per line).",
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a", "'one.csv' has a header row but no data rows."),
        (b"\n", "'one.csv' is empty."),
        (b"\x00", "'one.csv' has a header row but no data rows."),
    ],
    ids=["letter", "newline", "nul"],
)
def test_a_one_byte_file_is_422(tmp_path: Path, content: bytes, message: str) -> None:
    error = refused(tmp_path, content, "one.csv")

    assert (error.status_code, error.message) == (422, message)


def test_a_few_nul_bytes_in_a_text_file_are_data(tmp_path: Path) -> None:
    """A text export with a NUL in a value is still text: the converter keeps the NUL (it
    used to be refused as binary). Names lose theirs: a column name with NUL is useless."""
    content = b"na\x00me,value\nx\x00y,1\nz,2\n"

    table = only(tmp_path, content, "export.csv")

    assert (table.format, table.encoding, table.columns) == ("csv", "utf8", ["name", "value"])
    assert table.extra == {"nul_in_names": True}
