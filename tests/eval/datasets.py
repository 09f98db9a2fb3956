"""The public datasets the evaluation asks about: files shipped inside PyPI packages
(`vega_datasets`' local data, scikit-learn's bundled CSVs), never data written for the test.

`upload(name)` is the file as a user would upload it (its bytes and file name); `frame(name)`
is the same file read with pandas by the evaluation itself, dates parsed, to compute each
question's truth. Quarry reads the upload its own way; the two must agree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


def _vega(file: str) -> Path:
    import vega_datasets

    return Path(vega_datasets.__file__).parent / "_data" / file


def _sklearn(file: str) -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data" / file


@dataclass(frozen=True)
class Source:
    name: str  # how questions refer to it (the dataset's name in Quarry)
    path: Path
    dates: tuple[str, ...] = ()  # columns pandas parses as dates for the truth


SOURCES = {
    s.name: s
    for s in (
        Source("seattle-weather", _vega("seattle-weather.csv"), ("date",)),
        Source("cars", _vega("cars.json"), ("Year",)),
        Source("stocks", _vega("stocks.csv"), ("date",)),
        Source("barley", _vega("barley.json")),
        Source("iowa-electricity", _vega("iowa-electricity.csv"), ("year",)),
        Source("iris", _vega("iris.json")),
        Source("airports", _vega("airports.csv")),
        Source("us-employment", _vega("us-employment.csv"), ("month",)),
        Source("seattle-temps", _vega("seattle-temps.csv"), ("date",)),
        Source("sf-temps", _vega("sf-temps.csv"), ("date",)),
        Source("linnerud_physiological", _sklearn("linnerud_physiological.csv")),
    )
}


def upload(name: str) -> tuple[str, bytes]:
    source = SOURCES[name]
    return f"{name}{source.path.suffix}", source.path.read_bytes()


@functools.cache
def frame(name: str) -> pd.DataFrame:
    source = SOURCES[name]
    if source.path.suffix == ".json":
        data = pd.read_json(source.path, dtype=False)
    elif name == "linnerud_physiological":
        data = pd.read_csv(source.path, sep=r"\s+")
    else:
        data = pd.read_csv(source.path)
    for column in source.dates:
        data[column] = pd.to_datetime(data[column], format="mixed")
    return data
