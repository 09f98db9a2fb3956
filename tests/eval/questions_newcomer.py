"""More evaluation questions, typed the way a newcomer types into a chat box: varied wording,
column names as written or as plain words, filters by a value, a year or a comparison,
rankings with their aggregate stated, follow-ups, and a few questions that are ambiguous or
out of reach of one dataset (truth `None`). Each truth is computed here with pandas from the
original file (see `tests/eval/datasets.py`), and is exactly what the question asks.
"""

from __future__ import annotations

import pandas as pd

from tests.eval.questions import (
    IO,
    A,
    B,
    C,
    Case,
    E,
    R,
    S,
    W,
    _in_year,
    _table,
    a,
    b,
    c,
    e,
    io_,
    ir,
    s,
    w,
)


def _sym(symbol: str) -> pd.DataFrame:
    return s()[s()["symbol"] == symbol]


def _src(source: str) -> pd.DataFrame:
    return io_()[io_()["source"] == source]


CASES_NEWCOMER: list[Case] = [
    # --- seattle-weather
    Case(
        W,
        "what's the average wind speed in 2014?",
        lambda: _in_year(w(), "date", 2014)["wind"].mean(),
    ),
    Case(
        W,
        "and the maximum?",
        lambda: _in_year(w(), "date", 2014)["wind"].max(),
        after="what's the average wind speed in 2014?",
    ),
    Case(
        W,
        "show me the highest temp max for each weather type",
        lambda: _table(w().groupby("weather")["temp_max"].max()),
    ),
    Case(W, "how many fog days are there", lambda: int((w()["weather"] == "fog").sum())),
    Case(
        W,
        "which year had the most total precipitation?",
        lambda: str(w().groupby(w()["date"].dt.year)["precipitation"].sum().idxmax()),
    ),
    Case(
        W,
        "how many days in 2015 had precipitation over 10",
        lambda: int((_in_year(w(), "date", 2015)["precipitation"] > 10).sum()),
    ),
    Case(
        W,
        "is wind correlated with precipitation? give me the correlation",
        lambda: w()["wind"].corr(w()["precipitation"]),
    ),
    Case(
        W,
        "give me the total precipitation for rain days",
        lambda: w()[w()["weather"] == "rain"]["precipitation"].sum(),
    ),
    Case(W, "was 2014 warmer in Seattle than in Portland?", None),
    # --- cars
    Case(C, "what's the average horsepower?", lambda: c()["Horsepower"].mean()),
    Case(
        C,
        "and for cars from Europe only?",
        lambda: c()[c()["Origin"] == "Europe"]["Horsepower"].mean(),
        after="what's the average horsepower?",
    ),
    Case(
        C,
        "how many cars with 4 cylinders are from USA",
        lambda: int(((c()["Cylinders"] == 4) & (c()["Origin"] == "USA")).sum()),
    ),
    Case(
        C,
        "mean acceleration per number of cylinders",
        lambda: _table(c().groupby("Cylinders")["Acceleration"].mean()),
    ),
    Case(C, "which origin has the most cars?", lambda: c()["Origin"].value_counts().idxmax()),
    Case(
        C,
        "max miles per gallon for each origin",
        lambda: _table(c().groupby("Origin")["Miles_per_Gallon"].max()),
    ),
    Case(
        C,
        "show me the average weight of cars from 1980",
        lambda: _in_year(c(), "Year", 1980)["Weight_in_lbs"].mean(),
    ),
    Case(C, "which number of cylinders has the best mpg", None),
    # --- stocks
    Case(S, "what's the average price of IBM?", lambda: _sym("IBM")["price"].mean()),
    Case(
        S,
        "what about MSFT?",
        lambda: _sym("MSFT")["price"].mean(),
        after="what's the average price of IBM?",
    ),
    Case(S, "highest price for each symbol", lambda: _table(s().groupby("symbol")["price"].max())),
    Case(S, "how many records does GOOG have", lambda: len(_sym("GOOG"))),
    Case(
        S,
        "which symbol has the highest maximum price",
        lambda: s().groupby("symbol")["price"].max().idxmax(),
    ),
    Case(
        S,
        "how many times was the price of AMZN below 50",
        lambda: int((_sym("AMZN")["price"] < 50).sum()),
    ),
    Case(
        S,
        "what was the price of AAPL in March 2008",
        lambda: float(
            _sym("AAPL").loc[lambda d: d["date"] == pd.Timestamp("2008-03-01"), "price"].iloc[0]
        ),
    ),
    Case(S, "which stock performed best?", None),
    # --- barley
    Case(
        B,
        "what's the total yield for each variety",
        lambda: _table(b().groupby("variety")["yield"].sum()),
    ),
    Case(
        B,
        "now only for 1932",
        lambda: _table(b()[b()["year"] == 1932].groupby("variety")["yield"].sum()),
        after="what's the total yield for each variety",
    ),
    Case(B, "how many rows are there for Waseca", lambda: int((b()["site"] == "Waseca").sum())),
    Case(B, "mean yield per year", lambda: _table(b().groupby("year")["yield"].mean())),
    Case(
        B,
        "which variety has the highest total yield?",
        lambda: b().groupby("variety")["yield"].sum().idxmax(),
    ),
    Case(
        B,
        "average yield at Duluth in 1932",
        lambda: b()[(b()["site"] == "Duluth") & (b()["year"] == 1932)]["yield"].mean(),
    ),
    Case(B, "top 3 sites by yield", None),
    # --- iowa-electricity
    Case(
        IO,
        "what's the average net generation for Nuclear Energy?",
        lambda: _src("Nuclear Energy")["net_generation"].mean(),
    ),
    Case(
        IO,
        "show me net generation for each source in 2010",
        lambda: _table(_in_year(io_(), "year", 2010).groupby("source")["net_generation"].sum()),
    ),
    Case(
        IO,
        "which year had the highest total net generation?",
        lambda: str(io_().groupby(io_()["year"].dt.year)["net_generation"].sum().idxmax()),
    ),
    Case(
        IO,
        "how many years did Renewables have net_generation above 10000",
        lambda: int((_src("Renewables")["net_generation"] > 10000).sum()),
    ),
    Case(
        IO,
        "max net_generation of Fossil Fuels",
        lambda: _src("Fossil Fuels")["net_generation"].max(),
    ),
    Case(
        IO,
        "and the minimum?",
        lambda: _src("Fossil Fuels")["net_generation"].min(),
        after="max net_generation of Fossil Fuels",
    ),
    Case(IO, "how did electricity prices in Iowa change over time?", None),
    # --- iris
    Case(R, "what's the mean sepal width?", lambda: ir()["sepalWidth"].mean()),
    Case(
        R,
        "now for setosa only",
        lambda: ir()[ir()["species"] == "setosa"]["sepalWidth"].mean(),
        after="what's the mean sepal width?",
    ),
    Case(R, "how many virginica are there", lambda: int((ir()["species"] == "virginica").sum())),
    Case(
        R,
        "which species has the smallest average petal width",
        lambda: ir().groupby("species")["petalWidth"].mean().idxmin(),
    ),
    Case(
        R,
        "how many flowers have sepal width under 3",
        lambda: int((ir()["sepalWidth"] < 3).sum()),
    ),
    Case(
        R,
        "correlation between sepal length and petal length",
        lambda: ir()["sepalLength"].corr(ir()["petalLength"]),
    ),
    Case(R, "which species has the biggest flowers?", None),
    # --- airports
    Case(A, "count the airports in FL", lambda: int((a()["state"] == "FL").sum())),
    Case(
        A,
        "what about AK?",
        lambda: int((a()["state"] == "AK").sum()),
        after="count the airports in FL",
    ),
    Case(A, "which city has the most airports?", lambda: a()["city"].value_counts().idxmax()),
    Case(
        A,
        "mean longitude for each country",
        lambda: _table(a().groupby("country")["longitude"].mean()),
    ),
    Case(A, "how many airports are not in the USA", lambda: int((a()["country"] != "USA").sum())),
    Case(
        A,
        "top 5 states by number of airports",
        lambda: _table(a()["state"].value_counts().head(5)),
    ),
    Case(A, "which airport is the busiest?", None),
    # --- us-employment
    Case(
        E,
        "total nonfarm_change for each year",
        lambda: _table(e().groupby(e()["month"].dt.year)["nonfarm_change"].sum()),
    ),
    Case(
        E,
        "mean leisure and hospitality in 2010",
        lambda: _in_year(e(), "month", 2010)["leisure_and_hospitality"].mean(),
    ),
    Case(
        E,
        "and in 2015?",
        lambda: _in_year(e(), "month", 2015)["leisure_and_hospitality"].mean(),
        after="mean leisure and hospitality in 2010",
    ),
    Case(E, "what was the lowest nonfarm change", lambda: e()["nonfarm_change"].min()),
    Case(
        E,
        "how many months had a negative nonfarm change?",
        lambda: int((e()["nonfarm_change"] < 0).sum()),
    ),
    Case(
        E,
        "correlation between private and government",
        lambda: e()["private"].corr(e()["government"]),
    ),
    Case(E, "what's the average unemployment rate?", None),
]
