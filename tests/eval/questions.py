"""The evaluation's questions, over the public datasets of `tests/eval/datasets.py`, each with
its truth computed here with pandas from the original file.

A truth is a number, a label (str), a table (dict: row label -> number, every row checked),
a set of labels (all must be named), a tuple of numbers (all must appear), or `None`: the
question is ambiguous or out of reach, and the right reply asks or says it cannot (an
answer to it counts as wrong). `after` is an earlier question of the same conversation
(a follow-up). Phrasings are a newcomer's: column names as written and as words, values
as they appear in the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tests.eval.datasets import frame


@dataclass(frozen=True)
class Case:
    dataset: str
    question: str
    truth: Callable[[], Any] | None
    after: str | None = None
    subset: bool = False  # also run in `make test`

    @property
    def key(self) -> str:
        return f"{self.dataset}: {self.question}" + (
            f" (after: {self.after})" if self.after else ""
        )


def _d(name: str) -> pd.DataFrame:
    return frame(name)


def _table(series: pd.Series, keys: Callable[[Any], str] = str) -> dict[str, float]:
    return {keys(k): float(v) for k, v in series.items()}


def _year(series: pd.Series) -> pd.Series:
    return series.dt.year


def _month(series: pd.Series) -> pd.Series:
    return series.dt.to_period("M").astype(str)


def _share(series: pd.Series) -> dict[str, float]:
    return _table((series / series.sum() * 100).round(2))


W, C, S, B, IO, R, A, E, L = (
    "seattle-weather",
    "cars",
    "stocks",
    "barley",
    "iowa-electricity",
    "iris",
    "airports",
    "us-employment",
    "linnerud_physiological",
)


def w() -> pd.DataFrame:
    return _d(W)


def c() -> pd.DataFrame:
    return _d(C)


def s() -> pd.DataFrame:
    return _d(S)


def b() -> pd.DataFrame:
    return _d(B)


def io_() -> pd.DataFrame:
    return _d(IO)


def ir() -> pd.DataFrame:
    return _d(R)


def a() -> pd.DataFrame:
    return _d(A)


def e() -> pd.DataFrame:
    return _d(E)


def li() -> pd.DataFrame:
    return _d(L)


TEMPS = "seattle-temps+sf-temps"  # a session holding both (hourly temperatures of 2010)


def temps() -> pd.DataFrame:
    """The two joined on their date (its text differs: seconds in one file, not the other)."""
    return _d("seattle-temps").merge(
        _d("sf-temps"), on="date", suffixes=(" (seattle-temps)", " (sf-temps)")
    )


def _in_year(df: pd.DataFrame, column: str, year: int) -> pd.DataFrame:
    return df[df[column].dt.year == year]


CASES: list[Case] = [
    # --- seattle-weather: date (text in the file), precipitation, temp_max, temp_min, wind, weather
    Case(W, "How many rows does seattle-weather have?", lambda: len(w()), subset=True),
    Case(
        W, "How many rows per weather?", lambda: _table(w()["weather"].value_counts()), subset=True
    ),
    Case(W, "Which columns have missing values?", lambda: "none", subset=True),
    Case(W, "average temp_max", lambda: w()["temp_max"].mean()),
    Case(
        W, "average temp_max by weather", lambda: _table(w().groupby("weather")["temp_max"].mean())
    ),
    Case(
        W,
        "average temp_max by weather for 2012",
        lambda: _table(_in_year(w(), "date", 2012).groupby("weather")["temp_max"].mean()),
        subset=True,
    ),
    Case(W, "average temp_max in 2013", lambda: _in_year(w(), "date", 2013)["temp_max"].mean()),
    Case(
        W, "total precipitation in 2014", lambda: _in_year(w(), "date", 2014)["precipitation"].sum()
    ),
    Case(
        W,
        "total precipitation per year",
        lambda: _table(w().groupby(_year(w()["date"]))["precipitation"].sum()),
    ),
    Case(
        W,
        "average wind by month",
        lambda: _table(w().groupby(_month(w()["date"]))["wind"].mean()),
    ),
    Case(W, "what is the most common weather", lambda: w()["weather"].value_counts().idxmax()),
    Case(
        W,
        "which weather has the highest average wind",
        lambda: w().groupby("weather")["wind"].mean().idxmax(),
        subset=True,
    ),
    Case(
        W,
        "which weather has the lowest average temp_min",
        lambda: w().groupby("weather")["temp_min"].mean().idxmin(),
    ),
    Case(
        W,
        "how many days had rain in 2013",
        lambda: int((_in_year(w(), "date", 2013)["weather"] == "rain").sum()),
    ),
    Case(
        W, "how many rows where temp_max is more than 30", lambda: int((w()["temp_max"] > 30).sum())
    ),
    Case(
        W,
        "how many rows with precipitation above 20",
        lambda: int((w()["precipitation"] > 20).sum()),
    ),
    Case(W, "maximum temp_max", lambda: w()["temp_max"].max()),
    Case(W, "minimum temp_min", lambda: w()["temp_min"].min()),
    Case(W, "median wind", lambda: w()["wind"].median()),
    Case(W, "standard deviation of temp_max", lambda: w()["temp_max"].std()),
    Case(
        W,
        "correlation between temp_max and temp_min",
        lambda: w()["temp_max"].corr(w()["temp_min"]),
        subset=True,
    ),
    Case(
        W,
        "average precipitation in July",
        lambda: w()[w()["date"].dt.month == 7]["precipitation"].mean(),
    ),
    Case(
        W,
        "average temp_max in January 2015",
        lambda: w()[(w()["date"].dt.month == 1) & (w()["date"].dt.year == 2015)]["temp_max"].mean(),
    ),
    Case(
        W,
        "how many rows between 2013 and 2014",
        lambda: int(w()["date"].dt.year.between(2013, 2014).sum()),
    ),
    Case(W, "share of rows per weather", lambda: _share(w()["weather"].value_counts())),
    Case(
        W,
        "compare the average temp_max of rain and sun",
        lambda: _table(
            w()[w()["weather"].isin(["rain", "sun"])].groupby("weather")["temp_max"].mean()
        ),
    ),
    Case(
        W,
        "top 3 rows by precipitation",
        lambda: tuple(w()["precipitation"].nlargest(3)),
    ),
    Case(
        W,
        "average temp_max by weather where wind is more than 5",
        lambda: _table(w()[w()["wind"] > 5].groupby("weather")["temp_max"].mean()),
    ),
    Case(W, "number of distinct weather values", lambda: w()["weather"].nunique()),
    Case(
        W,
        "average temp_max per year",
        lambda: _table(w().groupby(_year(w()["date"]))["temp_max"].mean()),
    ),
    Case(
        W,
        "max temperature in july",
        lambda: w()[w()["date"].dt.month == 7]["temp_max"].max(),
    ),
    Case(W, "how many rainy days", lambda: int((w()["weather"] == "rain").sum())),
    Case(
        W,
        "now only for 2012",
        lambda: _table(_in_year(w(), "date", 2012).groupby("weather")["temp_max"].mean()),
        after="average temp_max by weather",
        subset=True,
    ),
    Case(
        W,
        "and the median?",
        lambda: _in_year(w(), "date", 2013)["wind"].median(),
        after="average wind in 2013",
    ),
    Case(
        W,
        "by month instead",
        lambda: _table(w().groupby(_month(w()["date"]))["precipitation"].sum()),
        after="total precipitation per year",
    ),
    Case(
        W,
        "how many days with weather sun in 2012",
        lambda: int((_in_year(w(), "date", 2012)["weather"] == "sun").sum()),
    ),
    Case(W, "average by weather", None),
    Case(W, "average temperature by weather", None),
    Case(W, "write me a poem about rain", None),
    # --- cars: Name, Miles_per_Gallon, Cylinders, Displacement, Horsepower, Weight_in_lbs,
    # Acceleration, Year (a date), Origin
    Case(C, "how many cars from Japan", lambda: int((c()["Origin"] == "Japan").sum()), subset=True),
    Case(
        C,
        "average Miles_per_Gallon by Origin",
        lambda: _table(c().groupby("Origin")["Miles_per_Gallon"].mean()),
    ),
    Case(
        C,
        "average mpg by origin",
        lambda: _table(c().groupby("Origin")["Miles_per_Gallon"].mean()),
        subset=True,
    ),
    Case(
        C,
        "which Origin has the highest average Horsepower",
        lambda: c().groupby("Origin")["Horsepower"].mean().idxmax(),
    ),
    Case(C, "how many cars per Origin", lambda: _table(c()["Origin"].value_counts())),
    Case(C, "top 5 Name by Miles_per_Gallon", None, subset=True),
    Case(
        C,
        "top 5 Name by average Miles_per_Gallon",
        lambda: _table(c().groupby("Name")["Miles_per_Gallon"].mean().nlargest(5)),
    ),
    Case(
        C,
        "average horsepower of cars with more than 6 cylinders",
        lambda: c()[c()["Cylinders"] > 6]["Horsepower"].mean(),
        subset=True,
    ),
    Case(C, "how many cars have 8 cylinders", lambda: int((c()["Cylinders"] == 8).sum())),
    Case(
        C,
        "correlation between horsepower and weight",
        lambda: c()["Horsepower"].corr(c()["Weight_in_lbs"]),
    ),
    Case(
        C,
        "average weight by cylinders",
        lambda: _table(c().groupby("Cylinders")["Weight_in_lbs"].mean()),
    ),
    Case(C, "which columns have missing values", lambda: {"Miles_per_Gallon", "Horsepower"}),
    Case(C, "how many cars in 1975", lambda: int((c()["Year"].dt.year == 1975).sum())),
    Case(
        C,
        "average Acceleration for Europe",
        lambda: c()[c()["Origin"] == "Europe"]["Acceleration"].mean(),
    ),
    Case(C, "maximum Displacement", lambda: c()["Displacement"].max()),
    Case(
        C,
        "median Weight_in_lbs by Origin",
        lambda: _table(c().groupby("Origin")["Weight_in_lbs"].median()),
    ),
    Case(C, "number of distinct Name values", lambda: c()["Name"].nunique()),
    Case(C, "the 3 cars with the highest horsepower", lambda: tuple(c()["Horsepower"].nlargest(3))),
    Case(
        C,
        "average mpg per year",
        lambda: _table(c().groupby(_year(c()["Year"]))["Miles_per_Gallon"].mean()),
    ),
    Case(C, "share of cars by origin", lambda: _share(c()["Origin"].value_counts())),
    Case(
        C,
        "compare the average weight of USA and Japan",
        lambda: _table(
            c()[c()["Origin"].isin(["USA", "Japan"])].groupby("Origin")["Weight_in_lbs"].mean()
        ),
    ),
    Case(
        C, "how many cars with horsepower above 150", lambda: int((c()["Horsepower"] > 150).sum())
    ),
    Case(
        C,
        "average mpg for cars with weight below 2500",
        lambda: c()[c()["Weight_in_lbs"] < 2500]["Miles_per_Gallon"].mean(),
    ),
    Case(
        C,
        "average mpg between 1975 and 1980",
        lambda: c()[c()["Year"].dt.year.between(1975, 1980)]["Miles_per_Gallon"].mean(),
    ),
    Case(C, "distribution of Origin", lambda: _table(c()["Origin"].value_counts())),
    Case(C, "what are the distinct values of Origin", lambda: {"USA", "Europe", "Japan"}),
    Case(
        C,
        "minimum acceleration by origin",
        lambda: _table(c().groupby("Origin")["Acceleration"].min()),
    ),
    Case(
        C,
        "how many cars from Europe with more than 4 cylinders",
        lambda: int(((c()["Origin"] == "Europe") & (c()["Cylinders"] > 4)).sum()),
    ),
    Case(C, "standard deviation of mpg", lambda: c()["Miles_per_Gallon"].std()),
    Case(C, "total weight", lambda: c()["Weight_in_lbs"].sum()),
    Case(
        C,
        "and the median?",
        lambda: _table(c().groupby("Origin")["Miles_per_Gallon"].median()),
        after="average mpg by origin",
    ),
    Case(
        C,
        "what about Europe",
        lambda: int((c()["Origin"] == "Europe").sum()),
        after="how many cars from Japan",
    ),
    Case(
        C,
        "average mpg of japanese cars",
        lambda: c()[c()["Origin"] == "Japan"]["Miles_per_Gallon"].mean(),
    ),
    Case(C, "top 3 Origin by Horsepower", None),
    Case(C, "which is the best car", None),
    Case(
        C,
        "how many cars have more than 20 mpg and are from Japan",
        lambda: int(((c()["Miles_per_Gallon"] > 20) & (c()["Origin"] == "Japan")).sum()),
    ),
    Case(
        C,
        "average horsepower by origin for cars with 4 cylinders",
        lambda: _table(c()[c()["Cylinders"] == 4].groupby("Origin")["Horsepower"].mean()),
    ),
    Case(C, "join the two datasets by year and compare mpg", None),
    # --- stocks: symbol, date (text: "Jan 1 2000"), price
    Case(
        S,
        "which symbol had the highest average price?",
        lambda: s().groupby("symbol")["price"].mean().idxmax(),
        subset=True,
    ),
    Case(S, "average price by symbol", lambda: _table(s().groupby("symbol")["price"].mean())),
    Case(
        S,
        "average price by symbol for 2008",
        lambda: _table(_in_year(s(), "date", 2008).groupby("symbol")["price"].mean()),
    ),
    Case(S, "maximum price of AAPL", lambda: s()[s()["symbol"] == "AAPL"]["price"].max()),
    Case(S, "how many rows per symbol", lambda: _table(s()["symbol"].value_counts())),
    Case(
        S,
        "average price of MSFT in 2005",
        lambda: _in_year(s(), "date", 2005).query("symbol == 'MSFT'")["price"].mean(),
    ),
    Case(
        S,
        "compare the average price of MSFT and IBM",
        lambda: _table(s()[s()["symbol"].isin(["MSFT", "IBM"])].groupby("symbol")["price"].mean()),
    ),
    Case(
        S,
        "average price by month",
        lambda: _table(s().groupby(_month(s()["date"]))["price"].mean()),
    ),
    Case(
        S,
        "average price per year",
        lambda: _table(s().groupby(_year(s()["date"]))["price"].mean()),
        subset=True,
    ),
    Case(
        S,
        "average price of GOOG per year",
        lambda: _table(s()[s()["symbol"] == "GOOG"].groupby(_year(s()["date"]))["price"].mean()),
    ),
    Case(S, "lowest price of AMZN", lambda: s()[s()["symbol"] == "AMZN"]["price"].min()),
    Case(S, "how many rows where price is above 100", lambda: int((s()["price"] > 100).sum())),
    Case(S, "median price by symbol", lambda: _table(s().groupby("symbol")["price"].median())),
    Case(
        S,
        "which symbol has the lowest average price",
        lambda: s().groupby("symbol")["price"].mean().idxmin(),
    ),
    Case(
        S,
        "now only for 2009",
        lambda: _table(_in_year(s(), "date", 2009).groupby("symbol")["price"].mean()),
        after="average price by symbol",
    ),
    Case(
        S,
        "as a bar chart",
        lambda: _table(s()[s()["symbol"] == "MSFT"].groupby(_year(s()["date"]))["price"].mean()),
        after="average price of MSFT per year",
    ),
    Case(S, "average price since 2008", lambda: s()[s()["date"].dt.year >= 2008]["price"].mean()),
    Case(S, "average price before 2003", lambda: s()[s()["date"].dt.year < 2003]["price"].mean()),
    Case(
        S,
        "standard deviation of price by symbol",
        lambda: _table(s().groupby("symbol")["price"].std()),
    ),
    Case(S, "price by symbol", None),
    Case(S, "predict the price of AAPL next year", None),
    # --- barley: yield, variety, year (a number), site
    Case(B, "average yield by site", lambda: _table(b().groupby("site")["yield"].mean())),
    Case(B, "average yield by variety", lambda: _table(b().groupby("variety")["yield"].mean())),
    Case(
        B,
        "which site has the highest average yield",
        lambda: b().groupby("site")["yield"].mean().idxmax(),
        subset=True,
    ),
    Case(B, "total yield by year", lambda: _table(b().groupby("year")["yield"].sum())),
    Case(B, "average yield in 1932", lambda: b()[b()["year"] == 1932]["yield"].mean()),
    Case(B, "how many rows per variety", lambda: _table(b()["variety"].value_counts())),
    Case(
        B, "average yield for Manchuria", lambda: b()[b()["variety"] == "Manchuria"]["yield"].mean()
    ),
    Case(
        B,
        "compare the average yield of Morris and Crookston",
        lambda: _table(
            b()[b()["site"].isin(["Morris", "Crookston"])].groupby("site")["yield"].mean()
        ),
    ),
    Case(
        B,
        "which variety has the lowest average yield",
        lambda: b().groupby("variety")["yield"].mean().idxmin(),
    ),
    Case(B, "median yield", lambda: b()["yield"].median()),
    Case(
        B,
        "average yield by site for 1931",
        lambda: _table(b()[b()["year"] == 1931].groupby("site")["yield"].mean()),
    ),
    Case(B, "number of distinct variety values", lambda: b()["variety"].nunique()),
    Case(B, "maximum yield by site", lambda: _table(b().groupby("site")["yield"].max())),
    # --- iowa-electricity: year (a date), source, net_generation
    Case(
        IO,
        "total net_generation by source",
        lambda: _table(io_().groupby("source")["net_generation"].sum()),
    ),
    Case(
        IO,
        "average net generation by source",
        lambda: _table(io_().groupby("source")["net_generation"].mean()),
    ),
    Case(
        IO,
        "total net_generation per year",
        lambda: _table(io_().groupby(_year(io_()["year"]))["net_generation"].sum()),
    ),
    Case(
        IO,
        "which source has the highest total net_generation",
        lambda: io_().groupby("source")["net_generation"].sum().idxmax(),
    ),
    Case(
        IO,
        "total net_generation in 2015",
        lambda: _in_year(io_(), "year", 2015)["net_generation"].sum(),
    ),
    Case(
        IO,
        "share of net_generation by source",
        lambda: _share(io_().groupby("source")["net_generation"].sum()),
    ),
    Case(
        IO,
        "total net_generation for Renewables by year",
        lambda: _table(
            io_()[io_()["source"] == "Renewables"]
            .groupby(_year(io_()["year"]))["net_generation"]
            .sum()
        ),
    ),
    # --- iris: sepalLength, sepalWidth, petalLength, petalWidth, species
    Case(
        R,
        "average petalLength by species",
        lambda: _table(ir().groupby("species")["petalLength"].mean()),
    ),
    Case(
        R,
        "average petal length by species",
        lambda: _table(ir().groupby("species")["petalLength"].mean()),
        subset=True,
    ),
    Case(R, "how many rows per species", lambda: _table(ir()["species"].value_counts())),
    Case(
        R,
        "which species has the largest average sepal width",
        lambda: ir().groupby("species")["sepalWidth"].mean().idxmax(),
    ),
    Case(
        R,
        "correlation between petal length and petal width",
        lambda: ir()["petalLength"].corr(ir()["petalWidth"]),
    ),
    Case(
        R,
        "maximum sepalLength for setosa",
        lambda: ir()[ir()["species"] == "setosa"]["sepalLength"].max(),
    ),
    Case(
        R,
        "how many flowers have petal length above 5",
        lambda: int((ir()["petalLength"] > 5).sum()),
    ),
    Case(
        R,
        "how many rows where petalLength is above 5",
        lambda: int((ir()["petalLength"] > 5).sum()),
    ),
    Case(
        R,
        "average sepal length of versicolor",
        lambda: ir()[ir()["species"] == "versicolor"]["sepalLength"].mean(),
    ),
    Case(
        R,
        "median petalWidth by species",
        lambda: _table(ir().groupby("species")["petalWidth"].median()),
    ),
    Case(R, "average petal size by species", None),
    # --- airports: iata, name, city, state, country, latitude, longitude
    Case(A, "how many airports per country", lambda: _table(a()["country"].value_counts())),
    Case(A, "which state has the most airports", lambda: a()["state"].value_counts().idxmax()),
    Case(A, "how many airports in TX", lambda: int((a()["state"] == "TX").sum())),
    Case(
        A, "average latitude by country", lambda: _table(a().groupby("country")["latitude"].mean())
    ),
    Case(A, "how many distinct state values", lambda: a()["state"].nunique()),
    Case(A, "which columns have missing values", lambda: set(a().columns[a().isna().any()])),
    Case(
        A, "how many airports where latitude is above 60", lambda: int((a()["latitude"] > 60).sum())
    ),
    Case(A, "the 5 most common cities", lambda: _table(a()["city"].value_counts().head(5))),
    # --- us-employment: month (a date), nonfarm and 22 other series
    Case(
        E,
        "average nonfarm per year",
        lambda: _table(e().groupby(_year(e()["month"]))["nonfarm"].mean()),
    ),
    Case(
        E, "total construction in 2008", lambda: _in_year(e(), "month", 2008)["construction"].sum()
    ),
    Case(E, "maximum manufacturing", lambda: e()["manufacturing"].max()),
    Case(
        E,
        "correlation between construction and manufacturing",
        lambda: e()["construction"].corr(e()["manufacturing"]),
    ),
    Case(
        E,
        "average government by year",
        lambda: _table(e().groupby(_year(e()["month"]))["government"].mean()),
    ),
    Case(
        E,
        "average nonfarm_change in 2009",
        lambda: _in_year(e(), "month", 2009)["nonfarm_change"].mean(),
    ),
    Case(E, "minimum retail_trade", lambda: e()["retail_trade"].min()),
    # --- linnerud (scikit-learn's bundled physiological measurements): Weight, Waist, Pulse
    Case(L, "average Pulse", lambda: li()["Pulse"].mean()),
    Case(L, "correlation between Weight and Waist", lambda: li()["Weight"].corr(li()["Waist"])),
    Case(L, "maximum Weight", lambda: li()["Weight"].max()),
    Case(L, "how many rows where Pulse is above 60", lambda: int((li()["Pulse"] > 60).sum())),
    # --- two datasets in one session: joined on the column they share
    Case(
        TEMPS,
        "correlation between temp of seattle-temps and temp of sf-temps",
        lambda: temps()["temp (seattle-temps)"].corr(temps()["temp (sf-temps)"]),
        subset=True,
    ),
    Case(
        TEMPS,
        "average temp of sf-temps where temp of seattle-temps is above 70",
        lambda: temps()[temps()["temp (seattle-temps)"] > 70]["temp (sf-temps)"].mean(),
    ),
    Case(
        TEMPS,
        "maximum temp of seattle-temps when sf-temps temp is below 50",
        lambda: temps()[temps()["temp (sf-temps)"] < 50]["temp (seattle-temps)"].max(),
    ),
    Case(
        TEMPS,
        "average temp of sf-temps by month where temp of seattle-temps is below 40",
        lambda: _table(
            (t := temps()[temps()["temp (seattle-temps)"] < 40])
            .groupby(_month(t["date"]))["temp (sf-temps)"]
            .mean()
        ),
    ),
    Case(
        TEMPS,
        "join the two datasets on date and count the rows",
        lambda: len(temps()),
    ),
    Case(
        TEMPS,
        "correlation between seattle-temps's temp and sf-temps's temp in July",
        lambda: (t := temps()[temps()["date"].dt.month == 7])["temp (seattle-temps)"].corr(
            t["temp (sf-temps)"]
        ),
    ),
    Case(
        TEMPS,
        "average temp of seattle-temps in January",
        lambda: (t := _d("seattle-temps"))[t["date"].dt.month == 1]["temp"].mean(),
    ),
    Case(TEMPS, "how many rows does sf-temps have", lambda: len(_d("sf-temps"))),
    Case(TEMPS, "average temp", None),  # both have temp: which?
    Case(f"{C}+{W}", "average Horsepower by weather", None),  # nothing to join them on
]
