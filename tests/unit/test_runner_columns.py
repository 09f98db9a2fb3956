"""Loading only the columns a snippet reads (runner/data.py): a snippet that touches two
columns of a wide dataset converts two columns — and never gets a narrowed frame where it
needs the whole one. (`runner.data` installs nothing process-wide, so it is imported here.)"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from runner.data import read_frame, used_columns


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("df['a'].mean()", {"df": ["a"]}),
        ("df[['b', 'a']].describe()\ndf['c'].max()", {"df": ["a", "b", "c"]}),
        ("def f():\n    return df['q'].sum()\nf()", {"df": ["q"]}),
        ("other['x'].sum()", {}),  # df is not used at all: nothing to load
    ],
)
def test_reads_through_constant_column_keys_are_narrowed(
    code: str, expected: dict[str, list[str]]
) -> None:
    assert used_columns(code, ["df"]) == expected


@pytest.mark.parametrize(
    "code",
    [
        "df.groupby('a')['b'].mean()",  # a method of the whole frame
        "df['a'] = 1",  # a write: the frame is kept whole
        "df['a'] += 1",
        "df['a'].mean()\nlen(df)",  # passed along somewhere
        "x = df['a']\ny = df",
        "col = 'a'\ndf[col]",  # a key only known at run time
        "df[df['a'] > 1]",  # a mask: all columns
        "df.loc[:, 'a']",
        "del df",
        "df['a'",  # does not parse: no guess
    ],
)
def test_any_other_use_loads_the_whole_frame(code: str) -> None:
    assert used_columns(code, ["df"]) == {}


@pytest.fixture
def wide(tmp_path: Path) -> dict[str, Path]:
    table = pa.table({"a": [1, 2, 3], "b": [4.0, 5.0, 6.0], "c": ["x", "y", "z"]})
    paths = {fmt: tmp_path / f"wide.{fmt}" for fmt in ("arrow", "parquet", "csv")}
    feather.write_feather(table, str(paths["arrow"]), compression="uncompressed")
    pq.write_table(table, paths["parquet"])
    pacsv.write_csv(table, paths["csv"])
    return paths


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "csv"])
def test_a_narrowed_read_holds_only_those_columns(wide: dict[str, Path], fmt: str) -> None:
    frame = read_frame(str(wide[fmt]), fmt, ["c", "a"])
    assert list(frame.columns) == ["c", "a"]
    assert frame["a"].tolist() == [1, 2, 3]
    assert list(read_frame(str(wide[fmt]), fmt).columns) == ["a", "b", "c"]


def test_a_column_that_does_not_exist_gets_the_whole_frame(wide: dict[str, Path]) -> None:
    """So that `df['nope']` fails with pandas' own KeyError, listing nothing hidden."""
    frame = read_frame(str(wide["arrow"]), "arrow", ["a", "nope"])
    assert list(frame.columns) == ["a", "b", "c"]
